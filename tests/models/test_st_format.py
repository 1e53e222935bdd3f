"""A saved BertDot is a sentence-transformers model that encodes exactly as tasb-ray does."""

import json

import numpy as np
import pytest

from tasb_ray.models.encoder import BertDot, EncoderSpec, spec_from_model
from tasb_ray.models.st_format import ST_CONFIG, saved_score_scale

st = pytest.importorskip("sentence_transformers")

PASSAGES = ["short", "a somewhat longer passage about arteries and the heart " * 3, "mid length text here", "x y",
            "the passage that is long enough to be truncated at the passage length " * 6]
QUERIES = ["what causes heart disease", "arteries", "a long query that runs past the query length " * 3]


def _cos(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("pooling,normalize", [("cls", False), ("mean", True), ("cls", True), ("mean", False)])
def test_sentence_transformers_encodes_like_bertdot(tiny_model, tmp_path, pooling, normalize):
    enc = BertDot(tiny_model, pooling=pooling, normalize=normalize, query_max_len=8, passage_max_len=24,
                  score_scale=20.0)
    enc.save(tmp_path / "m")
    model = st.SentenceTransformer(str(tmp_path / "m"), device="cpu")
    assert model.max_seq_length == 24
    ours_p = enc.encode(PASSAGES, "passage")
    theirs_p = model.encode(PASSAGES, convert_to_numpy=True)
    model.max_seq_length = 8  # the card's recipe for queries
    ours_q = enc.encode(QUERIES, "query")
    theirs_q = model.encode(QUERIES, convert_to_numpy=True)
    for ours, theirs in ((ours_p, theirs_p), (ours_q, theirs_q)):
        assert _cos(ours, theirs).min() >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(theirs, axis=1), np.linalg.norm(ours, axis=1), rtol=1e-4)
    np.testing.assert_allclose(theirs_q @ theirs_p.T, ours_q @ ours_p.T, atol=1e-4)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(theirs_p, axis=1), 1.0, atol=1e-5)
    cfg = json.loads((tmp_path / "m" / ST_CONFIG).read_text())
    assert cfg["similarity_fn_name"] == ("cosine" if normalize else "dot")
    assert model.similarity_fn_name == cfg["similarity_fn_name"]
    assert cfg["tasb_ray"]["score_scale"] == 20.0 and cfg["tasb_ray"]["query_max_len"] == 8


def test_layout_files_and_plain_transformers(tiny_model, tmp_path):
    from transformers import AutoModel

    enc = BertDot(tiny_model, pooling="mean", normalize=True, query_max_len=8, passage_max_len=24)
    enc.save(tmp_path / "m")
    root = tmp_path / "m"
    modules = json.loads((root / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    pool = json.loads((root / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]
    assert pool["word_embedding_dimension"] == 128
    bert = AutoModel.from_pretrained(str(root))
    assert bert.config.hidden_size == 128
    # The saved spec still wins over the sentence-transformers files when tasb-ray reloads.
    assert BertDot(root).spec == enc.spec
    assert saved_score_scale(root) == 1.0


def test_unnormalised_cls_has_no_normalize_module(tiny_model, tmp_path):
    BertDot(tiny_model, pooling="cls", normalize=False).save(tmp_path / "m")
    types = [m["type"] for m in json.loads((tmp_path / "m" / "modules.json").read_text())]
    assert not any(t.endswith("Normalize") for t in types)
    pool = json.loads((tmp_path / "m" / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode_cls_token"] and not pool["pooling_mode_mean_tokens"]


def test_score_scale_survives_reload_and_is_validated(tiny_model, tmp_path):
    BertDot(tiny_model, score_scale=12.5).save(tmp_path / "m")
    assert BertDot(tmp_path / "m").score_scale == 12.5
    assert BertDot(tmp_path / "m", score_scale=2.0).score_scale == 2.0
    assert BertDot(tiny_model).score_scale == 1.0
    from tasb_ray.errors import ConfigError

    with pytest.raises(ConfigError, match="score_scale"):
        BertDot(tiny_model, score_scale=0.0)


def test_spec_from_sentence_transformers_6_pooling_key(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 8, "pooling_mode": "mean"}))
    assert spec_from_model(str(tmp_path)) == EncoderSpec("mean", False)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 8, "pooling_mode": "cls"}))
    assert spec_from_model(str(tmp_path)).pooling == "cls"
