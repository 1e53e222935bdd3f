"""Deterministic synthetic data in MS MARCO passage ranking's layout, at a fraction of its size.

    python benchmarks/msmarco_synth.py --scale 0.01 --out /tmp/msmarco-0.01 --seed 0

Writes, at ``--scale 1.0``, as many lines as the real files (see :data:`MSMARCO`):

* ``collection.tsv``        ``pid<TAB>text``, pids 0..N-1, ~56 words per passage (log-normal, long-tailed);
* ``queries.train.tsv``     ``qid<TAB>text``, 808,731 queries, of which 502,939 are judged;
* ``qrels.train.tsv``       ``qid<TAB>0<TAB>pid<TAB>1`` (MS MARCO's own qrels use tabs; TREC readers split on
  any whitespace), 532,761 lines;
* ``queries.dev.small.tsv`` / ``qrels.dev.small.tsv``: 6,980 queries, ~7,437 judgements;
* ``teacher.train.tsv``     the TAS-B authors' ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``, ~79
  triples per judged training query (~39.78M lines);
* ``msmarco_synth.json``    the parameters and the counts written.

``tasb-ray prepare-data DIR`` reads the directory as an MS MARCO one: the split of ``qrels.X.Y.tsv`` is the first
dotted part, so ``qrels.dev.small.tsv`` is split ``dev`` and ``qrels.train.tsv`` split ``train``.

The data has planted structure, so topic clustering and margin sampling have something to find:
``n_topics`` topics (2,000 by default), each with its own vocabulary of synthetic words (consonant-vowel
syllables), plus common words shared by all. A passage or query draws most words from its topic's vocabulary
(Zipf-distributed) and the rest from the common words. A judged query's positives are passages of its topic
with the query's words planted in them. Teacher triples pair a positive with a negative that is a passage of
the query's topic (a hard negative) or a random one; scores are a noisy function of a hidden relevance (high
for positives, middling for same-topic negatives, low for random ones) plus a per-query offset, quantised to
float16 like the authors' scores, so margins are mostly positive with a spread over the margin bins.

Everything streams in fixed-size chunks: memory holds the per-query plan (O(queries)) and one chunk (peak RSS
428 MiB at scale 0.01, 460 MiB at 0.1; scale 1.0 wrote a 2.8 GB collection and a 1.7 GB teacher file in 240 s on
the shared 2-core box, peak RSS not measured). Each chunk draws from its own ``numpy`` generator seeded by (seed,
stream, chunk), so a seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasb_ray.fileio import atomic_path, write_json

#: Line counts of the real files (MS MARCO passage v1; the teacher file is the authors' pairwise file).
MSMARCO = {
    "passages": 8_841_823,
    "train_queries": 808_731,
    "judged_train_queries": 502_939,
    "train_qrels": 532_761,
    "dev_queries": 6_980,
    "dev_qrels": 7_437,
    "teacher_lines": 39_780_000,
}
FORMAT_VERSION = 1

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_SYLLABLES = [c + v for c in _CONSONANTS for v in _VOWELS]  # 90; words are syllable strings, so they parse uniquely

# Fixed chunk sizes: the bytes written depend on them, so they are constants, not options.
PASSAGE_CHUNK = 32_768
QUERY_CHUNK = 65_536
TEACHER_QUERY_CHUNK = 16_384

# Streams of the per-chunk generators.
_PLAN, _PASSAGES, _TEACHER = 1, 2, 3

PASSAGE_WORDS_MEAN = 56.0
PASSAGE_WORDS_SIGMA = 0.45  # log-normal: median ~51, 1% over ~150 words
PASSAGE_TOPIC_SHARE = 0.45  # of a passage's words from its topic's vocabulary
QUERY_TOPIC_SHARE = 0.7
PLANT_SHARE = 0.8  # of a query's words planted into each of its positives
HARD_NEGATIVE_SHARE = 0.6  # of teacher negatives drawn from the query's topic


@dataclass
class Counts:
    passages: int
    train_queries: int
    judged_train_queries: int
    train_qrels: int
    dev_queries: int
    dev_qrels: int
    teacher_lines: int

    @classmethod
    def at_scale(cls, scale: float) -> "Counts":
        if not 0 < scale <= 10:
            raise ValueError(f"scale must be in (0, 10], got {scale}")
        c = {k: max(1, round(v * scale)) for k, v in MSMARCO.items()}
        c["passages"] = max(c["passages"], 100)
        c["judged_train_queries"] = min(c["judged_train_queries"], c["train_queries"])
        c["train_qrels"] = max(c["train_qrels"], c["judged_train_queries"])
        c["dev_qrels"] = max(c["dev_qrels"], c["dev_queries"])
        c["teacher_lines"] = max(c["teacher_lines"], c["judged_train_queries"])
        return cls(**c)


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, chunk])


def _ragged_arange(counts: np.ndarray) -> np.ndarray:
    """``concat(arange(c) for c in counts)`` without a Python loop."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) - np.repeat(ends - counts, counts)


