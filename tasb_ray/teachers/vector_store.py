"""Teacher vectors looked up by id a batch at a time: in RAM (:class:`VectorTable`) or memory-mapped from ``.npy``
files (:class:`MappedVectors`), so an in-batch teacher never holds the corpus's vectors.

The bi-encoder teacher scores a training batch with the vectors of its 32 queries and 64 passages. Held in RAM, the
vectors of MS MARCO's 8,841,823 passages are 13.5 GB at 384 float32 dimensions (27 GB at 768); memory-mapped, a
batch reads its own rows and the page cache holds what was read, shared by every process that maps the file (Ray
actors included) and given back under memory pressure.

Files of one kind (``passage`` or ``query``) in a directory (the ``teacher-vectors`` stage's)::

    <kind>.<dtype>.npy   [N, dim] float32 or float16, row i the vector of the table's row i (corpus / query order)
    <kind>.keys.npy      [N] the ids, UTF-8, fixed-width bytes (``S<w>``), sorted
    <kind>.rows.npy      [N] int64: the row of each sorted id

An id is found by binary search in the sorted keys (``np.searchsorted`` on the memory map: ~log2(N) pages per id),
which gives its row: no dict or hash index of N Python strings (~700 MB for MS MARCO's ids). Every file is written
under a temporary name and renamed when complete (:func:`tasb_ray.fileio.atomic_path`), so a file under its final
name is whole; :func:`open_npy` still checks each file's header and size, and names the file it cannot use.

The stored dtype is ``float32`` (the encoder's output, exactly) or ``float16`` (half the file; a score then differs
from float32's by at most ~4 * 2^-11 * |q| * |p|, the rounding of both vectors; see :func:`write_matrix`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.fileio import atomic_path

VECTOR_DTYPES = ("float32", "float16")
DEFAULT_VECTOR_DTYPE = "float32"  # the encoder's output as it is: scores of existing runs stay bit-identical
KINDS = ("query", "passage")
FLOAT16_MAX = float(np.finfo(np.float16).max)
NPY_MAGIC = b"\x93NUMPY"
REBUILD = "delete it to rebuild it from the stage's Parquet"


def check_vector_dtype(dtype: str) -> str:
    """The one check of a vector dtype, for configs (``teachers.vector_dtype``) and library callers alike."""
    if dtype not in VECTOR_DTYPES:
        raise ConfigError(f"vector_dtype: must be one of {', '.join(VECTOR_DTYPES)}, got {dtype!r}")
    return dtype


def vector_paths(directory: str | os.PathLike, kind: str, dtype: str) -> tuple[Path, Path, Path]:
    """``(matrix, keys, rows)`` paths of ``kind``'s vector files stored as ``dtype`` in ``directory``."""
    if kind not in KINDS:
        raise TasbRayError(f"kind must be 'query' or 'passage', got {kind!r}")
    d = Path(directory)
    return d / f"{kind}.{check_vector_dtype(dtype)}.npy", d / f"{kind}.keys.npy", d / f"{kind}.rows.npy"


# --- writing -----------------------------------------------------------------------------------------------------


def write_matrix(path: str | os.PathLike, n: int, dim: int, dtype: str, chunks: Iterable[np.ndarray]) -> None:
    """Stream ``chunks`` (float ``[rows, dim]``, in row order, ``n`` rows in all) into a ``[n, dim]`` ``.npy``.

    Written a chunk at a time after an ``.npy`` header (:func:`np.lib.format.write_array_header_1_0`, as
    ``np.save`` writes it) under a temporary name, renamed once complete. Not through
    :func:`np.lib.format.open_memmap`: every page written through a mapping stays in the writer's RSS until it is
    unmapped, so converting MS MARCO's 6.8 GB file would show a 6.8 GB process (measured: 849 MiB peak RSS for a
    768 MB file that way, 175 MiB this way). float16 rounds to nearest (relative error <= 2^-11 per component); a
    value beyond float16's range (65504) is an error rather than an ``inf``.

    Raises:
        TasbRayError: the chunks hold more or fewer than ``n`` rows, another width, or values float16 cannot hold.
    """
    dt = np.dtype(check_vector_dtype(dtype))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                                                 "shape": (n, dim)})
        at = 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 2 or chunk.shape[1] != dim or at + len(chunk) > n:
                raise TasbRayError(f"{path}: chunk of shape {chunk.shape} at row {at} does not fit [{n}, {dim}]")
            if dt == np.float16 and len(chunk) and float(np.abs(chunk).max()) > FLOAT16_MAX:
                raise TasbRayError(f"{path}: a vector component beyond float16's range ({FLOAT16_MAX:g}) in rows "
                                   f"{at}..{at + len(chunk) - 1}; use vector_dtype float32")
            f.write(np.ascontiguousarray(chunk, dtype=dt).data)
            at += len(chunk)
        if at != n:
            raise TasbRayError(f"{path}: {at} rows written, {n} expected")


