"""Teachers: each kind against an independent computation, plus batching / matrix / Ray-protocol invariants."""

from __future__ import annotations

import shutil
import string

import numpy as np
import pandas as pd
import pytest
import torch

from tasb_ray.errors import ConfigError, DataFormatError, TasbRayError
from tasb_ray.teachers import TeacherActor, TeacherConfig, build_teacher, build_teacher_from_paths
from tasb_ray.teachers.base import cross_product_frame

CORPUS = pd.DataFrame({
    "doc_id": ["d0", "d1", "d2", "d3", "d4", "d5"],
    "text": ["Statins lower cholesterol and protect the heart.",
             "Heart attacks follow blocked coronary arteries, a cardiology study.",
             "Dopamine neurons in the brain signal reward.",
             "The cortex and synapse plasticity in neuroscience!",
             "Antibiotics kill bacteria; resistance is rising.",
             "Chemotherapy shrinks tumors, but metastasis remains hard."],
})
TEXT = dict(zip(CORPUS.doc_id, CORPUS.text))
QUERIES = {"q0": "do statins lower cholesterol", "q1": "dopamine and the brain", "q2": "how antibiotics kill bacteria"}
CANDIDATES = {"q0": ["d0", "d1", "d2", "d5"], "q1": ["d2", "d3", "d0"], "q2": ["d4", "d5", "d1", "d3"]}


def pairs_frame() -> pd.DataFrame:
    rows = [(q, p, QUERIES[q], TEXT[p]) for q, ps in CANDIDATES.items() for p in ps]
    return pd.DataFrame(rows, columns=["qid", "pid", "query", "passage"])