def _zipf_cdf(n: int, s: float = 1.0) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return np.cumsum(p / p.sum())


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _distinct(rng: np.random.Generator, high: int, size: int) -> np.ndarray:
    """``size`` distinct integers in [0, high), in random order, in O(size) memory."""
    out = np.empty(0, np.int64)
    while len(out) < size:
        out = np.unique(np.concatenate([out, rng.integers(0, high, size - len(out) + 16)]))
    return rng.permutation(out)[:size]


class Vocabulary:
    """Common words (ids 0..C-1, 1-2 syllables) then ``words_per_topic`` words per topic (3-4 syllables).

    Word ``w`` is stored in ``flat`` as ``" " + word`` at ``start[w]``, ``length[w]`` bytes with the space, so a
    text renders by gathering bytes (see :func:`render_texts`).
    """

    def __init__(self, rng: np.random.Generator, n_common: int, n_topics: int, words_per_topic: int):
        s = len(_SYLLABLES)
        n_short = min(s, n_common // 10)
        n_topical = n_topics * words_per_topic
        topical = n_common + np.arange(n_topical)
        # The most frequent common words are the shortest (as with "the", "of"); topic words alternate 3 and 4
        # syllables: ~5.8 bytes a word with its space, ~330 bytes a passage, as in MS MARCO.
        groups = [(np.arange(n_short), 1), (np.arange(n_short, n_common), 2),
                  (topical[0::2], 3), (topical[1::2], 4)]
        syllables = np.frombuffer("".join(_SYLLABLES).encode(), np.uint8).reshape(s, 2)
        self.length = np.empty(n_common + n_topical, np.int64)
        spelled = []
        for ids, n_syl in groups:
            keys = _distinct(rng, s ** n_syl, len(ids))
            block = np.full((len(ids), 1 + 2 * n_syl), ord(" "), np.uint8)
            for i in range(n_syl):
                block[:, 1 + 2 * i:3 + 2 * i] = syllables[(keys // s ** i) % s]
            self.length[ids] = block.shape[1]
            spelled.append((ids, block))
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]]).astype(np.int64)
        self.flat = np.empty(int(self.length.sum()), np.uint8)
        for ids, block in spelled:
            self.flat[self.start[ids][:, None] + np.arange(block.shape[1])] = block
        self.n_common = n_common
        self.words_per_topic = words_per_topic
        self.common_cdf = _zipf_cdf(n_common, 1.0)
        self.topic_cdf = _zipf_cdf(words_per_topic, 0.9)

    def __len__(self) -> int:
        return len(self.length)

    def word(self, i: int) -> str:
        return self.flat[self.start[i] + 1:self.start[i] + self.length[i]].tobytes().decode()

    def sample(self, rng: np.random.Generator, topics: np.ndarray, topic_share: float) -> np.ndarray:
        """One word id per entry of ``topics``: from that topic's words with probability ``topic_share``."""
        out = np.empty(len(topics), np.int32)
        topical = rng.random(len(topics)) < topic_share
        n_top = int(topical.sum())
        out[topical] = self.n_common + topics[topical] * self.words_per_topic + _draw(self.topic_cdf, rng, n_top)
        out[~topical] = _draw(self.common_cdf, rng, len(topics) - n_top)
        return out


