"""Training triples and their teacher scores: the ``qid, pos_pid, neg_pid, pos_score, neg_score`` table.

Pipeline (each step a plain function, so a Ray Data stage can run the scoring on an actor pool and reuse the rest):

1. :func:`build_triples` — judged positives × negatives sampled from first-stage candidates.
2. :func:`unique_pairs` — each distinct (qid, pid) of the triples once; a passage that is the positive of many
   triples (or the negative of several positives) is scored once.
3. :func:`attach_texts` + :func:`query_batches` + ``teacher.score_batch`` — scored in batches that never split a
   query, because ensemble teachers normalise per query over the rows of a batch.
4. :func:`join_scores` — scores back onto the triples.

:func:`score_triples` runs 2–4 in process. References: Hofstätter et al., SIGIR 2021 (arXiv 2104.06967);
Margin-MSE, Hofstätter et al., arXiv 2010.02666.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tasb_ray.config import is_int
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.schema import DOC_ID, PAIRS_COLUMNS, QUERY_ID, RELEVANCE, TEXT
from tasb_ray.tables import FLOAT, ID, read_table, write_table

log = logging.getLogger(__name__)

TRIPLE_COLUMNS = ("qid", "pos_pid", "neg_pid")
PAIR_KEY = ("qid", "pid")


def _str_ids(s: pd.Series) -> np.ndarray:
    return s.astype(str).to_numpy(dtype=object)


def positive_grade_rule(value: int | str | None) -> int | str | None:
    """Check ``candidates.positive_grade``: None (any grade > 0), an integer N >= 1 (grade >= N) or ``"max"``."""
    if value is None or value == "max" or (is_int(value) and value >= 1):
        return value
    raise ConfigError(f"positive_grade must be null, 'max' or an integer >= 1, got {value!r}")


def build_triples(candidates: pd.DataFrame, qrels: pd.DataFrame, negatives_per_query: int, seed: int,
                  max_positives: int | None = None, exclude_judged: bool = True,
                  positive_grade: int | str | None = None, max_pairs_per_query: int | None = None) -> pd.DataFrame:
    """Every judged positive of a query paired with every one of its sampled negatives.

    Positives are qrels rows with ``relevance > 0`` (narrowed by ``positive_grade``). Negatives are the query's candidates minus its judged
    documents: the positives always, and with ``exclude_judged`` (default) also documents judged non-relevant
    (``relevance <= 0``), so that negatives are unjudged first-stage results as in MS MARCO training, the
    paper's setting, and graded collections whose lowest grades are debatable cannot leak them in.
    ``negatives_per_query`` negatives are drawn uniformly without replacement per query (all of them when
    fewer). Queries without a positive or without a negative are dropped and counted.

    Deterministic: candidates and qrels are reduced to sorted, de-duplicated sets first, so the result depends only
    on their content and ``seed``, never on row order. The result is sorted by ``qid, pos_pid, neg_pid``.

    The counts are logged and stored in ``result.attrs["stats"]``: ``queries`` (with positives or candidates),
    ``queries_kept``, ``dropped_no_positive``, ``dropped_no_negative``, ``positives``, ``negatives``, ``triples``.

    Args:
        candidates: ``qid, pid`` (other columns ignored), e.g. from
            :func:`tasb_ray.training.candidates.first_stage_candidates`.
        qrels: ``query_id, doc_id, relevance``.
        negatives_per_query: how many negatives to sample per query (>= 1).
        seed: seed of the numpy Generator that draws negatives (and positives beyond ``max_positives``).
        max_positives: keep at most this many positives per query, highest relevance first, ties drawn at random;
            ``None`` keeps all.
        exclude_judged: also exclude judged non-relevant documents from the negatives (see above).
        positive_grade: which judged documents are positives: None, any grade > 0; an integer N, grade >= N;
            ``"max"``, only the query's highest grade (graded collections whose grade 1 is loosely related).
            Documents with a grade > 0 that are not positives are still judged, so never negatives either.
        max_pairs_per_query: keep at most this many triples per query, drawn uniformly without replacement
            after all other choices (a query with 16 positives x 32 negatives would otherwise weigh 512 pairs);
            ``None`` keeps all. Its draws come after every other draw, so setting it leaves the others unchanged.
    """
    if not is_int(negatives_per_query) or negatives_per_query < 1:
        raise ConfigError(f"negatives_per_query must be an integer >= 1, got {negatives_per_query!r}")
    if max_positives is not None and (not is_int(max_positives) or max_positives < 1):
        raise ConfigError(f"max_positives must be an integer >= 1 or None, got {max_positives!r}")
    if max_pairs_per_query is not None and (not is_int(max_pairs_per_query) or max_pairs_per_query < 1):
        raise ConfigError(f"max_pairs_per_query must be an integer >= 1 or None, got {max_pairs_per_query!r}")
    positive_grade_rule(positive_grade)
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)

    judged = pd.DataFrame({"qid": _str_ids(qrels[QUERY_ID]), "pid": _str_ids(qrels[DOC_ID]),
                           "rel": qrels[RELEVANCE].to_numpy(dtype=np.float64)})
    # A doc judged twice counts with its highest grade.
    judged = judged.sort_values(["qid", "pid", "rel"], ascending=[True, True, False], kind="stable")
    judged = judged.drop_duplicates(["qid", "pid"]).reset_index(drop=True)
    positives = judged[judged["rel"] > 0]
    if positive_grade == "max":
        positives = positives[positives["rel"] == positives.groupby("qid")["rel"].transform("max")]
    elif positive_grade is not None:
        positives = positives[positives["rel"] >= positive_grade]
    if max_positives is not None:
        # Random tie-break key drawn over the sorted set, then highest grade first.
        positives = positives.assign(_key=rng.random(len(positives)))
        positives = positives.sort_values(["qid", "rel", "_key"], ascending=[True, False, True], kind="stable")
        positives = positives[positives.groupby("qid", sort=False).cumcount() < max_positives]
    positives = positives.sort_values(["qid", "pid"], kind="stable")[["qid", "pid"]].reset_index(drop=True)

    pool = pd.DataFrame({"qid": _str_ids(candidates["qid"]), "pid": _str_ids(candidates["pid"])})
    pool = pool.drop_duplicates().sort_values(["qid", "pid"], kind="stable").reset_index(drop=True)
    excluded = judged if exclude_judged else judged[judged["rel"] > 0]
    pool = pool.merge(excluded[["qid", "pid"]], on=["qid", "pid"], how="left", indicator=True)
    pool = pool[pool["_merge"] == "left_only"][["qid", "pid"]].reset_index(drop=True)
    # Uniform sampling without replacement, vectorised: give every candidate a random key and keep each query's
    # negatives_per_query smallest keys (a prefix of a uniform random permutation of the query's pool).
    pool["_key"] = rng.random(len(pool))
    pool = pool.sort_values(["qid", "_key"], kind="stable")
    negatives = pool[pool.groupby("qid", sort=False).cumcount() < negatives_per_query][["qid", "pid"]]

    pos_q, neg_q = set(positives["qid"]), set(negatives["qid"])
    all_q = pos_q | set(pool["qid"]) | set(judged["qid"])
    kept = pos_q & neg_q
    triples = positives[positives["qid"].isin(kept)].merge(negatives, on="qid", suffixes=("_pos", "_neg"))
    triples = triples.rename(columns={"pid_pos": "pos_pid", "pid_neg": "neg_pid"})
    triples = triples.sort_values(list(TRIPLE_COLUMNS), kind="stable").reset_index(drop=True)[list(TRIPLE_COLUMNS)]
    capped = 0
    if max_pairs_per_query is not None:
        key = rng.random(len(triples))
        order = np.lexsort((key, triples["qid"].to_numpy()))
        keep = np.zeros(len(triples), dtype=bool)
        keep[order[triples.iloc[order].groupby("qid", sort=False).cumcount().to_numpy() < max_pairs_per_query]] = True
        capped = int((~keep).sum())
        triples = triples[keep].reset_index(drop=True)

    stats = {
        "queries": len(all_q),
        "queries_kept": len(kept),
        "dropped_no_positive": len(all_q - pos_q),
        "dropped_no_negative": len(pos_q - neg_q),
        "positives": int(triples.drop_duplicates(["qid", "pos_pid"]).shape[0]),
        "negatives": int(triples.drop_duplicates(["qid", "neg_pid"]).shape[0]),
        "triples": len(triples),
        "triples_capped": capped,
    }
    triples.attrs["stats"] = stats
    if stats["dropped_no_positive"] or stats["dropped_no_negative"]:
        log.warning("build_triples dropped %d queries without a positive and %d without a negative (of %d)",
                    stats["dropped_no_positive"], stats["dropped_no_negative"], stats["queries"])
    log.info("build_triples: %s", stats)
    return triples


def unique_pairs(triples: pd.DataFrame) -> pd.DataFrame:
    """Distinct ``qid, pid`` of the triples (positives and negatives together), sorted by qid, pid.

    Args:
        triples: ``qid, pos_pid, neg_pid``.
    """
    qid = _str_ids(triples["qid"])
    pairs = pd.DataFrame({"qid": np.concatenate([qid, qid]),
                          "pid": np.concatenate([_str_ids(triples["pos_pid"]), _str_ids(triples["neg_pid"])])})
    return pairs.drop_duplicates().sort_values(list(PAIR_KEY), kind="stable").reset_index(drop=True)


def attach_texts(pairs: pd.DataFrame, queries: pd.DataFrame, corpus: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` (``qid, pid``) with ``query`` and ``passage`` text columns: the teacher's batch format.

    Args:
        pairs: ``qid, pid``.
        queries: ``query_id, text``.
        corpus: ``doc_id, text``.

    Raises:
        TasbRayError: naming the first query or passage id that has no text, and how many are missing.
    """
    qid = _str_ids(pairs["qid"])
    pid = _str_ids(pairs["pid"])
    return pd.DataFrame({"qid": qid, "pid": pid,
                         "query": _lookup(qid, queries, QUERY_ID, "query", "queries"),
                         "passage": _lookup(pid, corpus, DOC_ID, "passage", "corpus")})


