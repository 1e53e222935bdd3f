"""The synthetic MS MARCO generator: layouts, counts, determinism, and that its planted structure is real."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasb_ray.data import teacher_file, trec
from tasb_ray.data.prepare import prepare_dataset

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "msmarco_synth.py"
SCALE = 0.0005
FILES = ("collection.tsv", "queries.train.tsv", "qrels.train.tsv", "queries.dev.small.tsv", "qrels.dev.small.tsv",
         "teacher.train.tsv")


def _load():
    spec = importlib.util.spec_from_file_location("msmarco_synth", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


synth = _load()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "msmarco"
    lines = synth.generate(out, SCALE, seed=3)
    return out, lines


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_counts_follow_msmarco_at_scale(generated):
    out, lines = generated
    c = synth.Counts.at_scale(SCALE)
    assert c.passages == round(8_841_823 * SCALE) and c.train_queries == round(808_731 * SCALE)
    want = {"collection.tsv": c.passages, "queries.train.tsv": c.train_queries,
            "queries.dev.small.tsv": c.dev_queries, "qrels.train.tsv": c.train_qrels,
            "qrels.dev.small.tsv": c.dev_qrels, "teacher.train.tsv": c.teacher_lines}
    assert lines == want
    for name in FILES:
        assert len(_lines(out / name)) == want[name], name
    meta = json.loads((out / "msmarco_synth.json").read_text())
    assert meta["lines"] == want and meta["seed"] == 3 and meta["scale"] == SCALE


def test_layouts(generated):
    out, _ = generated
    coll = _lines(out / "collection.tsv")
    assert [line.split("\t")[0] for line in coll] == [str(i) for i in range(len(coll))]
    words = np.array([len(line.split("\t")[1].split(" ")) for line in coll])
    assert 50 < words.mean() < 62 and np.median(words) < words.mean() and words.max() > 2.5 * words.mean()
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1].strip() == line.split("\t")[1] for line in coll)
    for name in ("qrels.train.tsv", "qrels.dev.small.tsv"):
        for line in _lines(out / name):
            qid, it, pid, rel = line.split("\t")
            assert (it, rel) == ("0", "1") and qid.isdigit() and pid.isdigit()
    for line in _lines(out / "teacher.train.tsv"):
        pos, neg, qid, p, n = line.split("\t")
        float(pos), float(neg), int(qid), int(p), int(n)


def test_prepare_data_reads_it_as_msmarco(generated, tmp_path):
    out, lines = generated
    ds = prepare_dataset(str(out), cache_dir=tmp_path / "cache")
    assert ds.manifest["source"]["kind"] == "msmarco"
    # qrels.dev.small.tsv is split 'dev' (the split is the first dotted part); no dev is carved from train.
    assert ds.splits == ["dev", "train"] and ds.manifest["dev_carved_from"] is None
    counts = ds.manifest["counts"]
    assert counts["corpus"] == lines["collection.tsv"]
    assert counts["queries"] == lines["queries.train.tsv"] + lines["queries.dev.small.tsv"]
    assert counts["splits"]["train"] == {"queries": synth.Counts.at_scale(SCALE).judged_train_queries,
                                         "qrels": lines["qrels.train.tsv"]}
    assert counts["splits"]["dev"]["qrels"] == lines["qrels.dev.small.tsv"]


def test_teacher_file_parses_and_refers_to_judged_pairs(generated):
    out, lines = generated
    pairs = teacher_file.read_teacher_tsv(out / "teacher.train.tsv")
    assert len(pairs) == lines["teacher.train.tsv"]
    qrels = trec.read_trec_qrels(out / "qrels.train.tsv")
    judged = set(zip(qrels["query_id"], qrels["doc_id"]))
    assert set(zip(pairs["qid"], pairs["pos_pid"])) <= judged
    assert not set(zip(pairs["qid"], pairs["neg_pid"])) & judged
    assert set(pairs["qid"]) == set(qrels["query_id"])
    per_query = pairs.groupby("qid").size()
    assert 60 < per_query.mean() < 100


def test_teacher_margins_are_signal_with_a_spread(generated):
    out, _ = generated
    t = teacher_file.read_teacher_table(out / "teacher.train.tsv")
    margin = (t["pos_score"].to_numpy() - t["neg_score"].to_numpy())
    assert margin.mean() > 3
    assert 0.75 < (margin > 0).mean() < 0.995  # mostly right, not always
    hist, _ = np.histogram(margin, bins=10)
    assert (hist > 0.01 * len(margin)).sum() >= 5  # spread over the margin bins, not one spike


def test_topics_are_planted(generated):
    out, _ = generated
    plan = synth.make_plan(SCALE, seed=3)
    queries = trec.read_queries_tsv(out / "queries.train.tsv")
    assert queries["query_id"].tolist() == [str(q) for q in plan.qids[: len(queries)]]
    words = [set(t.split()) for t in queries["text"]]
    topic = plan.query_topic[: len(queries)]
    same, across = [], []
    rng = np.random.default_rng(0)
    for i, j in combinations(rng.choice(len(words), 300, replace=False), 2):
        jac = len(words[i] & words[j]) / len(words[i] | words[j])
        (same if topic[i] == topic[j] else across).append(jac)
    assert len(same) >= 10
    assert np.mean(same) > 3 * np.mean(across)

    # A positive shares more of its query's words than the same query's negatives do.
    coll = trec.read_collection_tsv(out / "collection.tsv").set_index("doc_id")["text"]
    pairs = teacher_file.read_teacher_tsv(out / "teacher.train.tsv").drop_duplicates(["qid", "neg_pid"])
    qtext = queries.set_index("query_id")["text"]
    sample = pairs.sample(2000, random_state=0)

    def overlap(qids, pids):
        return np.mean([len(set(qtext[q].split()) & set(coll[p].split())) / len(set(qtext[q].split()))
                        for q, p in zip(qids, pids)])

    assert overlap(sample["qid"], sample["pos_pid"]) > overlap(sample["qid"], sample["neg_pid"]) + 0.3


def test_same_seed_same_bytes_other_seed_other_bytes(generated, tmp_path):
    out, _ = generated
    again = tmp_path / "again"
    synth.generate(again, SCALE, seed=3)
    for name in FILES + ("msmarco_synth.json",):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    synth.generate(other, SCALE, seed=4)
    for name in FILES:
        assert (other / name).read_bytes() != (out / name).read_bytes(), name


def test_cli_help_and_run(tmp_path):
    env_py = sys.executable
    help_ = subprocess.run([env_py, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--scale" in help_.stdout and "--seed" in help_.stdout
    run = subprocess.run([env_py, str(SCRIPT), "--scale", "0.0002", "--out", str(tmp_path / "d"), "--seed", "1"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "collection.tsv" in run.stderr and "done" in run.stderr  # progress lines
    assert len(_lines(tmp_path / "d" / "collection.tsv")) == round(8_841_823 * 0.0002)
    bad = subprocess.run([env_py, str(SCRIPT), "--scale", "0", "--out", str(tmp_path / "e")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--scale" in bad.stderr
    assert not list(tmp_path.glob("d/.*tmp*"))  # atomic writes leave no temporaries


def test_pairs_frame_matches_table(generated):
    out, _ = generated
    t = teacher_file.read_teacher_table(out / "teacher.train.tsv", block_size=50_000)
    pd.testing.assert_frame_equal(t.to_pandas(), teacher_file.read_teacher_tsv(out / "teacher.train.tsv"))


def test_teacher_ingest_benchmark_runs_and_reports_ratios(tmp_path):
    out = tmp_path / "ingest.md"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "teacher_ingest.py"), "--lines", "20000",
                          "--repeats", "1", "--skip-line-reader", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = out.read_text()
    assert "| pyarrow.csv.read_csv |" in report and "| read_teacher_tsv |" in report
    assert report.count("the peak RSS of the bare read") == 2 and "20,000 lines" in report
