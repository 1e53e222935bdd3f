"""FileTeacher on integer codes: the same scores as a (qid, pid) string groupby, for every way a score file comes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasb_ray.errors import DataFormatError, TasbRayError
from tasb_ray.teachers.precomputed import FileTeacher, export_tsv, read_scores


def string_means(pairs: pd.DataFrame) -> dict[tuple[str, str], float]:
    """The reference: one score per (qid, pid) string pair, the mean of its rows (positives, then negatives)."""
    pos = pairs[["qid", "pos_pid", "pos_score"]].set_axis(["qid", "pid", "score"], axis=1)
    neg = pairs[["qid", "neg_pid", "neg_score"]].set_axis(["qid", "pid", "score"], axis=1)
    points = pd.concat([pos, neg], ignore_index=True).astype({"qid": str, "pid": str})
    means = points.groupby(["qid", "pid"], sort=False)["score"].mean()
    return {k: float(v) for k, v in means.items()}


def random_pairs(seed: int = 0, n: int = 3000) -> pd.DataFrame:
    """Triples over few queries and passages, so (qid, pid) repeats often and with scores that differ a little
    (like the authors' fp16 scores of one pair in several batches); ids include non-canonical integers."""
    rng = np.random.default_rng(seed)
    qids = np.array([str(i) for i in range(40)] + ["007", "q-x"], dtype=object)
    pids = np.array([str(i) for i in range(300)] + ["0300", "p x"], dtype=object)
    return pd.DataFrame({"qid": qids[rng.integers(0, len(qids), n)], "pos_pid": pids[rng.integers(0, len(pids), n)],
                         "neg_pid": pids[rng.integers(0, len(pids), n)],
                         "pos_score": rng.normal(10, 3, n).astype(np.float16).astype(np.float64) + rng.random(n) * 1e-3,
                         "neg_score": rng.normal(0, 3, n)})


@pytest.mark.parametrize("form", ["frame", "tsv", "parquet-pairs", "parquet-points"])
def test_scores_equal_the_string_groupby_bit_for_bit(tmp_path, form):
    pairs = random_pairs()
    want = string_means(pairs)
    if form == "frame":
        teacher = FileTeacher(scores=pairs)
    elif form == "tsv":
        export_tsv(pairs, tmp_path / "t.tsv")
        # The TSV holds 6 decimals: the reference is the file as read back.
        want = string_means(pd.read_csv(tmp_path / "t.tsv", sep="\t", header=None, dtype={2: str, 3: str, 4: str},
                                        names=["pos_score", "neg_score", "qid", "pos_pid", "neg_pid"]))
        teacher = FileTeacher(tmp_path / "t.tsv")
    elif form == "parquet-pairs":
        pairs.to_parquet(tmp_path / "p.parquet", index=False)
        teacher = FileTeacher(tmp_path / "p.parquet")
    else:
        pos = pairs[["qid", "pos_pid", "pos_score"]].set_axis(["qid", "pid", "score"], axis=1)
        neg = pairs[["qid", "neg_pid", "neg_score"]].set_axis(["qid", "pid", "score"], axis=1)
        pd.concat([pos, neg], ignore_index=True).to_parquet(tmp_path / "s.parquet", index=False)
        teacher = FileTeacher(tmp_path / "s.parquet")
    assert len(teacher) == len(want) < 2 * len(pairs)  # repeats collapsed
    keys = list(want)
    got = teacher.lookup([q for q, _ in keys], [p for _, p in keys])
    assert got.tolist() == list(want.values())  # exact, not approximately
    if form == "frame":
        back = teacher._pairs.to_frame()
        assert dict(zip(zip(back["qid"], back["pid"]), back["score"])) == want


def test_numeric_id_columns_are_their_decimal_text(tmp_path):
    pairs = pd.DataFrame({"qid": [7, 7, 12], "pid": [100, 3, 100], "score": [1.5, 2.5, 3.0]})
    pairs.to_parquet(tmp_path / "s.parquet", index=False)
    teacher = FileTeacher(tmp_path / "s.parquet")
    assert teacher.lookup(["12", "7", "7"], ["100", "100", "3"]).tolist() == [3.0, 1.5, 2.5]
    assert teacher.lookup([12], [100]).tolist() == [3.0]
    with pytest.raises(TasbRayError, match="qid '07' pid '100'"):
        teacher.lookup(["07"], ["100"])  # "07" is another id than "7"
    assert read_scores(tmp_path / "s.parquet").sort_values(["qid", "pid"]).values.tolist() == \
        [["12", "100", 3.0], ["7", "100", 1.5], ["7", "3", 2.5]]


def test_unknown_ids_never_alias_a_known_pair():
    # Codes: qids a=0, b=1; pids x=0, y=1; key = q * 2 + p. An unknown pid (code -1) of qid b makes key 1: (a, y).
    teacher = FileTeacher(scores=pd.DataFrame({"qid": ["a", "a", "b"], "pid": ["x", "y", "x"],
                                               "score": [3.0, 4.0, 5.0]}))
    assert teacher.lookup(["a", "b", "a"], ["y", "x", "x"]).tolist() == [4.0, 5.0, 3.0]
    for qids, pids, named in ((["b"], ["zz"], "qid 'b' pid 'zz'"), (["zz"], ["x"], "qid 'zz' pid 'x'"),
                              (["b", "a", "b"], ["y", "y", "y"], "qid 'b' pid 'y' (and 1 more pairs)")):
        with pytest.raises(TasbRayError, match=named.replace("(", r"\(").replace(")", r"\)")):
            teacher.lookup(qids, pids)
    assert teacher.lookup([], []).tolist() == []


def test_missing_ids_name_the_file_and_column(tmp_path):
    pd.DataFrame({"qid": ["a", None], "pid": ["x", "y"], "score": [1.0, 2.0]}).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(DataFormatError, match=r"s\.parquet.*column 'qid' has 1 missing ids"):
        FileTeacher(tmp_path / "s.parquet")
    empty = FileTeacher(scores=pd.DataFrame({"qid": [], "pid": [], "score": []}))
    assert len(empty) == 0
    with pytest.raises(TasbRayError, match="no score for qid 'a'"):
        empty.lookup(["a"], ["x"])


def test_large_string_parquet_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"qid": pa.array(["a", "a"], pa.large_string()), "pos_pid": pa.array(["x", "y"]),
                             "neg_pid": pa.array(["y", "z"], pa.large_string()), "pos_score": [2.0, 4.0],
                             "neg_score": [1.0, 0.5]}), tmp_path / "p.parquet")
    teacher = FileTeacher(tmp_path / "p.parquet")
    assert teacher.lookup(["a", "a", "a"], ["x", "y", "z"]).tolist() == [2.0, 2.5, 0.5]