def _lookup(ids: np.ndarray, table: pd.DataFrame, id_col: str, what: str, where: str) -> np.ndarray:
    index = pd.Index(_str_ids(table[id_col]))
    if not index.is_unique:
        # get_indexer needs unique keys; first occurrence wins, as a dict would give.
        keep = ~index.duplicated()
        index, texts = index[keep], table[TEXT].to_numpy(dtype=object)[keep]
    else:
        texts = table[TEXT].to_numpy(dtype=object)
    pos = index.get_indexer(ids)
    bad = pos < 0
    if bad.any():
        missing = pd.unique(ids[bad])
        raise TasbRayError(f"{what} id {missing[0]!r} is not in the {where} table "
                           f"({len(missing)} {what} id(s) missing)")
    return texts[pos]


def query_batches(qids: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges over rows grouped by qid, packing whole queries up to ``batch_size`` rows.

    A query with more than ``batch_size`` rows gets a batch of its own; a query is never split, so per-query
    normalising teachers see all of a query's rows together.

    Args:
        qids: qid per row; rows of one query must be contiguous (e.g. sorted).
        batch_size: target rows per batch (>= 1).
    """
    if not is_int(batch_size) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = len(qids)
    if n == 0:
        return []
    q = np.asarray(qids, dtype=object)
    starts = np.flatnonzero(np.concatenate(([True], q[1:] != q[:-1]))).tolist() + [n]
    if len(starts) - 1 != len(set(q.tolist())):
        raise TasbRayError("query_batches: rows of a query are not contiguous (sort by qid first)")
    out: list[tuple[int, int]] = []
    begin = 0
    for i in range(1, len(starts)):
        # Close the batch before a query that would overflow it (unless the batch is empty).
        if starts[i] - begin > batch_size and starts[i - 1] > begin:
            out.append((begin, starts[i - 1]))
            begin = starts[i - 1]
        if starts[i] - begin >= batch_size:
            out.append((begin, starts[i]))
            begin = starts[i]
    if begin < n:
        out.append((begin, n))
    return out


def score_pairs(pairs: pd.DataFrame, queries: pd.DataFrame, corpus: pd.DataFrame, teacher,
                batch_size: int = 256, show_progress: bool = False) -> pd.DataFrame:
    """Teacher scores of ``qid, pid`` pairs → ``qid, pid, score`` (sorted by qid, pid).

    Args:
        pairs: ``qid, pid``; duplicates are scored once.
        queries: ``query_id, text``.
        corpus: ``doc_id, text``.
        teacher: anything with ``score_batch(frame[qid, pid, query, passage]) -> array`` (one score per row).
        batch_size: rows per teacher call (whole queries; see :func:`query_batches`).
        show_progress: a tqdm bar over batches.
    """
    pairs = pd.DataFrame({"qid": _str_ids(pairs["qid"]), "pid": _str_ids(pairs["pid"])})
    pairs = pairs.drop_duplicates().sort_values(list(PAIR_KEY), kind="stable").reset_index(drop=True)
    frame = attach_texts(pairs, queries, corpus)
    scores = np.empty(len(frame), dtype=np.float64)
    ranges: Iterable[tuple[int, int]] = query_batches(frame["qid"].to_numpy(), batch_size)
    if show_progress:
        ranges = tqdm(ranges, desc="teacher scoring", unit="batch")
    for start, end in ranges:
        batch = frame.iloc[start:end].reset_index(drop=True)
        got = np.asarray(teacher.score_batch(batch), dtype=np.float64).reshape(-1)
        if len(got) != end - start:
            raise TasbRayError(f"teacher returned {len(got)} scores for a batch of {end - start} rows")
        scores[start:end] = got
    return pd.DataFrame({"qid": frame["qid"].to_numpy(), "pid": frame["pid"].to_numpy(), "score": scores})


def join_scores(triples: pd.DataFrame, scored_pairs: pd.DataFrame) -> pd.DataFrame:
    """Triples with ``pos_score`` and ``neg_score`` looked up in ``scored_pairs``, in the triples' row order.

    Args:
        triples: ``qid, pos_pid, neg_pid``.
        scored_pairs: ``qid, pid, score``, one row per pair.

    Raises:
        TasbRayError: a pair of the triples has no score, or a pair is scored twice.
    """
    key = pd.MultiIndex.from_arrays([_str_ids(scored_pairs["qid"]), _str_ids(scored_pairs["pid"])])
    if not key.is_unique:
        q, p = key[key.duplicated()][0]
        raise TasbRayError(f"scored pairs: ({q!r}, {p!r}) is scored more than once")
    score = scored_pairs["score"].to_numpy(dtype=np.float64)
    qid = _str_ids(triples["qid"])
    out = {"qid": qid}
    cols = {}
    for side in ("pos", "neg"):
        pid = _str_ids(triples[f"{side}_pid"])
        pos = key.get_indexer(pd.MultiIndex.from_arrays([qid, pid]))
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            raise TasbRayError(f"scored pairs: no score for query {qid[i]!r} and passage {pid[i]!r} "
                               f"({int((pos < 0).sum())} {side} rows unscored)")
        out[f"{side}_pid"] = pid
        cols[f"{side}_score"] = score[pos]
    out.update(cols)
    return pd.DataFrame(out)[list(PAIRS_COLUMNS)]


def score_triples(triples: pd.DataFrame, queries: pd.DataFrame, corpus: pd.DataFrame, teacher,
                  batch_size: int = 256, show_progress: bool = False) -> pd.DataFrame:
    """``qid, pos_pid, neg_pid, pos_score, neg_score``: each distinct (qid, pid) scored once by ``teacher``.

    Equal to scoring every pair in one teacher call, also for teachers that normalise per query, because batches
    hold whole queries.

    Args:
        triples: ``qid, pos_pid, neg_pid``.
        queries: ``query_id, text``.
        corpus: ``doc_id, text``.
        teacher: anything with ``score_batch`` (see :func:`score_pairs`).
        batch_size: rows per teacher call.
        show_progress: a tqdm bar over batches.
    """
    scored = score_pairs(unique_pairs(triples), queries, corpus, teacher, batch_size, show_progress)
    return join_scores(triples, scored)


def pair_stats(pairs: pd.DataFrame) -> dict:
    """Summary of a pairs table for logs: sizes and the teacher margin ``pos_score - neg_score``.

    Keys: ``queries, pairs, pairs_per_query_{mean,min,max}, margin_{mean,sd,min,max}, negative_margin_share``
    (the share of pairs whose teacher scores the negative above the positive). Plain Python numbers (JSON-ready);
    the distribution keys are None for an empty table.

    Args:
        pairs: ``qid, pos_pid, neg_pid, pos_score, neg_score``.
    """
    n = len(pairs)
    if n == 0:
        return {"queries": 0, "pairs": 0, **{k: None for k in (
            "pairs_per_query_mean", "pairs_per_query_min", "pairs_per_query_max", "margin_mean", "margin_sd",
            "margin_min", "margin_max", "negative_margin_share")}}
    per_query = pairs.groupby(pairs["qid"].astype(str), sort=False).size().to_numpy()
    margin = pairs["pos_score"].to_numpy(dtype=np.float64) - pairs["neg_score"].to_numpy(dtype=np.float64)
    return {
        "queries": int(len(per_query)),
        "pairs": int(n),
        "pairs_per_query_mean": float(per_query.mean()),
        "pairs_per_query_min": int(per_query.min()),
        "pairs_per_query_max": int(per_query.max()),
        "margin_mean": float(margin.mean()),
        "margin_sd": float(margin.std()),  # population sd (ddof 0): defined for a single pair too
        "margin_min": float(margin.min()),
        "margin_max": float(margin.max()),
        "negative_margin_share": float((margin < 0).mean()),
    }


TRIPLES_SCHEMA = {"qid": ID, "pos_pid": ID, "neg_pid": ID}
PAIRS_SCHEMA = {**TRIPLES_SCHEMA, "pos_score": FLOAT, "neg_score": FLOAT}


def write_triples(path: str | os.PathLike, triples: pd.DataFrame) -> None:
    write_table(path, triples, TRIPLES_SCHEMA)


def read_triples(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, TRIPLES_SCHEMA)


def write_pairs(path: str | os.PathLike, pairs: pd.DataFrame) -> None:
    """The scored pairs table (``PAIRS_COLUMNS``) as Parquet, atomically."""
    write_table(path, pairs, PAIRS_SCHEMA)


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, PAIRS_SCHEMA)