def write_keys(keys_path: str | os.PathLike, rows_path: str | os.PathLike, ids: pa.Array | pa.ChunkedArray,
               chunk: int = 1 << 18) -> None:
    """The sorted-id files of ``ids`` (row i the id of the table's row i), each written atomically.

    Raises:
        TasbRayError: an id is empty or appears more than once (naming it).
    """
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    raw = pc.cast(ids, pa.binary())
    n = len(raw)
    lengths = pc.binary_length(raw)
    width = int(pc.max(lengths).as_py() or 1) if n else 1
    if n and int(pc.min(lengths).as_py()) == 0:
        raise TasbRayError(f"{keys_path}: an empty id at row {int(pc.index(lengths, 0).as_py())}")
    keys = np.empty(n, dtype=f"S{width}")
    for s in range(0, n, chunk):  # bytes objects for one chunk at a time, not for all N ids
        keys[s:s + chunk] = raw.slice(s, chunk).to_numpy(zero_copy_only=False)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    same = np.flatnonzero(keys[1:] == keys[:-1]) if n > 1 else np.zeros(0, np.int64)
    if len(same):
        raise TasbRayError(f"{keys_path}: id {keys[same[0]].decode('utf-8', 'replace')!r} appears more than once")
    with atomic_path(rows_path) as tmp:
        _save(tmp, order.astype(np.int64))
    with atomic_path(keys_path) as tmp:
        _save(tmp, keys)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, array, allow_pickle=False)


# --- reading -----------------------------------------------------------------------------------------------------


