"""Bad input through the command line: every row exits 2 with exactly one line on stderr, no traceback, and that
line names the file and line (or the field / flag) at fault. Runs in-process on tiny temp datasets."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
from beir_fixture import write_beir
from unreadable import deny_reads

from tasb_ray.cli import main
from tasb_ray.errors import run_guarded

CONFIG = "name: tiny\noptim:\n  lr: 1.0e-4\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TASB_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TASB_RAY_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def _dataset(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "tiny")


def _config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def _append_bad_byte(path: Path, line: bytes) -> int:
    """Append ``line`` (with a 0xff byte in it) to ``path``; return its line number."""
    data = path.read_bytes()
    path.write_bytes(data + line + b"\n")
    return data.count(b"\n") + 1


# Each case builds its inputs under tmp_path and returns (argv, what the one line must contain).

def corpus_not_utf8(tmp_path, monkeypatch):
    root = _dataset(tmp_path)
    n = _append_bad_byte(root / "corpus.jsonl", b'{"_id": "dx", "text": "bad \xff"}')
    return ["prepare-data", str(root)], [f"{root / 'corpus.jsonl'}:{n}: not valid UTF-8 (byte 0xff at column 28)"]


def queries_not_utf8(tmp_path, monkeypatch):
    root = _dataset(tmp_path)
    n = _append_bad_byte(root / "queries.jsonl", b'{"_id": "qx", "text": "\xff"}')
    return ["prepare-data", str(root)], [f"{root / 'queries.jsonl'}:{n}: not valid UTF-8 (byte 0xff at column 24)"]


def qrels_not_utf8(tmp_path, monkeypatch):
    root = _dataset(tmp_path)
    n = _append_bad_byte(root / "qrels" / "test.tsv", b"q00\td\xff\t1")
    return ["prepare-data", str(root)], [f"{root / 'qrels' / 'test.tsv'}:{n}: not valid UTF-8 (byte 0xff at column 6)"]


def corpus_unreadable(tmp_path, monkeypatch):
    root = _dataset(tmp_path)
    deny_reads(root / "corpus.jsonl", monkeypatch)
    return ["prepare-data", str(root)], [f"{root / 'corpus.jsonl'}: permission denied"]


def config_unreadable(tmp_path, monkeypatch):
    path = _config(tmp_path)
    deny_reads(path, monkeypatch)
    return ["train", str(path), "--print-config"], [f"{path}: permission denied"]


def config_not_utf8(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"name: tiny\nalpha: 0.5  # \xe9\n")
    return ["train", str(path), "--print-config"], [f"{path}:2: not valid UTF-8 (byte 0xe9 at column 15)"]


def config_nested_too_deeply(tmp_path, monkeypatch):
    path = _config(tmp_path, "name: " + "[" * 5000 + "]" * 5000 + "\n")
    return ["train", str(path), "--print-config"], [f"{path}: invalid YAML: nested too deeply"]


def set_value(item: str, *expected: str, name: str | None = None):
    def case(tmp_path, monkeypatch):
        return ["train", str(_config(tmp_path)), "--print-config", "--set", item], [f"--set {item!r}", *expected]
    case.__name__ = f"set {name or item}"
    return case


def evaluate_args(*args: str, expected: str):
    def case(tmp_path, monkeypatch):
        return ["evaluate", "--dataset", str(_dataset(tmp_path)), "--retriever", "bm25", *args], [expected]
    case.__name__ = f"evaluate {' '.join(args)}"
    return case


def evaluate_out_is_directory(tmp_path, monkeypatch):
    (tmp_path / "outdir").mkdir()
    return (["evaluate", "--dataset", str(_dataset(tmp_path)), "--retriever", "bm25", "--out", str(tmp_path / "outdir")],
            [f"--out {tmp_path / 'outdir'}: is a directory"])


def search_path_name_escapes(tmp_path, monkeypatch):
    write_beir(tmp_path / "search" / "base")
    (tmp_path / "search" / "inner").mkdir()
    monkeypatch.setenv("TASB_RAY_DATA", str(tmp_path / "search" / "inner"))
    return ["prepare-data", "../base"], ["'../base'", "may not contain '..'"]


def msmarco_qrels_without_split(tmp_path, monkeypatch):
    root = tmp_path / "marco"
    root.mkdir()
    (root / "collection.tsv").write_text("".join(f"{i}\tpassage {i}\n" for i in range(5)))
    (root / "queries.train.tsv").write_text("".join(f"{i}\tquestion {i}\n" for i in range(3)))
    (root / "qrels.tsv").write_text("".join(f"{i} 0 {i} 1\n" for i in range(3)))
    return ["prepare-data", str(root)], [f"{root / 'qrels.tsv'}: cannot tell the split from the name"]


def report_store_is_text_file(tmp_path, monkeypatch):
    text = tmp_path / "notes.txt"
    text.write_text("these are notes, not a database\n")
    return (["report", "--experiment", "seeds", "--tracking-uri", f"sqlite:///{text}", "--out", str(tmp_path / "r.html")],
            [f"{text}: not a SQLite database"])


def report_server_refused(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    return (["report", "--experiment", "seeds", "--tracking-uri", uri, "--out", str(tmp_path / "r.html")],
            [f"{uri}: tracking server not reachable"])


def report_store_is_foreign_sqlite(tmp_path, monkeypatch):
    import sqlite3

    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.commit()
    con.close()
    return (["report", "--experiment", "seeds", "--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "r.html")],
            [f"{db}: a SQLite database but not an MLflow tracking store"])


def model_not_found(command: str):
    def case(tmp_path, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        extra = ["--retriever", "dense"] if command == "evaluate" else ["--out", str(tmp_path / "emb")]
        return [command, "--dataset", str(_dataset(tmp_path)), *extra, "--model", "no-such-org/no-such-model"], \
            ["model 'no-such-org/no-such-model': cannot load it"]
    case.__name__ = f"{command}_model_not_found"
    return case


def number(override: str, expected: str):
    def case(tmp_path, monkeypatch):
        return ["train", str(_config(tmp_path)), "--print-config", "--set", override], [expected]
    case.__name__ = override
    return case


CASES = [
    corpus_not_utf8, queries_not_utf8, qrels_not_utf8, corpus_unreadable, config_unreadable, config_not_utf8,
    config_nested_too_deeply,
    set_value("alpha={", "invalid value"),
    set_value("a=!!python/object:os.system x", "could not determine a constructor"),
    set_value("alpha=" + "[" * 3000, "nested too deeply", name="alpha=[[[...(3000)"),
    evaluate_out_is_directory,
    evaluate_args("--k", "-5", expected="--k: must be an integer >= 1, got -5"),
    evaluate_args("--k", "0", expected="--k: must be an integer >= 1, got 0"),
    evaluate_args("--metrics", "nDCG@ten", expected="--metrics: unknown metric 'nDCG@ten'"),
    search_path_name_escapes, msmarco_qrels_without_split, report_store_is_text_file, report_server_refused,
    number("alpha=1e400", "alpha: must be a finite number >= 0, got inf"),
    number("optim.lr=-1.0", "optim.lr: must be a finite number > 0, got -1.0"),
    number("optim.lr=.nan", "optim.lr: must be a finite number > 0, got nan"),
    number("optim.epochs=-1", "optim.epochs: must be a finite number > 0 or null, got -1.0"),
    number("optim.warmup_steps=-1", "optim.warmup_steps: must be an integer >= 0, got -1"),
    number("optim.grad_clip=-1", "optim.grad_clip: must be a finite number > 0 or null, got -1.0"),
    number("eval.k=0", "eval.k: must be an integer >= 1, got 0"),
    number("eval.every=-7", "eval.every: must be an integer >= 0, got -7"),
    number("data.dev_fraction=7", "data.dev_fraction: must be a finite number in (0, 1), got 7.0"),
    number("teachers.pairwise={kind: bm25, k1: .nan}", "teachers.pairwise: teacher: k1: must be a finite number, got nan"),
    number("teachers.pairwise={kind: bm25, weight: .inf}", "weight: must be a finite number, got inf"),
    report_store_is_foreign_sqlite, model_not_found("evaluate"), model_not_found("encode-corpus"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_exit_2(case, tmp_path, monkeypatch, capsys):
    argv, expected = case(tmp_path, monkeypatch)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"tasb-ray {argv[0]}: error: "), err
    for part in expected:
        assert part in err, err


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.mkdir, (Path(self.marker),))


def test_planted_rng_state_on_resume_is_one_line(tmp_path, capsys):
    # The trainer's resume path, guarded as the CLI guards it (a full train run is too slow for this matrix).
    from tasb_ray.training.trainer import load_rng_state

    path = tmp_path / "checkpoint" / "rng.pt"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"torch": _Payload(str(tmp_path / "RAN"))}))
    assert run_guarded("tasb-ray train", lambda: load_rng_state(path)) == (None, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "RAN").exists()


def test_k_zero_used_to_write_an_empty_run(tmp_path, capsys):
    # The k=0 row above guards a silent failure: nothing may be written for it.
    root = _dataset(tmp_path)
    assert main(["evaluate", "--dataset", str(root), "--retriever", "bm25", "--k", "0",
                 "--out", str(tmp_path / "run.trec")]) == 2
    assert not (tmp_path / "run.trec").exists()