def score_table() -> pd.DataFrame:
    """Pointwise scores of every (query, doc): what the file teacher serves."""
    rng = np.random.default_rng(0)
    rows = [(q, d, float(rng.normal())) for q in QUERIES for d in TEXT]
    return pd.DataFrame(rows, columns=["qid", "pid", "score"])


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colbert_ckpt(tiny_model, tmp_path_factory):
    """A tiny public-layout ColBERT checkpoint: BERT weights under ``bert.`` plus ``linear.weight``."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("colbert")
    shutil.copytree(tiny_model, out, dirs_exist_ok=True)
    state = load_file(str(out / "model.safetensors"))
    state = {f"bert.{k}": v for k, v in state.items() if not k.startswith("pooler.")}  # colbertv2.0 has no pooler
    state["linear.weight"] = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    save_file(state, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def cross_ckpt(tiny_model, tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("cross")
    config = BertConfig.from_pretrained(tiny_model, num_labels=1)
    torch.manual_seed(2)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def score_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scores") / "scores.parquet"
    score_table().to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def configs(tiny_model, colbert_ckpt, cross_ckpt, score_file) -> dict[str, TeacherConfig]:
    small = dict(max_query_len=12, max_passage_len=24, batch_size=2)
    return {
        "bm25": TeacherConfig(kind="bm25"),
        "bi-encoder": TeacherConfig(kind="bi-encoder", model=str(tiny_model), **small),
        "colbert": TeacherConfig(kind="colbert", model=str(colbert_ckpt), **small),
        "colbert-plain": TeacherConfig(kind="colbert", model=str(tiny_model), **small),
        "cross-encoder": TeacherConfig(kind="cross-encoder", model=str(cross_ckpt), **small),
        "file": TeacherConfig(kind="file", path=str(score_file)),
        "ensemble": TeacherConfig.from_dict({"kind": "ensemble", "components": [
            {"kind": "bm25", "weight": 0.5},
            # ColBERT rather than the tiny bi-encoder: the random tiny BERT gives near-identical CLS vectors,
            # so its dot scores barely vary per query and z-normalisation would magnify float noise.
            {"kind": "colbert", "model": str(colbert_ckpt), "weight": 2.0, **small},
            {"kind": "file", "path": str(score_file)}]}),
    }


@pytest.fixture(scope="module")
def teachers(configs):
    return {name: build_teacher(cfg, CORPUS) for name, cfg in configs.items()}


ALL = ["bm25", "bi-encoder", "colbert", "colbert-plain", "cross-encoder", "file", "ensemble"]


# --- invariants of every kind ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_scores_matrix_call_and_batching(teachers, name):
    t = teachers[name]
    frame = pairs_frame()
    scores = np.asarray(t.score_batch(frame))
    assert scores.shape == (len(frame),) and scores.dtype in (np.float32, np.float64)
    assert np.isfinite(scores).all()

    # score_matrix equals the cross product scored pairwise.
    qids, pids = list(QUERIES), ["d0", "d2", "d3", "d4", "d5"]
    matrix = t.score_matrix(qids, [QUERIES[q] for q in qids], pids, [TEXT[p] for p in pids])
    cross = cross_product_frame(qids, [QUERIES[q] for q in qids], pids, [TEXT[p] for p in pids])
    assert matrix.shape == (3, 5)
    np.testing.assert_allclose(matrix, np.asarray(t.score_batch(cross)).reshape(3, 5), rtol=1e-6, atol=1e-5)

    # Ray protocol: same rows, same order, plus 'score'; works on a shuffled, re-indexed batch.
    shuffled = frame.sample(frac=1.0, random_state=3)
    out = t(shuffled)
    assert list(out.columns) == [*shuffled.columns, "score"]
    assert out.index.equals(shuffled.index)
    np.testing.assert_allclose(out["score"].to_numpy(), scores[shuffled.index.to_numpy()], rtol=1e-6, atol=1e-5)

    # Batching invariance: chunks aligned to queries (the ensemble's contract; harmless for the others).
    chunks = [t.score_batch(g) for _, g in frame.groupby("qid", sort=False)]
    np.testing.assert_allclose(np.concatenate(chunks), scores, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in ALL if n != "ensemble"])
def test_pointwise_kinds_do_not_depend_on_batch_at_all(teachers, name):
    t = teachers[name]
    frame = pairs_frame()
    whole = t.score_batch(frame)
    rows = [0, 5, len(frame) - 1]  # a few rows alone: enough to catch padding or batch-mate leakage
    singles = np.concatenate([t.score_batch(frame.iloc[i:i + 1]) for i in rows])
    np.testing.assert_allclose(singles, whole[rows], rtol=1e-6, atol=1e-5)


def test_missing_column_is_named(teachers):
    with pytest.raises(TasbRayError, match="passage"):
        teachers["bi-encoder"].score_batch(pairs_frame().drop(columns=["passage"]))


# --- bm25 ------------------------------------------------------------------------------------------


def test_bm25_equals_bm25s_and_ranks_relevant_first(teachers):
    import bm25s
    import Stemmer

    stem = Stemmer.Stemmer("english")
    ref = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    ref.index(bm25s.tokenize(CORPUS.text.tolist(), stopwords="en", stemmer=stem, show_progress=False),
              show_progress=False)
    frame = pairs_frame()
    got = teachers["bm25"].score_batch(frame)
    for q, text in QUERIES.items():
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stem, return_ids=False, show_progress=False)[0]
        want = ref.get_scores(tokens)
        rows = frame.qid == q
        doc_rows = [CORPUS.index[CORPUS.doc_id == p][0] for p in frame.pid[rows]]
        np.testing.assert_allclose(got[rows.to_numpy()], want[doc_rows], rtol=1e-6)
    s = dict(zip(zip(frame.qid, frame.pid), got))
    assert s[("q0", "d0")] > s[("q0", "d2")] and s[("q1", "d2")] > s[("q1", "d0")] and s[("q2", "d4")] > s[("q2", "d5")]


def test_bm25_unknown_pid_and_stopword_query(teachers):
    t = teachers["bm25"]
    bad = pd.DataFrame({"qid": ["q9"], "pid": ["nope"], "query": ["heart"], "passage": ["x"]})
    with pytest.raises(TasbRayError, match="'nope'.*not in the corpus"):
        t.score_batch(bad)
    only_stop = pd.DataFrame({"qid": ["q9"], "pid": ["d0"], "query": ["the of and"], "passage": [""]})
    assert t.score_batch(only_stop).tolist() == [0.0]


# --- bi-encoder ------------------------------------------------------------------------------------


def test_bi_encoder_matches_bertdot(tiny_model, teachers):
    from tasb_ray.models.encoder import BertDot

    enc = BertDot(tiny_model, query_max_len=12, passage_max_len=24)
    frame = pairs_frame()
    q = enc.encode(frame["query"].tolist(), "query")
    p = enc.encode(frame["passage"].tolist(), "passage")
    np.testing.assert_allclose(teachers["bi-encoder"].score_batch(frame), (q * p).sum(1), rtol=1e-4, atol=1e-4)

    cos = build_teacher(TeacherConfig(kind="bi-encoder", model=str(tiny_model), similarity="cosine",
                                      max_query_len=12, max_passage_len=24))
    want = (q * p).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(p, axis=1)
    np.testing.assert_allclose(cos.score_batch(frame), want, atol=1e-5)


# --- colbert ---------------------------------------------------------------------------------------


def _numpy_maxsim(tiny_model, queries, passages, qlen, plen, linear: np.ndarray | None):
    """ColBERT scoring written out independently, one text per forward pass (no padding)."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(tiny_model)
    bert = BertModel.from_pretrained(tiny_model).eval()
    punct = {tok.encode(c, add_special_tokens=False)[0] for c in string.punctuation}

    def vectors(text, kind):
        ids = tok(text, truncation=True, max_length=(qlen if kind == "q" else plen) - (linear is not None))["input_ids"]
        attn = [1] * (len(ids) + (linear is not None))
        if linear is not None:
            ids = [ids[0], 1 if kind == "q" else 2, *ids[1:]]  # [unused0] / [unused1]
            if kind == "q":  # [MASK] augmentation, masked from attention but scored
                attn += [0] * (qlen - len(ids))
                ids += [tok.mask_token_id] * (qlen - len(ids))
        with torch.no_grad():
            h = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attn])).last_hidden_state[0].numpy()
        if linear is not None:
            h = h @ linear.T
        h = h / np.linalg.norm(h, axis=1, keepdims=True)
        keep = np.ones(len(ids), bool) if kind == "q" else np.array([i not in punct for i in ids])
        return h[keep]

    qv = [vectors(q, "q") for q in queries]
    dv = [vectors(p, "d") for p in passages]
    return np.array([[(a @ b.T).max(1).sum() for b in dv] for a in qv])