def render_texts(vocab: Vocabulary, words: np.ndarray, lengths: np.ndarray) -> pa.StringArray:
    """Texts of ``lengths[i]`` consecutive word ids each, words joined by one space, as an Arrow string array.

    Gathers bytes with one index array instead of joining Python strings (~3 GB of text at scale 1).
    """
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    src = vocab.start[words]
    size = vocab.length[words]
    src[first] += 1  # a text's first word drops its leading space
    size[first] -= 1
    out_start = np.concatenate([[0], np.cumsum(size)]).astype(np.int64)
    total = int(out_start[-1])
    data = vocab.flat[np.repeat(src - out_start[:-1], size) + np.arange(total, dtype=np.int64)]
    offsets = np.append(out_start[first], total).astype(np.int32)
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data))


class TopicLayout:
    """Which passages belong to which topic, in O(topics) memory.

    Passage ``pid`` sits at slot ``(a * pid + b) mod N`` of a line cut into one run of slots per topic (sizes
    long-tailed), so ``topic_of`` and ``passages_of`` (the inverse map) are arithmetic, with no per-passage table.
    """

    def __init__(self, rng: np.random.Generator, n_passages: int, n_topics: int):
        self.n = n_passages
        weight = 1.0 / (np.arange(n_topics) + 10.0) ** 0.8
        self.popularity = weight / weight.sum()
        sizes = 1 + np.floor(self.popularity * (n_passages - n_topics)).astype(np.int64)
        sizes[: n_passages - int(sizes.sum())] += 1
        self.first_slot = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        while True:
            a = int(rng.integers(n_passages // 3, n_passages))
            if math.gcd(a, n_passages) == 1:
                break
        self.a, self.b = a, int(rng.integers(n_passages))
        self.a_inv = pow(a, -1, n_passages)

    def topic_of(self, pids: np.ndarray) -> np.ndarray:
        slots = (self.a * pids.astype(np.int64) + self.b) % self.n
        return (np.searchsorted(self.first_slot, slots, side="right") - 1).astype(np.int32)

    def random_passages(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        lo, hi = self.first_slot[topics], self.first_slot[topics + 1]
        slots = lo + (rng.random(len(topics)) * (hi - lo)).astype(np.int64)
        return ((slots - self.b) * self.a_inv) % self.n


@dataclass
class Plan:
    """Everything decided per query (O(queries) memory); the files are rendered from it chunk by chunk."""

    counts: Counts
    vocab: Vocabulary
    layout: TopicLayout
    qids: np.ndarray  # train queries, then dev queries
    query_topic: np.ndarray
    query_word_offsets: np.ndarray  # query i's words: query_words[offsets[i]:offsets[i+1]]
    query_words: np.ndarray
    judged: np.ndarray  # indices of judged queries: judged train queries (in teacher order), then dev queries
    pos_offsets: np.ndarray  # positives of judged[j]: pos_pid[pos_offsets[j]:pos_offsets[j+1]]
    pos_pid: np.ndarray
    pos_relevance: np.ndarray  # hidden relevance of each positive, for the teacher scores
    triples_per_query: np.ndarray  # per judged train query

    @property
    def n_judged_train(self) -> int:
        return self.counts.judged_train_queries


def make_plan(scale: float, seed: int = 0, n_topics: int = 2000, words_per_topic: int = 150,
              n_common: int = 600) -> Plan:
    counts = Counts.at_scale(scale)
    rng = _rng(seed, _PLAN)
    n_topics = max(1, min(n_topics, counts.passages // 4))
    vocab = Vocabulary(rng, n_common, n_topics, words_per_topic)
    layout = TopicLayout(rng, counts.passages, n_topics)

    n_q = counts.train_queries + counts.dev_queries
    qids = _distinct(rng, 2 * n_q + 10, n_q)  # sparse ids like MS MARCO's
    topic_cdf = np.cumsum(layout.popularity)
    query_topic = _draw(topic_cdf, rng, n_q).astype(np.int32)
    qlen = np.clip(2 + rng.poisson(4.0, n_q), 2, 24)  # MS MARCO queries: ~6 words
    offsets = np.concatenate([[0], np.cumsum(qlen)]).astype(np.int64)
    words = vocab.sample(rng, np.repeat(query_topic, qlen), QUERY_TOPIC_SHARE)

    judged_train = rng.permutation(counts.train_queries)[: counts.judged_train_queries]
    judged = np.concatenate([judged_train, np.arange(counts.train_queries, n_q)]).astype(np.int64)
    n_pos = np.ones(len(judged), np.int64)
    j_train, j_dev = counts.judged_train_queries, counts.dev_queries
    n_pos[:j_train] += np.bincount(rng.integers(0, j_train, counts.train_qrels - j_train), minlength=j_train)
    n_pos[j_train:] += np.bincount(rng.integers(0, j_dev, counts.dev_qrels - j_dev), minlength=j_dev)
    pos_offsets = np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64)
    owner = np.repeat(np.arange(len(judged)), n_pos)
    pos_topic = query_topic[judged][owner]
    pos_pid = layout.random_passages(rng, pos_topic)
    # A query judges a passage once: redraw repeats (a query of a small topic may exhaust it; then keep fewer).
    for _ in range(20):
        key = owner * counts.passages + pos_pid
        _, first = np.unique(key, return_index=True)
        dup = np.ones(len(key), bool)
        dup[first] = False
        if not dup.any():
            break
        pos_pid[dup] = layout.random_passages(rng, pos_topic[dup])
    else:
        keep = ~dup
        pos_pid, owner = pos_pid[keep], owner[keep]
        pos_offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(judged)))]).astype(np.int64)
    pos_relevance = rng.beta(8.0, 2.0, len(pos_pid))

    extra = counts.teacher_lines - j_train
    triples = 1 + rng.multinomial(extra, np.full(j_train, 1.0 / j_train)) if extra else np.ones(j_train, np.int64)
    return Plan(counts, vocab, layout, qids, query_topic, offsets, words, judged, pos_offsets, pos_pid,
                pos_relevance, triples.astype(np.int64))


