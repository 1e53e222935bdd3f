"""The teacher-vectors stage (in process and on Ray Data) and bi-encoder teachers scoring from attached vectors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from beir_fixture import write_beir

from tasb_ray.data import prepare_dataset
from tasb_ray.errors import TasbRayError
from tasb_ray.pipeline.cache import STAGE_FILE
from tasb_ray.pipeline.teacher_vectors import (
    PASSAGE_FILE,
    QUERY_FILE,
    attach_teacher_vectors,
    load_stage_vectors,
    read_vectors,
    stage_vectors,
    teacher_vectors_stage,
)
from tasb_ray.teachers import TeacherConfig, build_teacher
from tasb_ray.teachers.vector_store import MappedVectors
from tasb_ray.training.pairs import attach_texts


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = write_beir(tmp_path_factory.mktemp("data") / "tinybeir")
    return prepare_dataset(str(root), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def mean_model(tiny_model, tmp_path_factory):
    """The tiny BERT with mean pooling: its CLS vectors are near-identical for any text (cosine ~0.9998), mean-pooled
    ones are not (~0.9), so score differences of 1e-5 are far below the spread of the scores."""
    from tasb_ray.models.encoder import SPEC_FILE

    path = tmp_path_factory.mktemp("mean") / "tiny-mean"
    shutil.copytree(tiny_model, path)
    spec = json.loads((path / SPEC_FILE).read_text())
    (path / SPEC_FILE).write_text(json.dumps({**spec, "pooling": "mean"}))
    return path


def _bi(model, **kw) -> TeacherConfig:
    return TeacherConfig(kind="bi-encoder", model=str(model), max_query_len=12, max_passage_len=24,
                         batch_size=5, **kw)


@pytest.fixture(scope="module")
def local_stage(prepared, mean_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return work, teacher_vectors_stage(_bi(mean_model), prepared, work)


def _pairs(prepared) -> pd.DataFrame:
    """Every train query with 6 passages (ids drawn with a fixed seed)."""
    rng = np.random.default_rng(0)
    corpus, queries = prepared.corpus(), prepared.queries("train")
    rows = [(q, p) for q in queries["query_id"] for p in rng.choice(corpus["doc_id"].to_numpy(), 6, replace=False)]
    return attach_texts(pd.DataFrame(rows, columns=["qid", "pid"]), queries, corpus)


def test_local_stage_holds_raw_vectors_of_corpus_and_every_split(local_stage, prepared, mean_model, tiny_model):
    from tasb_ray.models.encoder import BertDot

    work, stage = local_stage
    assert stage.parent == work and stage.name.startswith("teacher-vectors-") and (stage / STAGE_FILE).is_file()
    npy = [f"{k}.{x}.npy" for k in ("passage", "query") for x in ("float32", "keys", "rows")]
    assert sorted(p.name for p in stage.iterdir()) == sorted([PASSAGE_FILE, QUERY_FILE, STAGE_FILE, *npy])
    enc = BertDot(str(mean_model), query_max_len=12, passage_max_len=24)
    assert enc.spec.pooling == "mean" and not enc.spec.normalize
    corpus = prepared.corpus()
    ids, vectors = read_vectors(stage / PASSAGE_FILE)
    assert ids == corpus["doc_id"].tolist()
    np.testing.assert_allclose(vectors, enc.encode(corpus["text"].tolist(), "passage"), atol=1e-5, rtol=0)
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0)  # raw: the model does not normalise
    queries = prepared.queries()
    ids, vectors = stage_vectors(stage, "query")
    assert ids == queries["query_id"].tolist()
    assert set(ids) >= {q for s in prepared.splits for q in prepared.queries(s)["query_id"]}
    np.testing.assert_allclose(vectors, enc.encode(queries["text"].tolist(), "query"), atol=1e-5, rtol=0)

    # The key is the encoder, not how its vectors are scored or batched: one stage for dot and cosine teachers.
    assert teacher_vectors_stage(_bi(mean_model, similarity="cosine", device="cpu"), prepared, work) == stage
    assert len(list(work.iterdir())) == 1
    other = _bi(mean_model)
    other.max_passage_len = 16
    for changed in (other, _bi(tiny_model)):  # another max length; another pooling (CLS)
        with pytest.raises(TasbRayError, match="'teacher-vectors' is not prepared"):
            teacher_vectors_stage(changed, prepared, work, require_cached=True)
    with pytest.raises(TasbRayError, match="bi-encoder"):
        teacher_vectors_stage(TeacherConfig(kind="bm25"), prepared, work)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_attached_vectors_give_the_same_scores_without_encoding(local_stage, prepared, mean_model, similarity):
    work, stage = local_stage
    cfg = _bi(mean_model, similarity=similarity)
    frame = _pairs(prepared)
    want = build_teacher(cfg).score_batch(frame)
    teacher = build_teacher(cfg)
    assert attach_teacher_vectors(teacher, cfg, prepared, work) == {"teacher": stage}

    def no_encoding(texts, kind):
        raise AssertionError(f"encoded {len(texts)} {kind} texts")

    teacher.encode = no_encoding
    got = teacher.score_batch(frame)
    # Dot products of the raw vectors are ~50: float32 rounding alone is ~1e-5 there.
    rtol = 1e-6 if similarity == "dot" else 0
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=rtol)
    assert want.std() > 1e-2 * np.abs(want).mean()  # the tolerance is far below the spread of the scores
    teacher.precompute(frame["pid"].tolist(), frame["passage"].tolist(), "passage")
    q = frame.drop_duplicates("qid").head(3)
    p = frame.drop_duplicates("pid").head(4)
    matrix = teacher.score_matrix(q["qid"].tolist(), q["query"].tolist(), p["pid"].tolist(), p["passage"].tolist())
    np.testing.assert_allclose(matrix, build_teacher(cfg).score_matrix(
        q["qid"].tolist(), q["query"].tolist(), p["pid"].tolist(), p["passage"].tolist()), atol=1e-5, rtol=rtol)

    # Ids the stage does not hold are still encoded (and cached) on the fly.
    teacher.encode = build_teacher(cfg).encode
    extra = frame.head(2).assign(pid=["new-1", "new-2"], passage=["an unseen passage", "another one"])
    np.testing.assert_allclose(teacher.score_batch(extra), build_teacher(cfg).score_batch(extra), atol=1e-5,
                               rtol=rtol)
    ids, exported = teacher.export_vectors("passage")
    assert ids[-2:] == ["new-1", "new-2"] and len(ids) == len(prepared.corpus()) + 2
    if similarity == "cosine":
        np.testing.assert_allclose(np.linalg.norm(exported, axis=1), 1.0, atol=1e-5)


def test_attach_walks_ensemble_members(local_stage, prepared, mean_model):
    work, stage = local_stage
    cfg = TeacherConfig(kind="ensemble", components=[TeacherConfig(kind="bm25"),
                                                     _bi(mean_model, similarity="cosine", weight=0.5)])
    corpus = prepared.corpus()
    frame = _pairs(prepared)
    want = build_teacher(cfg, corpus).score_batch(frame)
    teacher = build_teacher(cfg, corpus)
    assert attach_teacher_vectors(teacher, cfg, prepared, work) == {"teacher.components[1]": stage}
    bi = teacher.components[1]
    assert len(bi.export_vectors("passage")[0]) == len(corpus)
    bi.encode = lambda texts, kind: (_ for _ in ()).throw(AssertionError("encoded"))
    np.testing.assert_allclose(bi.score_batch(frame), build_teacher(cfg.components[1]).score_batch(frame),
                               atol=1e-5, rtol=0)
    # The ensemble z-normalises each query's 6 scores, whose spread is small for the cosine member: rounding of
    # 1e-7 in the cosines (batch padding differs between the stage's encoder and the teacher's) becomes ~1e-5.
    np.testing.assert_allclose(teacher.score_batch(frame), want, atol=1e-4, rtol=0)

    with pytest.raises(TasbRayError, match=r"teacher.components\[1\]: the config is a bi-encoder"):
        attach_teacher_vectors(build_teacher(TeacherConfig(kind="ensemble", components=[
            TeacherConfig(kind="bm25"), TeacherConfig(kind="bm25")]), corpus), cfg, prepared, work)


def test_load_vectors_checks_its_input(tiny_model):
    from tasb_ray.teachers.bi_encoder import BiEncoderTeacher

    teacher = BiEncoderTeacher(tiny_model, similarity="cosine")
    dim = teacher.encoder.dim
    with pytest.raises(TasbRayError, match="expected"):
        teacher.load_vectors("passage", ["a", "b"], np.ones((2, dim + 1)))
    with pytest.raises(TasbRayError, match="appears more than once"):
        teacher.load_vectors("passage", ["a", "a"], np.ones((2, dim)))
    with pytest.raises(TasbRayError, match="kind"):
        teacher.load_vectors("doc", ["a"], np.ones((1, dim)))
    teacher.load_vectors("query", ["a", "b"], np.arange(2 * dim, dtype=np.float32).reshape(2, dim))
    teacher.load_vectors("query", ["b", "c"], np.ones((2, dim)) * 3)  # b replaced, c added
    ids, matrix = teacher.export_vectors("query")
    assert ids == ["a", "b", "c"]
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix[1], matrix[2])


# --- memory-mapped .npy vectors (issue 13: the in-batch teacher holds no corpus-sized matrix) --------------------


def _in_ram(cfg, stage):
    """The bi-encoder as it was before the .npy files: the stage's Parquet vectors loaded into RAM."""
    teacher = build_teacher(cfg)
    for kind in ("passage", "query"):
        teacher.load_vectors(kind, *stage_vectors(stage, kind))
    return teacher