def test_colbert_checkpoint_maxsim_matches_numpy(tiny_model, colbert_ckpt, teachers):
    from safetensors.torch import load_file

    t = teachers["colbert"]
    assert t.colbert_mode
    linear = load_file(str(colbert_ckpt / "model.safetensors"))["linear.weight"].numpy()
    qs, ps = list(QUERIES.values()), CORPUS.text.tolist()
    want = _numpy_maxsim(tiny_model, qs, ps, 12, 24, linear)
    np.testing.assert_allclose(t.score_matrix(list(QUERIES), qs, CORPUS.doc_id.tolist(), ps), want, atol=1e-4)
    # A query gets exactly max_query_len scored vectors (ColBERT's query augmentation): bounded by it.
    assert (np.abs(want) <= 12 + 1e-4).all()


def test_colbert_plain_encoder_maxsim_matches_numpy(tiny_model, teachers):
    t = teachers["colbert-plain"]
    assert not t.colbert_mode
    qs, ps = list(QUERIES.values()), CORPUS.text.tolist()
    want = _numpy_maxsim(tiny_model, qs, ps, 12, 24, None)
    np.testing.assert_allclose(t.score_matrix(list(QUERIES), qs, CORPUS.doc_id.tolist(), ps), want, atol=1e-4)


def _state(teacher) -> dict:
    """What a teacher holds besides its weights: sizes of containers and arrays, values of the rest."""
    out = {}
    for k, v in vars(teacher).items():
        if isinstance(v, torch.nn.Module):
            out[k] = sum(p.numel() for p in v.parameters()) + sum(b.numel() for b in v.buffers())
        elif isinstance(v, (torch.Tensor, np.ndarray)):
            out[k] = tuple(v.shape)
        elif hasattr(v, "__len__") and not isinstance(v, str):
            out[k] = len(v)
        else:
            out[k] = repr(v)
    return out


