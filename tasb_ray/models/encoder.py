"""BERT-DOT: one shared transformer encoder for queries and passages, scored by dot product.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
    Sampling", SIGIR 2021, Section 3.1 (the BERT_DOT architecture).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import cached_file
from transformers.utils import logging as hf_logging

from tasb_ray.errors import ConfigError
from tasb_ray.models.batching import length_sorted_batches
from tasb_ray.models.registry import loading_model, resolve_model
from tasb_ray.models.st_format import saved_score_scale, write_st_layout

SPEC_FILE = "tasb_ray_encoder.json"
POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class EncoderSpec:
    """How token vectors become one vector; saved beside the weights so a checkpoint reloads the same way."""

    pooling: str = "cls"
    normalize: bool = False
    query_max_len: int = 30
    passage_max_len: int = 200

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for f in ("query_max_len", "passage_max_len"):
            if getattr(self, f) < 2:
                raise ConfigError(f"{f} must be >= 2, got {getattr(self, f)}")


def _read_json(path: str | None) -> dict | None:
    if path and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def _model_file(model: str, filename: str) -> str | None:
    """A file of a local model dir or, for a hub id, of the hub cache (downloaded when online)."""
    if os.path.isdir(model):
        p = os.path.join(model, filename)
        return p if os.path.isfile(p) else None
    try:
        return cached_file(model, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:  # noqa: BLE001 - any hub failure just means "no such file"
        return None


def spec_from_model(model: str) -> EncoderSpec:
    """The model's own pooling: a tasb-ray spec file, else its sentence-transformers config, else CLS."""
    saved = _read_json(_model_file(model, SPEC_FILE))
    if saved:
        return EncoderSpec(**saved)
    modules = _read_json(_model_file(model, "modules.json")) or []
    types = [m.get("type", "") for m in modules]
    if any(t.endswith("Pooling") for t in types):
        pool_dir = next(m["path"] for m in modules if m.get("type", "").endswith("Pooling"))
        cfg = _read_json(_model_file(model, f"{pool_dir}/config.json")) or {}
        # sentence-transformers 6 writes one "pooling_mode" key, earlier releases pooling_mode_*_tokens flags.
        mode = cfg.get("pooling_mode")
        pooling = "mean" if (mode == "mean" if mode else cfg.get("pooling_mode_mean_tokens")) else "cls"
        st = _read_json(_model_file(model, "sentence_bert_config.json")) or {}
        lengths = {}
        if st.get("max_seq_length"):
            lengths = {"query_max_len": int(st["max_seq_length"]), "passage_max_len": int(st["max_seq_length"])}
        return EncoderSpec(pooling=pooling, normalize=any(t.endswith("Normalize") for t in types), **lengths)
    return EncoderSpec()