def _matrix_args(prepared, n_q=4, n_p=9):
    q = prepared.queries("train").head(n_q)
    p = prepared.corpus().sample(n_p, random_state=1)
    return q["query_id"].tolist(), q["text"].tolist(), p["doc_id"].tolist(), p["text"].tolist()


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_mapped_vectors_score_exactly_as_in_ram_at_float32(local_stage, prepared, mean_model, similarity):
    work, stage = local_stage
    cfg = _bi(mean_model, similarity=similarity)
    teacher = build_teacher(cfg)
    attach_teacher_vectors(teacher, cfg, prepared, work)
    for kind in ("passage", "query"):
        store = teacher._loaded[kind]
        assert isinstance(store, MappedVectors) and isinstance(store.matrix, np.memmap)
        assert str(store.matrix.filename) == str(stage / f"{kind}.float32.npy") and store.matrix.dtype == np.float32
    teacher.encode = lambda texts, kind: (_ for _ in ()).throw(AssertionError(f"encoded {kind} texts"))
    ram = _in_ram(cfg, stage)
    args = _matrix_args(prepared)
    np.testing.assert_array_equal(teacher.score_matrix(*args), ram.score_matrix(*args))
    frame = _pairs(prepared)
    np.testing.assert_array_equal(teacher.score_batch(frame), ram.score_batch(frame))
    with pytest.raises(TasbRayError, match="memory-mapped from .*passage.float32.npy"):
        teacher.load_vectors("passage", ["a"], np.ones((1, teacher.encoder.dim)))


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_float16_vectors_are_a_second_file_within_tolerance(local_stage, prepared, mean_model, similarity, tmp_path):
    work = tmp_path / "work"  # a copy: the module's stage keeps its float32 files only
    shutil.copytree(local_stage[0], work)
    stage = work / local_stage[1].name
    cfg = _bi(mean_model, similarity=similarity)
    teacher = build_teacher(cfg)
    # Same stage (the dtype is not in the key); the float16 files are converted from its Parquet once.
    assert attach_teacher_vectors(teacher, cfg, prepared, work, vector_dtype="float16") == {"teacher": stage}
    half, full = stage / "passage.float16.npy", stage / "passage.float32.npy"
    assert half.is_file() and full.is_file() and teacher._loaded["passage"].matrix.dtype == np.float16
    assert half.stat().st_size - 128 == (full.stat().st_size - 128) // 2
    args = _matrix_args(prepared)
    got, want = teacher.score_matrix(*args), _in_ram(cfg, stage).score_matrix(*args)
    # Each stored component is within 2^-11 of its value (relative), so a dot product is within ~2 * 2^-11 * |q||p|;
    # 4 * 2^-11 leaves room for the cosine's renormalisation. |q||p| is 1 for cosine.
    scale = 1.0
    if similarity == "dot":
        (q_ids, q), (p_ids, p) = stage_vectors(stage, "query"), stage_vectors(stage, "passage")
        qn, pn = dict(zip(q_ids, np.linalg.norm(q, axis=1))), dict(zip(p_ids, np.linalg.norm(p, axis=1)))
        scale = np.outer([qn[i] for i in args[0]], [pn[i] for i in args[2]])
    assert np.all(np.abs(got - want) <= 4 * 2.0 ** -11 * scale)
    assert not np.array_equal(got, want)


