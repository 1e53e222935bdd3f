"""A tiny randomly initialised BERT with the MiniLM tokenizer: the model for tests and smoke runs."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from tasb_ray.models.encoder import SPEC_FILE, EncoderSpec
from tasb_ray.models.registry import resolve_model


def build_tiny_bert(out_dir: str | os.PathLike, layers: int = 2, hidden: int = 128, heads: int = 2,
                    seed: int = 0, tokenizer_from: str = "minilm-l6", spec: EncoderSpec | None = None) -> Path:
    """Write a random ``layers``×``hidden`` BERT plus tokenizer to ``out_dir``; same seed → same weights."""
    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer_from))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512)
    torch.manual_seed(seed)
    model = BertModel(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / SPEC_FILE).write_text(json.dumps(asdict(spec or EncoderSpec(pooling="cls", query_max_len=32,
                                                                       passage_max_len=64)), indent=2) + "\n")
    return out