class BertDot(nn.Module):
    """Shared-encoder dense retriever: ``score(q, p) = pool(BERT(q)) · pool(BERT(p))``.

    Args:
        model: Hugging Face id, local path, or a short name such as ``minilm-l6``.
        pooling: ``cls``, ``mean`` or ``auto`` (the model's own choice, see :func:`spec_from_model`).
        normalize: L2-normalise the pooled vector (``None``: the model's own choice).
        query_max_len, passage_max_len: truncation lengths in tokens (``None``: the model's own, else 30 / 200).
        attention_dropout: override the attention dropout (``None`` keeps the checkpoint's).
        score_scale: the factor training multiplies dot products by (``None``: the saved one, else 1). It does
            not change :meth:`encode`; :meth:`save` records it for users of the model elsewhere.
    """

    def __init__(self, model: str | os.PathLike, pooling: str = "auto", normalize: bool | None = None,
                 query_max_len: int | None = None, passage_max_len: int | None = None,
                 attention_dropout: float | None = None, score_scale: float | None = None):
        super().__init__()

        hf_logging.disable_progress_bar()

        self.model_name = resolve_model(model)
        with loading_model(str(model)):
            base = spec_from_model(self.model_name)
            overrides = {k: v for k, v in dict(pooling=None if pooling == "auto" else pooling, normalize=normalize,
                                               query_max_len=query_max_len, passage_max_len=passage_max_len).items()
                         if v is not None}
            self.spec = replace(base, **overrides)
            # Kept out of EncoderSpec: the spec is part of cached stage keys, and the scale does not change vectors.
            self.score_scale = float(score_scale if score_scale is not None else saved_score_scale(self.model_name) or 1.0)
            if not self.score_scale > 0:
                raise ConfigError(f"score_scale must be > 0, got {self.score_scale}")
            config = AutoConfig.from_pretrained(self.model_name)
            if attention_dropout is not None:
                config.attention_probs_dropout_prob = attention_dropout
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self.bert = AutoModel.from_pretrained(self.model_name, config=config, attn_implementation="sdpa")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.bert.config.hidden_size)

    def tokenize(self, texts: Sequence[str], kind: str) -> dict[str, torch.Tensor]:
        max_len = self.spec.query_max_len if kind == "query" else self.spec.passage_max_len
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.spec.pooling == "cls":
            vec = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(vec, dim=-1) if self.spec.normalize else vec

    def embed(self, texts: Sequence[str], kind: str) -> torch.Tensor:
        """Differentiable embeddings of one batch (used in training)."""
        return self(**self.tokenize(texts, kind))

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], kind: str = "passage", batch_size: int = 64,
               show_progress: bool = False) -> np.ndarray:
        """float32 [N, dim] embeddings in input order.

        Batches are formed over texts sorted by length, so each batch pads to similar lengths:
        that alone doubles CPU throughput against file order.
        """
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        was_training = self.training
        self.eval()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = length_sorted_batches([len(t) for t in texts], batch_size)
        if show_progress:
            batches = tqdm(batches, total=-(-len(texts) // batch_size), desc=f"encode {kind}s", unit="batch")
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.device.type == "cuda" else contextlib.nullcontext()
        with autocast:
            for idx in batches:
                out[idx] = self.embed([texts[i] for i in idx], kind).float().cpu().numpy()
        self.train(was_training)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Weights (safetensors), tokenizer and the encoder spec, loadable by ``BertDot(path)``.

        The directory is also a complete sentence-transformers model (:mod:`tasb_ray.models.st_format`), so
        ``SentenceTransformer(path)`` encodes as :meth:`encode` does, and ``AutoModel.from_pretrained(path)`` loads.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.bert.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        (path / SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        write_st_layout(path, self.spec, self.dim, self.score_scale)


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face encoder (BERT-style ``encoder.layer``, DistilBERT's
    ``transformer.layer``)."""
    for path in ("encoder.layer", "transformer.layer"):
        mod = model
        for part in path.split("."):
            mod = getattr(mod, part, None)
        if isinstance(mod, nn.ModuleList):
            return mod
    raise ConfigError(f"reinit_top_layers: cannot find the transformer layers of {type(model).__name__}")


def reinit_top_layers(model: nn.Module, n: int, seed: int) -> None:
    """Re-initialise the top ``n`` transformer layers in place with the model's own ``_init_weights``.

    The draw runs on a forked torch RNG seeded with ``seed``, so it neither depends on nor moves the global RNG.
    Loaded weights carry transformers' ``_is_hf_initialized`` flag, which makes its init functions skip them;
    the flag is cleared on the layers being re-initialised.
    """
    layers = transformer_layers(model)
    if not 0 <= n <= len(layers):
        raise ConfigError(f"reinit_top_layers must be between 0 and {len(layers)} (the model's layers), got {n}")
    if n == 0:
        return
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for layer in layers[len(layers) - n:]:
            for t in list(layer.parameters()) + list(layer.buffers()):
                if getattr(t, "_is_hf_initialized", False):
                    t._is_hf_initialized = False
            for module in layer.modules():
                model._init_weights(module)


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