def test_a_stage_without_npy_files_is_converted_atomically(prepared, mean_model, tmp_path, monkeypatch):
    import tasb_ray.teachers.vector_store as vs
    from tasb_ray.pipeline import teacher_vectors as tv

    work = tmp_path / "work"
    stage = teacher_vectors_stage(_bi(mean_model), prepared, work)
    built = {p.name: p.read_bytes() for p in stage.glob("*.npy")}
    for p in stage.glob("*.npy"):  # a stage from before the .npy files
        p.unlink()

    real = vs.write_matrix

    def killed(path, n, dim, dtype, chunks):
        def some():
            yield next(iter(chunks))
            raise KeyboardInterrupt

        return real(path, n, dim, dtype, some())

    monkeypatch.setattr(tv, "write_matrix", killed)
    with pytest.raises(KeyboardInterrupt):
        tv.ensure_vector_files(stage, "passage", "float32", rows_per_chunk=3)
    # The id files were whole and are kept; no matrix file, and no temporary one left, under any name.
    assert sorted(p.name for p in stage.glob("*passage*")) == ["passage.keys.npy", "passage.parquet",
                                                              "passage.rows.npy"]
    assert not list(stage.glob(".*"))
    monkeypatch.setattr(tv, "write_matrix", real)
    cfg = _bi(mean_model, similarity="cosine")
    teacher = build_teacher(cfg)
    attach_teacher_vectors(teacher, cfg, prepared, work, require_cached=True)  # converts what is missing
    assert {p.name: p.read_bytes() for p in stage.glob("*.npy")} == built
    args = _matrix_args(prepared)
    np.testing.assert_array_equal(teacher.score_matrix(*args), _in_ram(cfg, stage).score_matrix(*args))


