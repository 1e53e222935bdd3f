"""The Hugging Face model card of a saved student."""

import pytest
import yaml

from tasb_ray.models.card import hub_id, write_model_card, write_run_cards
from tasb_ray.models.encoder import BertDot

CONFIG = {"name": "tiny-run", "data": {"dataset": "scifact"}, "student": {"model": "minilm-l6", "score_scale": 10.0},
          "teachers": {"pairwise": {"kind": "bm25"}, "inbatch": None},
          "sampler": {"sampling": "tas-balanced", "batch_size": 4}}
METRICS = {"dev": {"nDCG@10": 0.5, "R@100": 0.9}, "test": {"nDCG@10": 0.25, "R@100": 0.75}}


def _front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_content(tiny_model, tmp_path):
    BertDot(tiny_model, pooling="mean", normalize=True, query_max_len=8, passage_max_len=24,
            score_scale=10.0).save(tmp_path / "m")
    path = write_model_card(tmp_path / "m", base_model="minilm-l6", config=CONFIG, teachers=CONFIG["teachers"],
                            sampler=CONFIG["sampler"], plan_hash="abc123", metrics=METRICS,
                            command="tasb-ray train runs/x/config.yaml")
    text = path.read_text()
    front = _front(text)
    assert front["library_name"] == "sentence-transformers" and front["pipeline_tag"] == "sentence-similarity"
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    results = front["model-index"][0]["results"]
    assert [(r["dataset"]["split"], r["metrics"][0]["type"], r["metrics"][0]["value"]) for r in results] == [
        ("dev", "ndcg_10", 0.5), ("test", "ndcg_10", 0.25)]
    assert "| test | 0.2500 | 0.7500 |" in text
    assert "abc123" in text and "tasb-ray train runs/x/config.yaml" in text
    assert "mean of the token vectors, L2-normalised" in text and "cosine" in text
    assert "queries 8 tokens, passages 24 tokens" in text and "model.max_seq_length = 8" in text
    assert "10 * dot(q, p)" in text  # the score scale, which sentence-transformers cannot carry
    assert "sampling: tas-balanced" in text and "kind: bm25" in text
    assert f'SentenceTransformer("{tmp_path / "m"}")' in text


def test_run_cards_put_metrics_on_the_selected_model_only(tiny_model, tmp_path):
    for name in ("model", "best"):
        BertDot(tiny_model).save(tmp_path / name)
    written = write_run_cards(tmp_path, CONFIG, METRICS, plan_hash="h", selected="best", command="c")
    assert sorted(p.parent.name for p in written) == ["best", "model"]
    assert "model-index" in _front((tmp_path / "best" / "README.md").read_text())
    last = (tmp_path / "model" / "README.md").read_text()
    assert "model-index" not in _front(last) and "belong to `best/`" in last
    assert "scale" not in _front(last)


@pytest.mark.parametrize("given,want", [("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2"),
                                        ("org/model-1.5", "org/model-1.5"), ("a/b/c", None),
                                        ("bert-base-uncased", "bert-base-uncased"),
                                        ("/abs/path/model", None), (None, None)])
def test_hub_id(given, want):
    assert hub_id(given) == want