_WRITE = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none", batch_size=1 << 16)


class _TsvWriter:
    """Atomic Arrow CSV writer: the file appears under its name only once complete."""

    def __init__(self, path: Path, schema: pa.Schema):
        self._atomic = atomic_path(path)
        tmp = self._atomic.__enter__()
        self._writer = pacsv.CSVWriter(str(tmp), schema, write_options=_WRITE)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._writer.close()
        return self._atomic.__exit__(*exc)


def _write_collection(plan: Plan, path: Path, seed: int, progress: Callable[[str, int, int], None]) -> None:
    n = plan.counts.passages
    vocab, layout = plan.vocab, plan.layout
    # Positives sorted by pid, with their query, to plant the query's words when the passage's chunk is made.
    owner = np.repeat(plan.judged, np.diff(plan.pos_offsets))
    order = np.argsort(plan.pos_pid, kind="stable")
    plant_pid, plant_query = plan.pos_pid[order], owner[order]
    mu = math.log(PASSAGE_WORDS_MEAN) - PASSAGE_WORDS_SIGMA ** 2 / 2
    schema = pa.schema([("pid", pa.int64()), ("text", pa.string())])
    with _TsvWriter(path, schema) as out:
        for c, p0 in enumerate(range(0, n, PASSAGE_CHUNK)):
            rng = _rng(seed, _PASSAGES, c)
            pids = np.arange(p0, min(n, p0 + PASSAGE_CHUNK), dtype=np.int64)
            lengths = np.clip(np.rint(rng.lognormal(mu, PASSAGE_WORDS_SIGMA, len(pids))), 4, 300).astype(np.int64)
            words = vocab.sample(rng, np.repeat(layout.topic_of(pids), lengths), PASSAGE_TOPIC_SHARE)
            lo, hi = np.searchsorted(plant_pid, [pids[0], pids[-1] + 1])
            if hi > lo:
                q = plant_query[lo:hi]
                qlen = plan.query_word_offsets[q + 1] - plan.query_word_offsets[q]
                which = np.repeat(np.arange(hi - lo), qlen)
                qwords = plan.query_words[plan.query_word_offsets[q][which] + _ragged_arange(qlen)]
                local = plant_pid[lo:hi][which] - p0
                first = np.cumsum(lengths) - lengths
                at = first[local] + (rng.random(len(which)) * lengths[local]).astype(np.int64)
                keep = rng.random(len(which)) < PLANT_SHARE
                words[at[keep]] = qwords[keep]
            out.write(pa.table([pa.array(pids), render_texts(vocab, words, lengths)], schema=schema))
            progress("collection.tsv", int(pids[-1]) + 1, n)


