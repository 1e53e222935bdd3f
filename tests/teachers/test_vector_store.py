"""Memory-mapped teacher vectors (:mod:`tasb_ray.teachers.vector_store`): lookup by id, exact rows, broken files named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tasb_ray.errors import TasbRayError
from tasb_ray.teachers.vector_store import (
    MappedVectors,
    VectorTable,
    l2_normalise,
    vector_paths,
    write_keys,
    write_matrix,
)

IDS = ["d7", "d10", "d1", "é-unicode", "d100", "x"]


def _store(tmp_path, dtype="float32", ids=IDS, dim=5, seed=0, chunk=4):
    matrix = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32) * 3
    m, k, r = vector_paths(tmp_path, "passage", dtype)
    write_keys(k, r, pa.array(ids), chunk=chunk)
    write_matrix(m, len(ids), dim, dtype, (matrix[s:s + chunk] for s in range(0, len(ids), chunk)))
    return matrix


def test_lookup_by_id_reads_the_rows_of_the_table(tmp_path):
    matrix = _store(tmp_path, chunk=4)  # chunks of 4 ids and 4 rows: the chunked writes line up
    store = MappedVectors(tmp_path, "passage", "float32")
    assert isinstance(store.matrix, np.memmap) and isinstance(store.keys, np.memmap)
    assert str(store.matrix.filename).endswith("passage.float32.npy") and len(store) == len(IDS) and store.dim == 5
    asked = ["d1", "nope", "x", "é-unicode", "d10", "d1", "a-much-longer-id-than-any", "", "d"]
    pos = store.positions(asked)
    want = [IDS.index(i) if i in IDS else -1 for i in asked]
    assert pos.tolist() == want
    hit = pos >= 0
    np.testing.assert_array_equal(store.take(pos[hit]), matrix[pos[hit]])
    ids, everything = store.all()
    assert ids == IDS
    np.testing.assert_array_equal(everything, matrix)
    # Normalised rows are those of normalising the whole matrix, bit for bit (row-wise arithmetic).
    cosine = MappedVectors(tmp_path, "passage", "float32", normalize=True)
    np.testing.assert_array_equal(cosine.take(pos[hit]), l2_normalise(matrix)[pos[hit]])
    table = VectorTable()
    table.add(IDS, l2_normalise(matrix))
    np.testing.assert_array_equal(table.take(table.positions(asked)[hit]), cosine.take(pos[hit]))
    with pytest.raises(TasbRayError, match="vectors of 5 dimensions, the encoder has 8"):
        MappedVectors(tmp_path, "passage", "float32", dim=8)


def test_float16_halves_the_file_within_the_stated_tolerance(tmp_path):
    matrix = _store(tmp_path / "a", "float32", dim=64)
    _store(tmp_path / "b", "float16", dim=64)
    f32 = vector_paths(tmp_path / "a", "passage", "float32")[0]
    f16 = vector_paths(tmp_path / "b", "passage", "float16")[0]
    assert f16.stat().st_size - 128 == (f32.stat().st_size - 128) // 2  # the .npy header is 128 bytes
    half = MappedVectors(tmp_path / "b", "passage", "float16")
    assert half.matrix.dtype == np.float16 and half.take(np.arange(3)).dtype == np.float32
    got = half.take(np.arange(len(IDS)))
    # Round to nearest: each component within 2^-11 of its value, relatively.
    assert np.all(np.abs(got - matrix) <= 2.0 ** -11 * np.abs(matrix))
    scores, exact = got @ got.T, matrix @ matrix.T
    norms = np.linalg.norm(matrix, axis=1)
    assert np.all(np.abs(scores - exact) <= 4 * 2.0 ** -11 * np.outer(norms, norms))
    assert not np.array_equal(scores, exact)


def test_float16_overflow_and_a_wrong_row_count_are_errors(tmp_path):
    path = tmp_path / "m.npy"
    with pytest.raises(TasbRayError, match=r"m\.npy: a vector component beyond float16's range"):
        write_matrix(path, 2, 3, "float16", [np.array([[1.0, 7e4, 0.0], [0, 0, 0]])])
    with pytest.raises(TasbRayError, match="1 rows written, 2 expected"):
        write_matrix(path, 2, 3, "float32", [np.zeros((1, 3))])
    with pytest.raises(TasbRayError, match="does not fit"):
        write_matrix(path, 2, 3, "float32", [np.zeros((3, 3))])
    with pytest.raises(TasbRayError, match="vector_dtype: must be one of float32, float16, got 'float64'"):
        write_matrix(path, 2, 3, "float64", [])
    assert list(tmp_path.iterdir()) == []  # nothing half-written under any name


def test_an_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "passage.float32.npy"

    def chunks():
        yield np.ones((2, 3), np.float32)
        raise KeyboardInterrupt  # killed in the middle of the stream

    with pytest.raises(KeyboardInterrupt):
        write_matrix(path, 4, 3, "float32", chunks())
    assert list(tmp_path.iterdir()) == []


def test_duplicate_and_empty_ids_are_named(tmp_path):
    with pytest.raises(TasbRayError, match=r"k\.npy: id 'b' appears more than once"):
        write_keys(tmp_path / "k.npy", tmp_path / "r.npy", pa.array(["a", "b", "c", "b"]))
    with pytest.raises(TasbRayError, match=r"k\.npy: an empty id at row 1"):
        write_keys(tmp_path / "k.npy", tmp_path / "r.npy", pa.array(["a", "", "c"]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "trailing", "header", "empty", "not-npy", "dtype"])
def test_a_broken_file_is_one_line_naming_it(tmp_path, damage):
    _store(tmp_path)
    matrix, keys, _ = vector_paths(tmp_path, "passage", "float32")
    data = matrix.read_bytes()
    if damage == "truncated":
        matrix.write_bytes(data[:-7])
    elif damage == "trailing":
        matrix.write_bytes(data + b"\0" * 16)
    elif damage == "header":
        matrix.write_bytes(data[:20])
    elif damage == "empty":
        matrix.write_bytes(b"")
    elif damage == "not-npy":
        matrix.write_bytes(b"\x80\x04garbage" + data[10:])
    else:  # a float64 file under the float32 name
        with open(matrix, "wb") as f:
            np.save(f, np.zeros((len(IDS), 5)))
    with pytest.raises(TasbRayError) as e:
        MappedVectors(tmp_path, "passage", "float32")
    msg = str(e.value)
    assert msg.startswith(str(matrix) + ":") and "\n" not in msg, msg
    assert "rebuild" in msg
    if damage == "not-npy":
        assert "not an .npy file" in msg
    matrix.write_bytes(data)
    MappedVectors(tmp_path, "passage", "float32")  # whole again
    keys.unlink()
    with pytest.raises(TasbRayError, match=rf"^{keys}: missing$"):
        MappedVectors(tmp_path, "passage", "float32")


def test_mismatched_files_are_named(tmp_path):
    _store(tmp_path)
    _, keys, rows = vector_paths(tmp_path, "passage", "float32")
    write_keys(keys, rows, pa.array(["a", "b"]))
    with pytest.raises(TasbRayError, match=r"keys\.npy: 2 ids and 2 rows for the 6 vectors of .*float32\.npy"):
        MappedVectors(tmp_path, "passage", "float32")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_streamed_file_is_what_np_save_writes(tmp_path, dtype):
    matrix = _store(tmp_path, dtype, chunk=4)
    path = vector_paths(tmp_path, "passage", dtype)[0]
    with open(tmp_path / "ref.npy", "wb") as f:
        np.save(f, matrix.astype(dtype))
    assert path.read_bytes() == (tmp_path / "ref.npy").read_bytes()
