"""Stage cache keys follow content: an edited score file rebuilds the pairs stage, and the log says why."""

from __future__ import annotations

import json
import logging
import os

import pytest
from test_run import _config

from tasb_ray.config import from_dict
from tasb_ray.data.teacher_file import write_teacher_tsv
from tasb_ray.pipeline.cache import why_rebuilt
from tasb_ray.pipeline.run import open_data, pairs_stage
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.pairs import read_pairs


def _file_config(tmp_path, tiny_beir, tiny_model, teacher_file):
    raw = _config(tmp_path, tiny_beir, tiny_model)
    raw["teachers"] = {"pairwise": {"kind": "file", "path": str(teacher_file)}, "inbatch": {"kind": "bm25"}}
    return from_dict(TrainingConfig, raw)


def test_teacher_file_edited_in_place_rebuilds_the_pairs_stage(tmp_path, tiny_beir, tiny_model, caplog):
    # Scores for exactly the stage's candidate pairs: take them from a BM25-scored build of the same candidates.
    bm25_cfg = from_dict(TrainingConfig, _config(tmp_path, tiny_beir, tiny_model))
    ds = open_data(bm25_cfg)
    d, _ = pairs_stage(bm25_cfg, ds)
    pairs = read_pairs(d / "pairs.parquet")
    teacher_file = tmp_path / "teacher.tsv"
    write_teacher_tsv(pairs, teacher_file)

    cfg = _file_config(tmp_path, tiny_beir, tiny_model, teacher_file)
    first, _ = pairs_stage(cfg, ds)
    again, _ = pairs_stage(cfg, ds)
    assert again == first

    # Same size, same mtime, other bytes: only the content says the scores changed.
    st = os.stat(teacher_file)
    text = teacher_file.read_text()
    lines = text.splitlines(keepends=True)
    pos, rest = lines[0].split("\t", 1)
    edited = ("9" * len(pos)) if "." not in pos else pos.replace(pos[0], "9" if pos[0] != "9" else "8", 1)
    lines[0] = edited + "\t" + rest
    teacher_file.write_text("".join(lines))
    assert os.stat(teacher_file).st_size == st.st_size
    os.utime(teacher_file, ns=(st.st_atime_ns, st.st_mtime_ns))

    from tasb_ray import fileio
    fileio._CONTENT_MEMO.clear()  # a new process: the memo is per process
    with caplog.at_level(logging.INFO, logger="tasb_ray.pipeline.cache"):
        rebuilt, _ = pairs_stage(cfg, ds)
    assert rebuilt != first
    assert any("teacher_files" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    old, new = read_pairs(first / "pairs.parquet"), read_pairs(rebuilt / "pairs.parquet")
    assert not old[["pos_score", "neg_score"]].equals(new[["pos_score", "neg_score"]])


def test_missing_teacher_file_is_one_line(tmp_path, tiny_beir, tiny_model):
    cfg = _file_config(tmp_path, tiny_beir, tiny_model, tmp_path / "absent.tsv")
    with pytest.raises(Exception, match=r"absent\.tsv: teacher score file not found"):
        pairs_stage(cfg, open_data(cfg))


def test_why_rebuilt_names_the_differing_inputs(tmp_path):
    (tmp_path / "pairs-aaa").mkdir()
    (tmp_path / "pairs-aaa" / "stage.json").write_text('{"inputs": {"a": 1, "b": {"c": 2}}, "info": {}}')
    assert why_rebuilt(tmp_path, "pairs", {"a": 1, "b": {"c": 3}}) == "differs from pairs-aaa in b.c"
    assert why_rebuilt(tmp_path, "clusters", {}) == "no earlier stage"


def test_a_model_retrained_in_place_rebuilds_the_clusters_stage(tmp_path, tiny_beir, tiny_model):
    import json
    import shutil

    from tasb_ray.pipeline.run import clusters_stage

    model = tmp_path / "student"
    shutil.copytree(tiny_model, model)
    raw = _config(tmp_path, tiny_beir, model)
    cfg = from_dict(TrainingConfig, raw)
    ds = open_data(cfg)
    first, _ = clusters_stage(cfg, ds)
    assert clusters_stage(cfg, ds)[0] == first
    config = json.loads((model / "config.json").read_text())
    config["retrained"] = True  # same path, other content
    (model / "config.json").write_text(json.dumps(config))
    assert clusters_stage(cfg, ds)[0] != first


def test_float16_teacher_vectors_key_the_pairs_stage_only_when_they_score_it(tmp_path, tiny_beir, tiny_model):
    from tasb_ray.pipeline.cache import StageNotPrepared

    raw = _config(tmp_path, tiny_beir, tiny_model)
    cfg = from_dict(TrainingConfig, raw)
    ds = open_data(cfg)
    bm25, _ = pairs_stage(cfg, ds)
    # No bi-encoder in the pairwise teacher: the stored dtype cannot change its scores, so the key stays.
    half = from_dict(TrainingConfig, {**raw, "teachers": {**raw["teachers"], "vector_dtype": "float16"}})
    assert pairs_stage(half, ds, require_cached=True)[0] == bm25

    bi = {"kind": "bi-encoder", "model": str(tiny_model), "max_query_len": 12, "max_passage_len": 24}
    teachers = {**raw["teachers"], "pairwise": bi}
    full = from_dict(TrainingConfig, {**raw, "teachers": teachers})
    first, _ = pairs_stage(full, ds)
    assert first != bm25
    # float32 is the default: the key a float32 config had before vector_dtype existed (no "vector_dtype" input).
    assert "vector_dtype" not in json.loads((first / "stage.json").read_text())["inputs"]
    half = from_dict(TrainingConfig, {**raw, "teachers": {**teachers, "vector_dtype": "float16"}})
    with pytest.raises(StageNotPrepared):
        pairs_stage(half, ds, require_cached=True)
    second, _ = pairs_stage(half, ds)
    assert second != first
    old, new = read_pairs(first / "pairs.parquet"), read_pairs(second / "pairs.parquet")
    assert old[["qid", "pos_pid", "neg_pid"]].equals(new[["qid", "pos_pid", "neg_pid"]])
    assert not old["pos_score"].equals(new["pos_score"])