def _write_queries(plan: Plan, path: Path, lo: int, hi: int) -> None:
    schema = pa.schema([("qid", pa.int64()), ("text", pa.string())])
    with _TsvWriter(path, schema) as out:
        for a in range(lo, hi, QUERY_CHUNK):
            b = min(hi, a + QUERY_CHUNK)
            off = plan.query_word_offsets
            words = plan.query_words[off[a]:off[b]]
            out.write(pa.table([pa.array(plan.qids[a:b]), render_texts(plan.vocab, words, np.diff(off[a:b + 1]))],
                               schema=schema))


def _write_qrels(plan: Plan, path: Path, first: int, last: int) -> None:
    """TREC qrels for judged[first:last], one line per positive, tab-separated as in MS MARCO's files."""
    lo, hi = plan.pos_offsets[first], plan.pos_offsets[last]
    owner = np.repeat(plan.judged[first:last], np.diff(plan.pos_offsets[first:last + 1]))
    table = pa.table({"qid": plan.qids[owner], "iter": np.zeros(hi - lo, np.int64), "pid": plan.pos_pid[lo:hi],
                      "rel": np.ones(hi - lo, np.int64)})
    with _TsvWriter(path, table.schema) as out:
        out.write(table)


def _write_teacher(plan: Plan, path: Path, seed: int, progress: Callable[[str, int, int], None]) -> None:
    n, j_train = plan.counts.passages, plan.n_judged_train
    total = int(plan.triples_per_query.sum())
    schema = pa.schema([("pos_score", pa.float32()), ("neg_score", pa.float32()), ("qid", pa.int64()),
                        ("pos_pid", pa.int64()), ("neg_pid", pa.int64())])
    # (judged index, pid) of every training positive, sorted, to keep positives out of the negatives.
    pos_owner = np.repeat(np.arange(j_train), np.diff(plan.pos_offsets[: j_train + 1]))
    pos_keys = np.sort(pos_owner * n + plan.pos_pid[: len(pos_owner)])
    written = 0
    with _TsvWriter(path, schema) as out:
        for c, j0 in enumerate(range(0, j_train, TEACHER_QUERY_CHUNK)):
            rng = _rng(seed, _TEACHER, c)
            j = np.arange(j0, min(j_train, j0 + TEACHER_QUERY_CHUNK))
            k = plan.triples_per_query[j]
            jj = np.repeat(j, k)
            query = plan.judged[jj]
            topic = plan.query_topic[query]
            n_pos = plan.pos_offsets[jj + 1] - plan.pos_offsets[jj]
            pos_at = plan.pos_offsets[jj] + (rng.random(len(jj)) * n_pos).astype(np.int64)
            hard = rng.random(len(jj)) < HARD_NEGATIVE_SHARE
            neg = np.where(hard, plan.layout.random_passages(rng, topic), rng.integers(0, n, len(jj)))
            for _ in range(100):
                key = jj * n + neg
                at = np.minimum(np.searchsorted(pos_keys, key), len(pos_keys) - 1)
                clash = pos_keys[at] == key
                if not clash.any():
                    break
                neg[clash] = rng.integers(0, n, int(clash.sum()))
                hard[clash] = False
            else:
                raise RuntimeError("could not draw negatives outside the positives (scale too small)")
            # Hidden relevance: positives high, same-topic negatives middling, random ones low; the teacher sees it
            # through a per-query offset and noise.
            neg_rel = np.where(hard, rng.beta(2.0, 3.0, len(jj)), rng.beta(1.0, 12.0, len(jj)))
            offset = rng.normal(0.0, 1.5, len(j))[jj - j0]
            pos_score = offset + 10.0 * plan.pos_relevance[pos_at] + rng.normal(0.0, 0.05, len(jj)) - 2.0
            neg_score = offset + 10.0 * neg_rel + rng.normal(0.0, 1.2, len(jj)) - 2.0
            order = rng.permutation(len(jj))  # triples of a query in random order, queries kept together
            order = order[np.argsort(jj[order], kind="stable")]
            out.write(pa.table([
                pa.array(pos_score[order].astype(np.float16).astype(np.float32)),
                pa.array(neg_score[order].astype(np.float16).astype(np.float32)),
                pa.array(plan.qids[query[order]]), pa.array(plan.pos_pid[pos_at[order]]), pa.array(neg[order]),
            ], schema=schema))
            written += len(jj)
            progress("teacher.train.tsv", written, total)