def test_a_build_killed_while_writing_npy_publishes_nothing(prepared, mean_model, tmp_path, monkeypatch):
    from tasb_ray.pipeline import teacher_vectors as tv

    work = tmp_path / "work"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tv, "write_matrix", killed)
    with pytest.raises(KeyboardInterrupt):
        teacher_vectors_stage(_bi(mean_model), prepared, work)
    assert list(work.iterdir()) == []  # no stage directory, not even a temporary one
    monkeypatch.undo()
    stage = teacher_vectors_stage(_bi(mean_model), prepared, work, vector_dtype="float16")
    assert (stage / "passage.float16.npy").is_file() and not (stage / "passage.float32.npy").exists()


def test_a_corrupt_npy_in_a_stage_is_one_line_naming_it(local_stage, prepared, mean_model, tmp_path):
    _, stage = local_stage
    copy = tmp_path / stage.name
    shutil.copytree(stage, copy)
    bad = copy / "query.float32.npy"
    bad.write_bytes(bad.read_bytes()[:-100])
    teacher = build_teacher(_bi(mean_model))
    with pytest.raises(TasbRayError) as e:
        load_stage_vectors(teacher, copy)
    assert str(e.value).startswith(f"{bad}: ") and "(truncated)" in str(e.value) and "\n" not in str(e.value)


def test_vector_dtype_is_checked_at_config_load(tmp_path):
    from tasb_ray.config import load_config
    from tasb_ray.errors import ConfigError
    from tasb_ray.training.config import TrainingConfig

    assert TrainingConfig().teachers.vector_dtype == "float32"
    assert load_config(TrainingConfig, None, ["teachers.vector_dtype=float16"]).teachers.vector_dtype == "float16"
    with pytest.raises(ConfigError, match=r"^teachers\.vector_dtype: must be one of float32, float16, got 'fp16'$"):
        load_config(TrainingConfig, None, ["teachers.vector_dtype=fp16"])


def test_conversion_of_a_corrupt_or_foreign_parquet_names_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasb_ray.pipeline import teacher_vectors as tv

    stage = tmp_path / "teacher-vectors-x"
    stage.mkdir()
    source = stage / tv.PASSAGE_FILE
    source.write_bytes(b"PAR1" + b"\0" * 64)                  # truncated: pyarrow's own message names no file
    with pytest.raises(TasbRayError, match=rf"^{source}: cannot read") as e:
        tv.ensure_vector_files(stage, "passage")
    assert "\n" not in str(e.value)
    pq.write_table(pa.table({"pid": ["a"], "x": [1.0]}), source)  # a Parquet file, not of vectors
    with pytest.raises(TasbRayError, match=rf"^{source}: needs columns 'doc_id' and 'embedding'"):
        tv.ensure_vector_files(stage, "passage")
    assert not list(stage.glob("*.npy"))
