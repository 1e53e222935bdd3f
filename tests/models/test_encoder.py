import json

import numpy as np
import pytest
import torch

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.models.encoder import SPEC_FILE, BertDot, EncoderSpec, spec_from_model
from tasb_ray.models.registry import resolve_model

TEXTS = ["short", "a somewhat longer passage about arteries and the heart " * 3, "mid length text here", "x y"]


def test_sorted_batches_match_one_by_one(tiny_model):
    enc = BertDot(tiny_model)
    batched = enc.encode(TEXTS, "passage", batch_size=3)
    single = np.stack([enc.encode([t], "passage", batch_size=1)[0] for t in TEXTS])
    assert batched.shape == (4, 128) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_matches_manual(tiny_model, pooling):
    enc = BertDot(tiny_model, pooling=pooling, normalize=False)
    tok = enc.tokenize(TEXTS[:2], "passage")
    with torch.no_grad():
        hidden = enc.bert(**tok).last_hidden_state
        got = enc(**tok)
    mask = tok["attention_mask"].unsqueeze(-1).float()
    want = hidden[:, 0] if pooling == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(got, want)
    # Mean pooling must ignore padding: the short text alone gives the same vector.
    alone = enc.encode(TEXTS[:1], "passage")[0]
    np.testing.assert_allclose(alone, got[0].numpy(), atol=1e-5)


def test_normalize_and_lengths(tiny_model):
    enc = BertDot(tiny_model, normalize=True, query_max_len=4, passage_max_len=9)
    v = enc.encode(TEXTS, "query")
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert enc.tokenize([TEXTS[1]], "query")["input_ids"].shape[1] == 4
    assert enc.tokenize([TEXTS[1]], "passage")["input_ids"].shape[1] == 9


def test_save_reload_keeps_spec_and_weights(tiny_model, tmp_path):
    enc = BertDot(tiny_model, pooling="mean", normalize=True, query_max_len=7, passage_max_len=11)
    enc.save(tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / SPEC_FILE).read_text())["pooling"] == "mean"
    again = BertDot(tmp_path / "ck")
    assert again.spec == enc.spec
    np.testing.assert_allclose(again.encode(TEXTS, "passage"), enc.encode(TEXTS, "passage"), atol=1e-6)


def test_spec_from_sentence_transformers_config(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    assert spec_from_model(str(tmp_path)) == EncoderSpec("mean", True, 256, 256)
    assert spec_from_model(str(tmp_path / "nothing")) == EncoderSpec()


def test_short_name_resolves_to_packaged_weights():
    path = resolve_model("minilm-l6")
    assert (path.endswith("model")) and spec_from_model(path).pooling == "mean"


def test_bad_specs_and_paths(tmp_path):
    with pytest.raises(ConfigError, match="pooling"):
        EncoderSpec(pooling="max")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TasbRayError, match="config.json"):
        resolve_model(tmp_path / "empty")