@pytest.mark.parametrize("name", ["colbert", "colbert-plain"])
def test_colbert_inbatch_scores_only_the_batch_and_keeps_no_corpus_state(teachers, name, monkeypatch):
    """The in-batch role at MS MARCO scale (issue 13): like the authors' ColBERT teacher, every call encodes its own
    queries and passages, each once, and nothing the teacher holds grows with the passages it has scored."""
    t = teachers[name]
    encoded: list[tuple[str, list[str]]] = []
    real = t.encode
    monkeypatch.setattr(t, "encode", lambda texts, kind: encoded.append((kind, list(texts))) or real(texts, kind))
    before = _state(t)
    rng = np.random.default_rng(0)
    for _ in range(6):  # batches over different passages, the whole corpus covered
        pids = rng.choice(CORPUS.doc_id.to_numpy(), 4, replace=False).tolist()
        qids = rng.choice(list(QUERIES), 2, replace=False).tolist()
        encoded.clear()
        t.score_matrix(qids, [QUERIES[q] for q in qids], pids, [TEXT[p] for p in pids])
        assert [k for k, _ in encoded] == ["query", "passage"]
        assert encoded[0][1] == [QUERIES[q] for q in qids] and encoded[1][1] == [TEXT[p] for p in pids]
    frame = pairs_frame()
    encoded.clear()
    t.score_batch(frame)
    assert sorted(encoded[1][1]) == sorted(frame["passage"].unique())  # distinct passages, once each
    assert _state(t) == before
    assert not any(isinstance(v, (dict, np.ndarray, torch.Tensor)) for v in vars(t).values())  # no cache at all


def test_colbert_unprefixed_checkpoint_and_projection_file(tiny_model, colbert_ckpt, teachers, tmp_path):
    from safetensors.torch import load_file, save_file

    from tasb_ray.teachers.colbert import ColBERTTeacher

    linear = load_file(str(colbert_ckpt / "model.safetensors"))["linear.weight"]
    save_file({"linear.weight": linear}, str(tmp_path / "proj.safetensors"))
    # Plain HF BERT dir (unprefixed keys) + separate projection file == the prefixed public layout.
    t = ColBERTTeacher(tiny_model, projection=tmp_path / "proj.safetensors", max_query_len=12, max_passage_len=24)
    frame = pairs_frame()
    np.testing.assert_allclose(t.score_batch(frame), teachers["colbert"].score_batch(frame), atol=1e-5)

    with pytest.raises(ConfigError, match="projection has shape"):
        save_file({"linear.weight": torch.zeros(8, 7)}, str(tmp_path / "bad.safetensors"))
        ColBERTTeacher(tiny_model, projection=tmp_path / "bad.safetensors")

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    state = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "layer.1." not in k}, str(broken / "model.safetensors"))
    with pytest.raises(ConfigError, match="lacks encoder weights"):
        ColBERTTeacher(broken)


# --- cross-encoder ---------------------------------------------------------------------------------


def test_cross_encoder_equals_direct_forward(cross_ckpt, teachers):
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(cross_ckpt)
    model = BertForSequenceClassification.from_pretrained(cross_ckpt).eval()
    frame = pairs_frame()
    want = []
    with torch.no_grad():
        for q, p in zip(frame["query"], frame["passage"]):
            inputs = tok(q, p, truncation="only_second", max_length=36, return_tensors="pt")
            want.append(model(**inputs).logits[0, 0].item())
    np.testing.assert_allclose(teachers["cross-encoder"].score_batch(frame), want, atol=1e-5)