def write_teacher_file(path: str | Path, lines: int, seed: int = 0, log: Callable[[str], None] = lambda s: None) -> int:
    """Only the teacher file, at the scale that gives about ``lines`` lines (for ingestion benchmarks): the same
    bytes as that scale's ``teacher.train.tsv``. Returns the lines written."""
    plan = make_plan(lines / MSMARCO["teacher_lines"], seed)
    t0 = time.perf_counter()
    _write_teacher(plan, Path(path), seed, lambda name, done, total: log(
        f"[{time.perf_counter() - t0:7.1f}s] {Path(path).name}: {done:,}/{total:,} lines") if done == total else None)
    return int(plan.triples_per_query.sum())


def generate(out: str | Path, scale: float, seed: int = 0, n_topics: int = 2000,
             log: Callable[[str], None] = lambda s: None) -> dict:
    """Write the files (see the module docstring) under ``out`` and return their line counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    last = [0.0]

    def progress(name: str, done: int, total: int) -> None:
        now = time.perf_counter() - t0
        if done == total or now - last[0] >= 5:
            last[0] = now
            log(f"[{now:7.1f}s] {name}: {done:,}/{total:,} lines ({100 * done / total:.0f}%)")

    plan = make_plan(scale, seed, n_topics=n_topics)
    c = plan.counts
    log(f"[{time.perf_counter() - t0:7.1f}s] plan: {c.passages:,} passages, {c.train_queries:,} train queries "
        f"({c.judged_train_queries:,} judged), {c.dev_queries:,} dev queries, {len(plan.layout.popularity):,} topics")
    _write_collection(plan, out / "collection.tsv", seed, progress)
    n_train, j_train = c.train_queries, c.judged_train_queries
    _write_queries(plan, out / "queries.train.tsv", 0, n_train)
    _write_queries(plan, out / "queries.dev.small.tsv", n_train, n_train + c.dev_queries)
    _write_qrels(plan, out / "qrels.train.tsv", 0, j_train)
    _write_qrels(plan, out / "qrels.dev.small.tsv", j_train, len(plan.judged))
    log(f"[{time.perf_counter() - t0:7.1f}s] queries and qrels written")
    _write_teacher(plan, out / "teacher.train.tsv", seed, progress)
    lines = {
        "collection.tsv": c.passages,
        "queries.train.tsv": n_train,
        "queries.dev.small.tsv": c.dev_queries,
        "qrels.train.tsv": int(plan.pos_offsets[j_train]),
        "qrels.dev.small.tsv": int(plan.pos_offsets[-1] - plan.pos_offsets[j_train]),
        "teacher.train.tsv": int(plan.triples_per_query.sum()),
    }
    write_json(out / "msmarco_synth.json", {"format_version": FORMAT_VERSION, "scale": scale, "seed": seed,
                                            "topics": len(plan.layout.popularity), "lines": lines})
    log(f"[{time.perf_counter() - t0:7.1f}s] done: {out}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Files: collection.tsv, queries.train.tsv, qrels.train.tsv, "
                                        "queries.dev.small.tsv, qrels.dev.small.tsv, teacher.train.tsv, "
                                        "msmarco_synth.json. Scale 1.0 = MS MARCO's line counts.")
    ap.add_argument("--scale", type=float, required=True, help="fraction of MS MARCO's size (1.0 = 8,841,823 passages)")
    ap.add_argument("--out", required=True, help="output directory (created; files in it are replaced)")
    ap.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    ap.add_argument("--topics", type=int, default=2000, help="planted topics (default 2000)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    if not 0 < args.scale <= 10:
        ap.error(f"--scale must be in (0, 10], got {args.scale}")
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    lines = generate(args.out, args.scale, args.seed, n_topics=args.topics, log=log)
    for name, n in lines.items():
        print(f"{n:>12,}  {Path(args.out) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