def open_npy(path: str | os.PathLike, ndim: int, kinds: str) -> np.memmap:
    """``path`` memory-mapped read-only, after checking it is a whole ``.npy`` of ``ndim`` dims and a dtype kind
    among ``kinds`` (``"f"``, ``"S"``, ``"i"``).

    Raises:
        TasbRayError: one line naming the file: missing, unreadable header, truncated or longer than its header
            says, or another shape or dtype.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise TasbRayError(f"{path}: not an .npy file (no {NPY_MAGIC!r} magic); {REBUILD}")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise TasbRayError(f"{path}: .npy format version {version} (written here: 1.0 or 2.0); {REBUILD}")
            shape, _, dtype = read_header(f)
            expected = f.tell() + math.prod(shape) * dtype.itemsize
        size = path.stat().st_size
        if size != expected:
            what = "truncated" if size < expected else "longer than its header says"
            raise TasbRayError(f"{path}: {size} bytes where its header says {expected} ({what}); {REBUILD}")
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise TasbRayError(f"{path}: missing") from None
    except (ValueError, OSError, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TasbRayError(f"{path}: not a whole .npy file ({reason}); {REBUILD}") from None
    if not isinstance(array, np.memmap):
        raise TasbRayError(f"{path}: not an .npy array; {REBUILD}")
    # Rows are read at random: without this each page fault reads ahead and maps ~32 neighbouring pages, so 200
    # batches of 64 rows over MS MARCO's file put ~500 MB of unused pages in the RSS instead of ~50 MB (measured).
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_RANDOM"):
        with contextlib.suppress(OSError):
            mapped.madvise(mmap.MADV_RANDOM)
    if array.ndim != ndim or array.dtype.kind not in kinds:
        raise TasbRayError(f"{path}: a {array.ndim}-d {array.dtype} array, expected {ndim}-d of kind {kinds!r}; "
                           f"{REBUILD}")
    return array


class MappedVectors:
    """One kind's vectors from its ``.npy`` files, memory-mapped; rows are read only when asked for.

    Args:
        directory: where the files are (see :func:`vector_paths`).
        kind: ``query`` or ``passage``; dtype: the stored dtype to open (``float32`` or ``float16``).
        normalize: L2-normalise each row taken (a cosine teacher), as :meth:`VectorTable.add` is handed them.
        dim: the width the caller expects (its encoder's), checked when given.

    Raises:
        TasbRayError: a file is missing or broken (:func:`open_npy`), or the three do not agree.
    """

    def __init__(self, directory: str | os.PathLike, kind: str, dtype: str, normalize: bool = False,
                 dim: int | None = None):
        matrix_path, keys_path, rows_path = vector_paths(directory, kind, dtype)
        self.matrix = open_npy(matrix_path, 2, "f")
        self.keys = open_npy(keys_path, 1, "S")
        self.rows = open_npy(rows_path, 1, "iu")
        self.normalize = normalize
        n = self.matrix.shape[0]
        if self.matrix.dtype != np.dtype(dtype):
            raise TasbRayError(f"{matrix_path}: holds {self.matrix.dtype}, its name says {dtype}; {REBUILD}")
        if len(self.keys) != n or len(self.rows) != n:
            raise TasbRayError(f"{keys_path}: {len(self.keys)} ids and {len(self.rows)} rows for the {n} vectors of "
                               f"{matrix_path}; {REBUILD}")
        if dim is not None and self.matrix.shape[1] != dim:
            raise TasbRayError(f"{matrix_path}: vectors of {self.matrix.shape[1]} dimensions, the encoder has {dim}")

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id, -1 where absent."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if not len(ids) or not len(self):
            return out
        raw = [str(i).encode("utf-8") for i in ids]
        fits = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw)) <= self.keys.dtype.itemsize
        wanted = np.array(raw, dtype=self.keys.dtype)  # truncates a longer id: excluded by ``fits``
        at = np.minimum(np.searchsorted(self.keys, wanted), len(self) - 1)
        hit = fits & (self.keys[at] == wanted)
        out[hit] = self.rows[at[hit]]
        return out

    def take(self, positions: np.ndarray) -> np.ndarray:
        """float32 ``[len(positions), dim]`` rows (normalised when ``normalize``); only these rows are read."""
        vec = np.asarray(self.matrix[np.asarray(positions, dtype=np.int64)], dtype=np.float32)
        return l2_normalise(vec) if self.normalize else vec

    def all(self) -> tuple[list[str], np.ndarray]:
        """Every ``(id, vector)`` in row order, in RAM (for export and checks, not for scoring)."""
        ids = np.empty(len(self), dtype=self.keys.dtype)
        ids[np.asarray(self.rows)] = self.keys
        return [k.decode("utf-8") for k in ids.tolist()], self.take(np.arange(len(self)))


class VectorTable:
    """Vectors keyed by unique string ids, held in RAM, looked up a batch at a time (vectorised).

    A dict of row views would cost ~200 bytes of Python objects per id (1.7 GB for the 8.8M MS MARCO passages);
    one pandas index and one matrix cost the ids and the floats. What :meth:`BiEncoderTeacher.load_vectors` fills;
    a stage's vectors are memory-mapped instead (:class:`MappedVectors`).
    """

    def __init__(self) -> None:
        self.index = pd.Index([], dtype=object)
        self.matrix: np.ndarray | None = None

    @property
    def ids(self) -> list[str]:
        return self.index.tolist()

    def __len__(self) -> int:
        return len(self.index)

    def add(self, ids: list[str], matrix: np.ndarray) -> None:
        """Add rows; an id already present gets the new vector."""
        new = pd.Index(ids, dtype=object)
        if not new.is_unique:
            raise TasbRayError(f"vector ids must be unique; {new[new.duplicated()][0]!r} appears more than once")
        if self.matrix is None or not len(self.index):
            self.index, self.matrix = new, np.ascontiguousarray(matrix, dtype=np.float32)
            return
        keep = ~self.index.isin(new)
        self.index = self.index[keep].append(new)
        self.matrix = np.concatenate([self.matrix[keep], np.asarray(matrix, dtype=np.float32)])

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id, -1 where absent."""
        if self.matrix is None or not len(ids):
            return np.full(len(ids), -1, dtype=np.int64)
        return self.index.get_indexer(pd.Index(list(ids), dtype=object))

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.matrix[positions]

    def all(self) -> tuple[list[str], np.ndarray]:
        return self.ids, (self.matrix if self.matrix is not None else np.zeros((0, 0), np.float32))


def l2_normalise(vec: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (at least 1e-12)."""
    # Row by row, so a row's result does not depend on which rows it is taken with: taking rows of a normalised
    # matrix and normalising taken rows give the same bits.
    return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