def test_cross_encoder_query_truncation_and_two_labels(tiny_model, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tasb_ray.teachers.cross_encoder import CrossEncoderTeacher

    config = BertConfig.from_pretrained(tiny_model, num_labels=2)
    torch.manual_seed(3)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.save_pretrained(tmp_path)
    t = CrossEncoderTeacher(tmp_path, max_query_len=3, max_passage_len=8)
    long_q = "statins lower cholesterol in adults with heart disease"
    inputs = t.tokenize([long_q], ["a passage about hearts and statins and more words here"])
    ids = inputs["input_ids"][0].tolist()
    sep = ids.index(tok.sep_token_id)
    assert ids[1:sep] == tok.encode(long_q, add_special_tokens=False)[:3]  # query cut to 3 tokens
    assert len(ids) == 11  # total budget 3 + 8, passage cut to fit
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    frame = pd.DataFrame({"qid": ["q"], "pid": ["p"], "query": [long_q],
                          "passage": ["a passage about hearts and statins and more words here"]})
    np.testing.assert_allclose(t.score_batch(frame), [(logits[1] - logits[0]).item()], atol=1e-5)


# --- ensemble --------------------------------------------------------------------------------------


def _znorm(x):
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def test_ensemble_is_weighted_sum_of_per_query_zscores(teachers):
    frame = pairs_frame()
    parts = {n: np.asarray(teachers[n].score_batch(frame), dtype=np.float64) for n in ("bm25", "colbert", "file")}
    want = np.zeros(len(frame))
    for q in QUERIES:
        rows = (frame.qid == q).to_numpy()
        want[rows] = 0.5 * _znorm(parts["bm25"][rows]) + 2.0 * _znorm(parts["colbert"][rows]) \
            + 1.0 * _znorm(parts["file"][rows])
    np.testing.assert_allclose(teachers["ensemble"].score_batch(frame), want, atol=1e-6)


def test_ensemble_weights_and_constant_scores(score_file, tmp_path):
    from tasb_ray.teachers.ensemble import EnsembleTeacher
    from tasb_ray.teachers.precomputed import FileTeacher

    f = FileTeacher(score_file)
    const = FileTeacher(scores=score_table().assign(score=7.0))
    frame = pairs_frame()
    z = np.concatenate([_znorm(f.score_batch(g)) for _, g in frame.groupby("qid", sort=False)])
    np.testing.assert_allclose(EnsembleTeacher([f, const], [3.0, 5.0]).score_batch(frame), 3.0 * z, atol=1e-9)
    single = frame.iloc[:1]  # one candidate: sd 0 -> 0, not NaN
    assert EnsembleTeacher([f]).score_batch(single).tolist() == [0.0]


# --- file ------------------------------------------------------------------------------------------


def test_file_tsv_and_parquet_round_trip(tmp_path):
    from tasb_ray.data.teacher_file import read_teacher_tsv
    from tasb_ray.teachers.precomputed import export_tsv

    pairs = pd.DataFrame({"qid": ["q0", "q0", "q1"], "pos_pid": ["d0", "d0", "d2"], "neg_pid": ["d1", "d2", "d3"],
                          "pos_score": [9.5, 9.5, 7.25], "neg_score": [1.5, -2.0, 0.125]})
    export_tsv(pairs, tmp_path / "t.tsv")
    pd.testing.assert_frame_equal(read_teacher_tsv(tmp_path / "t.tsv"), pairs)
    pairs.to_parquet(tmp_path / "p.parquet", index=False)
    points = pd.DataFrame({"qid": ["q0", "q0", "q0", "q1", "q1"], "pid": ["d0", "d1", "d2", "d2", "d3"],
                           "score": [9.5, 1.5, -2.0, 7.25, 0.125]})
    points.to_parquet(tmp_path / "s.parquet", index=False)
    batch = pd.DataFrame({"qid": ["q1", "q0", "q0", "q0", "q1"], "pid": ["d3", "d2", "d0", "d1", "d2"]})
    want = [0.125, -2.0, 9.5, 1.5, 7.25]
    for name in ("t.tsv", "p.parquet", "s.parquet"):
        t = build_teacher(TeacherConfig(kind="file", path=str(tmp_path / name)))
        np.testing.assert_allclose(t.score_batch(batch), want)
        assert len(t) == 5  # (q0, d0) appears in two triples: one score


def test_file_missing_pair_and_bad_columns(score_file, tmp_path):
    from tasb_ray.teachers.precomputed import FileTeacher

    t = FileTeacher(score_file)
    with pytest.raises(TasbRayError, match="qid 'q0' pid 'zz'"):
        t.score_batch(pd.DataFrame({"qid": ["q1", "q0"], "pid": ["d0", "zz"]}))
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match="expected"):
        FileTeacher(tmp_path / "bad.parquet")
    with pytest.raises(TasbRayError, match="not found"):
        FileTeacher(tmp_path / "absent.tsv")


