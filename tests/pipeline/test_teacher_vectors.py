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
    read_vectors,
    stage_vectors,
    teacher_vectors_stage,
)
from tasb_ray.teachers import TeacherConfig, build_teacher
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
    assert sorted(p.name for p in stage.iterdir()) == sorted([PASSAGE_FILE, QUERY_FILE, STAGE_FILE])
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
