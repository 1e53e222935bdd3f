"""Bi-encoder teacher vectors, computed once per (dataset, encoder) and shared: the ``teacher-vectors`` stage.

The default teachers (an ensemble of BM25 and an all-MiniLM-L6-v2 bi-encoder) score with vectors of the whole
corpus: the pairs stage needs them for the candidate pairs, every training run for its in-batch teacher, a
re-ranking step for its candidates. On SciFact one corpus encoding costs ~4 CPU minutes, so the vectors are a
cached stage of their own (:func:`tasb_ray.pipeline.cache.cached_stage`), and a teacher is handed them with
:func:`attach_teacher_vectors` after it is built.

Stage layout (``<work_dir>/teacher-vectors-<key>/``)::

    passage.parquet    doc_id: string, embedding: fixed_size_list<float32>[dim]   (corpus order)
    query.parquet      query_id: string, embedding: ...     (every query of the dataset, so of every split)
    <kind>.<dtype>.npy, <kind>.keys.npy, <kind>.rows.npy   the same vectors for memory-mapping (below)
    stage.json         inputs and info (queries per split among them), written last

Teachers do not read the Parquet files: :func:`load_stage_vectors` memory-maps ``.npy`` copies of them
(:mod:`tasb_ray.teachers.vector_store`), so a training batch reads its own rows and the corpus's vectors are never
all in RAM (MS MARCO: 13.5 GB at 384 float32 dimensions). The stored dtype is ``teachers.vector_dtype``: ``float32``
(default; scores equal those from the Parquet vectors bit for bit) or ``float16`` (half the file). It is not part of
the stage key: the Parquet files are the same for every dtype, and each dtype's matrix has its own file name, so
changing the dtype never reads another dtype's file. A build writes the ``.npy`` files of the dtype it was asked
for; any other dtype, and stages built before the ``.npy`` files existed, are converted from the Parquet files on
first use (:func:`ensure_vector_files`, streamed, each file renamed into place when whole, so a killed conversion
leaves nothing that looks done and concurrent converters write the same bytes).

The columns are those of the sharded encoder's shards (:mod:`tasb_ray.distributed.encode`). The vectors are the
encoder's raw output (the model's own pooling and normalisation); a teacher's similarity (cosine) is applied when
they are loaded, so one stage serves ``dot`` and ``cosine`` teachers alike. The key holds the dataset identity and
the encoder as resolved (model, weights fingerprint, pooling, normalisation, max lengths).

Both ways of building give the same numbers: in process and on Ray Data (:func:`tasb_ray.distributed.encode.
encode_corpus` / ``encode_queries``: sharded, resumable, manifest) every text goes through
:func:`tasb_ray.distributed.batch_encoder.encode_bucketed`, whose vectors do not depend on which texts share a batch.
The Ray path encodes into ``<work_dir>/.teacher-vectors-<key>.ray/`` first, so a killed build resumes from its
finished shards; that directory is removed once the stage is published.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling",
    SIGIR 2021 (the teachers of TAS-Balanced); Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from tasb_ray.distributed.batch_encoder import (
    encode_bucketed,
    fixed_size_list,
    model_fingerprint,
    resolve_encoder,
    vectors_of,
)
from tasb_ray.distributed.encode import encode_corpus, encode_queries, load_embeddings
from tasb_ray.distributed.options import RayOptions
from tasb_ray.distributed.runtime import ray_session
from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import atomic_path
from tasb_ray.models.encoder import BertDot, pick_device
from tasb_ray.pipeline.cache import cached_stage, dataset_identity, stage_key
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT
from tasb_ray.teachers.base import Teacher
from tasb_ray.teachers.bi_encoder import BiEncoderTeacher
from tasb_ray.teachers.config import TeacherConfig
from tasb_ray.teachers.ensemble import EnsembleTeacher
from tasb_ray.teachers.vector_store import DEFAULT_VECTOR_DTYPE, KINDS, vector_paths, write_keys, write_matrix

log = logging.getLogger(__name__)

STAGE = "teacher-vectors"
FORMAT = 1
PASSAGE_FILE = "passage.parquet"
QUERY_FILE = "query.parquet"
EMBEDDING = "embedding"
CHUNK = 4096  # texts per in-process encoding call: bounds the tokenised texts held at once


# --- the encoder a teacher config stands for ---------------------------------------------------------------------


def encoder_identity(member_cfg: TeacherConfig) -> dict:
    """The encoder of a bi-encoder teacher config as :class:`BertDot` resolves it (no weights are loaded).

    ``BiEncoderTeacher`` keeps the model's own pooling and normalisation and sets both max lengths, so those are
    resolved the same way here. The model is named as configured (a short name stays valid across virtual
    environments) and identified by a fingerprint of its local weights (a checkpoint retrained in place must not
    pass for the old one).
    """
    _check_bi_encoder(member_cfg)
    name, spec = resolve_encoder(str(member_cfg.model), "auto", None, member_cfg.max_query_len,
                                 member_cfg.max_passage_len)
    return {"model": str(member_cfg.model), "model_fingerprint": model_fingerprint(name), "encoder": spec}


def stage_inputs(member_cfg: TeacherConfig, ds) -> dict:
    """The ``teacher-vectors`` stage key inputs: dataset identity and the resolved encoder.

    Not the similarity, batch size or device: they do not change the stored (raw) vectors.
    """
    return {"format": FORMAT, "data": dataset_identity(ds.manifest), "encoder": encoder_identity(member_cfg)}


def _check_bi_encoder(cfg: TeacherConfig) -> None:
    if cfg.kind != "bi-encoder":
        raise TasbRayError(f"teacher vectors are for bi-encoder teachers, not kind {cfg.kind!r}")


# --- the stage ---------------------------------------------------------------------------------------------------


def _split_counts(ds, ids: Sequence[str]) -> dict[str, int]:
    """Queries of each split that the stage holds vectors of (all of them; recorded for the logs)."""
    have = set(map(str, ids))
    return {split: int(ds.queries(split)[QUERY_ID].astype(str).isin(have).sum()) for split in ds.splits}


def teacher_vectors_stage(member_cfg: TeacherConfig | Mapping, ds, work_dir: str | os.PathLike, *,
                          use_ray: bool = False, ray: RayOptions | None = None, require_cached: bool = False,
                          show_progress: bool = False, vector_dtype: str = DEFAULT_VECTOR_DTYPE) -> Path:
    """The stage directory holding the teacher's vectors of the whole corpus and of every query (all splits), with
    their ``.npy`` files stored as ``vector_dtype`` (written by the build, or converted once for an existing stage).

    Args:
        member_cfg: a ``bi-encoder`` teacher config (or its dict form).
        ds: the :class:`tasb_ray.data.PreparedDataset`.
        work_dir: where stages live.
        use_ray: encode on Ray Data (sharded, resumable); else in this process. Same vectors either way.
        ray: how the Ray path runs (:class:`tasb_ray.distributed.options.RayOptions`; not part of the key).
        require_cached: raise :class:`TasbRayError` naming the stage instead of building it.
        show_progress: progress bars while encoding.
        vector_dtype: ``float32`` or ``float16`` (not part of the key; see the module docstring).
    """
    cfg = member_cfg if isinstance(member_cfg, TeacherConfig) else TeacherConfig.from_dict(member_cfg)
    inputs = stage_inputs(cfg, ds)
    partial = Path(work_dir) / f".{STAGE}-{stage_key(inputs)}.ray"

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        if use_ray:
            info = _build_ray(cfg, ds, tmp, partial, ray or RayOptions(), show_progress)
        else:
            info = _build_local(cfg, ds, tmp, show_progress)
        for kind in KINDS:
            ensure_vector_files(tmp, kind, vector_dtype)
        return {**info, "built_with": "ray" if use_ray else "local", "seconds": round(time.perf_counter() - t0, 1)}

    path, _ = cached_stage(work_dir, STAGE, inputs, build, require_cached=require_cached)
    for kind in KINDS:  # a stage built before the .npy files existed, or for another dtype
        ensure_vector_files(path, kind, vector_dtype)
    if partial.exists():  # the published stage holds everything the resumable shards did
        shutil.rmtree(partial, ignore_errors=True)
    return path


def _resolved(cfg: TeacherConfig) -> tuple[str, dict]:
    return resolve_encoder(str(cfg.model), "auto", None, cfg.max_query_len, cfg.max_passage_len)


def _build_local(cfg: TeacherConfig, ds, tmp: Path, show_progress: bool) -> dict:
    name, spec = _resolved(cfg)
    encoder = BertDot(name, pooling=spec["pooling"], normalize=spec["normalize"],
                      query_max_len=spec["query_max_len"], passage_max_len=spec["passage_max_len"])
    encoder.to(pick_device(cfg.device)).eval()
    corpus = ds.corpus()
    write_vectors(tmp / PASSAGE_FILE, DOC_ID, corpus[DOC_ID].tolist(),
                  encode_texts(encoder, corpus[TEXT].tolist(), "passage", cfg.batch_size, show_progress))
    q = ds.queries()
    write_vectors(tmp / QUERY_FILE, QUERY_ID, q[QUERY_ID].tolist(),
                  encode_texts(encoder, q[TEXT].tolist(), "query", cfg.batch_size, show_progress))
    return {"model": name, "encoder": spec, "dim": encoder.dim, "passages": len(corpus), "queries": len(q),
            "split_queries": _split_counts(ds, q[QUERY_ID].tolist())}


def encode_texts(encoder, texts: Sequence[str], kind: str, batch_size: int = 32,
                 show_progress: bool = False) -> np.ndarray:
    """float32 ``[N, dim]`` vectors of ``texts`` with :func:`encode_bucketed`, in chunks (a progress bar's steps).

    Texts are ordered by length before chunking so each chunk pads little; the values do not depend on the
    chunking (see ``encode_bucketed``), so they equal the Ray path's.

    Args:
        encoder: a :class:`tasb_ray.models.encoder.BertDot`.
        texts: the texts; kind: ``query`` or ``passage``; batch_size: rows per forward pass.
        show_progress: a tqdm bar over texts.
    """
    texts = list(texts)
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    bar = None
    if show_progress:
        bar = tqdm(total=len(texts), desc=f"teacher vectors ({kind}s)", unit=kind)
    for s in range(0, len(texts), CHUNK):
        idx = order[s:s + CHUNK]
        out[idx] = encode_bucketed(encoder, [texts[i] for i in idx], kind, batch_size)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return out


def _build_ray(cfg: TeacherConfig, ds, tmp: Path, partial: Path, ro: RayOptions, show_progress: bool) -> dict:
    name, spec = _resolved(cfg)
    common = dict(pooling=spec["pooling"], normalize=spec["normalize"], batch_size=cfg.batch_size,
                  shard_rows=ro.shard_rows, show_progress=show_progress, **ro.pool())
    with ray_session(ro.address):  # one Ray instance for both encodings (each would start its own)
        out = encode_corpus(ds, name, partial / "passage", passage_max_len=spec["passage_max_len"], **common)
        ids, vectors = load_embeddings(out, verify=True)
        write_vectors(tmp / PASSAGE_FILE, DOC_ID, ids.tolist(), vectors)
        dim, passages = vectors.shape[1], len(ids)
        del vectors
        # All queries in one pipeline: a pipeline costs seconds to start, a split's queries are cheap to encode.
        out = encode_queries(ds, None, name, partial / "query", query_max_len=spec["query_max_len"], **common)
        ids, vectors = load_embeddings(out, verify=True)
        write_vectors(tmp / QUERY_FILE, QUERY_ID, ids.tolist(), vectors)
    return {"model": name, "encoder": spec, "dim": int(dim), "passages": int(passages), "queries": len(ids),
            "split_queries": _split_counts(ds, ids.tolist())}


# --- stage files -------------------------------------------------------------------------------------------------


def write_vectors(path: str | os.PathLike, id_column: str, ids: Sequence[str], vectors: np.ndarray) -> None:
    """``id_column: string, embedding: fixed_size_list<float32>`` as Parquet, atomically."""
    if len(ids) != len(vectors):
        raise TasbRayError(f"{path}: {len(ids)} ids for {len(vectors)} vectors")
    table = pa.table({id_column: pa.array([str(i) for i in ids], type=pa.string()),
                      EMBEDDING: fixed_size_list(np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1))})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression={id_column: "zstd", EMBEDDING: "none"})


def read_vectors(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(ids, float32 [N, dim])`` of one vectors file (the first column holds the ids)."""
    table = pq.read_table(path)
    if EMBEDDING not in table.column_names:
        raise TasbRayError(f"{path}: no '{EMBEDDING}' column (not a teacher-vectors file)")
    return table.column(0).to_pylist(), vectors_of(table.column(EMBEDDING))


def stage_vectors(stage_dir: str | os.PathLike, kind: str) -> tuple[list[str], np.ndarray]:
    """``(ids, vectors)`` of a teacher-vectors stage: the corpus for ``passage``, all queries for ``query``."""
    files = {"passage": PASSAGE_FILE, "query": QUERY_FILE}
    if kind not in files:
        raise TasbRayError(f"kind must be 'query' or 'passage', got {kind!r}")
    path = Path(stage_dir) / files[kind]
    if not path.is_file():
        raise TasbRayError(f"{path}: missing (not a complete teacher-vectors stage)")
    return read_vectors(path)


def ensure_vector_files(stage_dir: str | os.PathLike, kind: str, dtype: str = DEFAULT_VECTOR_DTYPE,
                        rows_per_chunk: int = 1 << 16) -> tuple[Path, Path, Path]:
    """The ``.npy`` files of ``kind`` stored as ``dtype`` in ``stage_dir``, converted from its Parquet file if absent.

    The conversion streams ``rows_per_chunk`` rows at a time (the ids are read whole: ~12 bytes each for MS MARCO's);
    each file appears under its name only when whole. Files already there are used as they are (their integrity is
    checked when opened, :class:`tasb_ray.teachers.vector_store.MappedVectors`).

    Returns:
        ``(matrix, keys, rows)`` paths.

    Raises:
        TasbRayError: the Parquet file is missing or not a vectors file, or the directory cannot be written.
    """
    paths = vector_paths(stage_dir, kind, dtype)
    if all(p.is_file() for p in paths):
        return paths
    source = Path(stage_dir) / {"passage": PASSAGE_FILE, "query": QUERY_FILE}[kind]
    if not source.is_file():
        raise TasbRayError(f"{source}: missing (not a complete teacher-vectors stage)")
    matrix_path, keys_path, rows_path = paths
    t0 = time.perf_counter()
    id_column = {"passage": DOC_ID, "query": QUERY_ID}[kind]
    try:
        with pq.ParquetFile(source) as parquet:
            names = parquet.schema_arrow.names
            if EMBEDDING not in names or id_column not in names:
                raise TasbRayError(f"{source}: needs columns '{id_column}' and '{EMBEDDING}' (not a teacher-vectors "
                                   f"file; has {names})")
            if not (keys_path.is_file() and rows_path.is_file()):
                ids = parquet.read(columns=[id_column]).column(0)
                write_keys(keys_path, rows_path, ids)
                del ids
            if not matrix_path.is_file():
                dim = parquet.schema_arrow.field(EMBEDDING).type.list_size
                chunks = (vectors_of(b.column(0)) for b in parquet.iter_batches(rows_per_chunk, columns=[EMBEDDING]))
                write_matrix(matrix_path, parquet.metadata.num_rows, dim, dtype, chunks)
    except pa.ArrowException as e:  # a truncated or corrupt Parquet file: pyarrow's text does not name it
        raise TasbRayError(f"{source}: cannot read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    except OSError as e:
        raise TasbRayError(f"{stage_dir}: cannot write the {kind} vector files ({e})") from None
    log.info("%s: %s vectors as %s .npy in %.1f s", stage_dir, kind, dtype, time.perf_counter() - t0)
    return paths


# --- teachers ----------------------------------------------------------------------------------------------------


def bi_encoder_configs(cfg: TeacherConfig, path: str = "teacher") -> list[tuple[str, TeacherConfig]]:
    """``(path, config)`` of every bi-encoder in a teacher config, ensemble components included.

    Paths name a member's place: ``teacher``, ``teacher.components[1]``, ...
    """
    if cfg.kind == "bi-encoder":
        return [(path, cfg)]
    return [m for i, c in enumerate(cfg.components) for m in bi_encoder_configs(c, f"{path}.components[{i}]")]


def bi_encoder_members(teacher: Teacher, cfg: TeacherConfig, path: str = "teacher") -> list[tuple[str, TeacherConfig,
                                                                                                   Teacher]]:
    """``(path, config, teacher)`` of every bi-encoder member, walking a built teacher beside its config.

    Raises:
        TasbRayError: the teacher's structure does not match the config's (naming where).
    """
    if cfg.kind == "bi-encoder":
        if not isinstance(teacher, BiEncoderTeacher):
            raise TasbRayError(f"{path}: the config is a bi-encoder, the teacher a {type(teacher).__name__}")
        return [(path, cfg, teacher)]
    if cfg.kind == "ensemble":
        if not isinstance(teacher, EnsembleTeacher) or len(teacher.components) != len(cfg.components):
            raise TasbRayError(f"{path}: the config is an ensemble of {len(cfg.components)}, the teacher a "
                               f"{type(teacher).__name__} of {len(getattr(teacher, 'components', []))}")
        return [m for i, (t, c) in enumerate(zip(teacher.components, cfg.components))
                for m in bi_encoder_members(t, c, f"{path}.components[{i}]")]
    return []


def ensure_teacher_vectors(teacher_cfg: TeacherConfig | Mapping, ds, work_dir: str | os.PathLike, *,
                           use_ray: bool = False, ray: RayOptions | None = None, require_cached: bool = False,
                           show_progress: bool = False, vector_dtype: str = DEFAULT_VECTOR_DTYPE) -> dict[str, Path]:
    """The teacher-vectors stage of every bi-encoder member of ``teacher_cfg`` (built when absent): path → dir.

    Members with the same encoder share one stage. Arguments as for :func:`teacher_vectors_stage`.
    """
    cfg = teacher_cfg if isinstance(teacher_cfg, TeacherConfig) else TeacherConfig.from_dict(teacher_cfg)
    return {path: teacher_vectors_stage(member, ds, work_dir, use_ray=use_ray, ray=ray,
                                        require_cached=require_cached, show_progress=show_progress,
                                        vector_dtype=vector_dtype)
            for path, member in bi_encoder_configs(cfg)}


def load_stage_vectors(teacher, stage_dir: str | os.PathLike, vector_dtype: str = DEFAULT_VECTOR_DTYPE) -> None:
    """Memory-map a stage's passage and query vectors into a :class:`BiEncoderTeacher` (``map_vectors``), converting
    them to ``.npy`` of ``vector_dtype`` first when the stage has none."""
    for kind in KINDS:
        ensure_vector_files(stage_dir, kind, vector_dtype)
        teacher.map_vectors(kind, stage_dir, vector_dtype)


def attach_vectors_from_dirs(teacher: Teacher, teacher_cfg: TeacherConfig | Mapping,
                             dirs: Mapping[str, str | os.PathLike],
                             vector_dtype: str = DEFAULT_VECTOR_DTYPE) -> None:
    """Load the stages named in ``dirs`` (member path → stage dir, from :func:`ensure_teacher_vectors`) into the
    matching bi-encoder members of ``teacher``, memory-mapped as ``vector_dtype``; what a Ray actor does with paths it
    was handed (actors on one node share the mapped files' pages).

    Raises:
        TasbRayError: a path in ``dirs`` names no bi-encoder member of the teacher.
    """
    cfg = teacher_cfg if isinstance(teacher_cfg, TeacherConfig) else TeacherConfig.from_dict(teacher_cfg)
    members = {path: t for path, _, t in bi_encoder_members(teacher, cfg)}
    unknown = sorted(set(dirs) - set(members))
    if unknown:
        raise TasbRayError(f"teacher vectors for {unknown}, which are not bi-encoder members "
                           f"(members: {sorted(members)})")
    for path, stage_dir in dirs.items():
        load_stage_vectors(members[path], stage_dir, vector_dtype)
        log.info("%s: loaded teacher vectors from %s", path, stage_dir)


def attach_teacher_vectors(teacher: Teacher, teacher_cfg: TeacherConfig | Mapping, ds,
                           work_dir: str | os.PathLike, use_ray: bool = False, *, ray: RayOptions | None = None,
                           require_cached: bool = False, show_progress: bool = False,
                           vector_dtype: str = DEFAULT_VECTOR_DTYPE) -> dict[str, Path]:
    """Give every bi-encoder member of a built teacher its vectors from the teacher-vectors stage, memory-mapped.

    Build the teacher first (``build_teacher``), then attach: scores are the same as without the vectors (up to
    float rounding), but no corpus or query text is encoded again.

    Args:
        teacher: the teacher built from ``teacher_cfg``.
        teacher_cfg: its config (ensemble components are matched to the teacher's components in order).
        ds, work_dir, use_ray, ray, require_cached, show_progress, vector_dtype: see :func:`teacher_vectors_stage`.

    Returns:
        Member path → stage directory (empty when the teacher has no bi-encoder).
    """
    cfg = teacher_cfg if isinstance(teacher_cfg, TeacherConfig) else TeacherConfig.from_dict(teacher_cfg)
    bi_encoder_members(teacher, cfg)  # a mismatch fails before any encoding
    dirs = ensure_teacher_vectors(cfg, ds, work_dir, use_ray=use_ray, ray=ray, require_cached=require_cached,
                                  show_progress=show_progress, vector_dtype=vector_dtype)
    attach_vectors_from_dirs(teacher, cfg, dirs, vector_dtype)
    return dirs