# --- config and factory ----------------------------------------------------------------------------


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(ConfigError, match=r"^teacher: unknown key 'modle'$"):
        TeacherConfig.from_dict({"kind": "bi-encoder", "modle": "x"})
    with pytest.raises(ConfigError, match=r"teacher\.components\[1\]: unknown key 'wieght'"):
        TeacherConfig.from_dict({"kind": "ensemble", "components": [{"kind": "bm25"}, {"kind": "bm25", "wieght": 2}]})
    with pytest.raises(ConfigError, match="unknown kind"):
        TeacherConfig.from_dict({"kind": "splade"})
    with pytest.raises(ConfigError, match="needs 'model'"):
        TeacherConfig.from_dict({"kind": "colbert"})
    with pytest.raises(ConfigError, match="'batch_size' must be int"):
        TeacherConfig.from_dict({"kind": "bm25", "batch_size": "32"})
    with pytest.raises(ConfigError, match="similarity"):
        TeacherConfig.from_dict({"kind": "bi-encoder", "model": "m", "similarity": "l2"})


def test_nested_ensemble_config_builds_from_paths(score_file, tmp_path):
    from tasb_ray.teachers.ensemble import EnsembleTeacher

    d = {"kind": "ensemble", "components": [
        {"kind": "ensemble", "weight": 2.0, "components": [{"kind": "bm25", "k1": 1.2}, {"kind": "file", "path": str(score_file)}]},
        {"kind": "file", "path": str(score_file), "weight": 0.5}]}
    cfg = TeacherConfig.from_dict(d)
    assert cfg.components[0].components[0].k1 == 1.2 and cfg.needs_corpus()
    assert TeacherConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="corpus"):
        build_teacher_from_paths(cfg, None)
    CORPUS.to_parquet(tmp_path / "corpus.parquet", index=False)
    t = build_teacher_from_paths(cfg.to_dict(), str(tmp_path / "corpus.parquet"))
    assert isinstance(t, EnsembleTeacher) and t.weights == [2.0, 0.5]
    assert isinstance(t.components[0], EnsembleTeacher)
    # A Ray actor is built the same way, from a dict and a path.
    out = TeacherActor(cfg.to_dict(), str(tmp_path / "corpus.parquet"))(pairs_frame())
    np.testing.assert_allclose(out["score"], t.score_batch(pairs_frame()))


def test_bi_encoder_cache_encodes_each_id_once_and_stays_bounded(tiny_model):
    import numpy as np
    import pandas as pd

    from tasb_ray.teachers.bi_encoder import BiEncoderTeacher

    teacher = BiEncoderTeacher(tiny_model, similarity="cosine", cache_size=5)
    calls = []
    encode = teacher.encode
    teacher.encode = lambda texts, kind: calls.append((kind, len(texts))) or encode(texts, kind)
    batch = pd.DataFrame({"qid": ["q1", "q1", "q2"], "pid": ["a", "b", "a"], "query": ["heart", "heart", "brain"],
                          "passage": ["the heart pumps", "neurons fire", "the heart pumps"]})
    first = teacher.score_batch(batch)
    again = teacher.score_batch(batch)
    assert calls == [("query", 2), ("passage", 2)]  # the second call hit the cache
    np.testing.assert_array_equal(first, again)
    uncached = BiEncoderTeacher(tiny_model, similarity="cosine", cache_size=0)
    np.testing.assert_allclose(uncached.score_batch(batch), first, atol=1e-6)
    teacher.precompute([f"p{i}" for i in range(4)], [f"text {i}" for i in range(4)], "passage")
    assert len(teacher._cache["passage"]) <= 5
