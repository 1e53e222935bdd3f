"""ColBERT late interaction as a teacher: ``score(q, d) = Σ_i max_j cos(E_q[i], E_d[j])`` (MaxSim).

Two modes, chosen by whether a projection exists:

* **ColBERT checkpoint** (a ``linear.weight`` [dim, hidden] in the state dict, or the ``projection``
  file): the ColBERT conventions the checkpoint was trained with. The query is
  ``[CLS] [unused0] q [SEP]`` padded with ``[MASK]`` to ``max_query_len`` (query augmentation; as in
  the reference code the [MASK] positions get attention mask 0, i.e. ColBERTv2's
  ``attend_to_mask_tokens=False``, yet their output vectors are scored). The document is
  ``[CLS] [unused1] d [SEP]``. Token vectors are projected, then L2-normalised.
* **Plain encoder** (no projection, e.g. MiniLM): MaxSim over the L2-normalised last-layer token
  vectors of the tokenizer's ordinary encoding (``[CLS] text [SEP]``, no markers, no [MASK]
  augmentation, since the encoder never learned to use them); query padding is not scored.

In both modes document padding and punctuation tokens are not scored (ColBERT's ``mask_punctuation``,
on by default in its code), and the max over document tokens ignores them.

References:
    Khattab & Zaharia, "ColBERT: Efficient and Effective Passage Search via Contextualized Late
    Interaction over BERT", SIGIR 2020.
    Santhanam et al., "ColBERTv2: Effective and Efficient Retrieval via Lightweight Late
    Interaction", NAACL 2022 (the checkpoint layout of colbert-ir/colbertv2.0).
    Hofstätter et al., arXiv 2010.02666 and 2104.06967 (ColBERT as a Margin-MSE / TAS-B teacher).
"""

from __future__ import annotations

import json
import os
import string
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from tasb_ray.errors import ConfigError
from tasb_ray.models.batching import length_sorted_batches
from tasb_ray.models.encoder import _model_file as find  # local dir or the hub cache, offline-safe
from tasb_ray.models.registry import loading_model, resolve_model
from tasb_ray.teachers._neural import autocast, pick_device
from tasb_ray.teachers.base import Teacher, factorize

QUERY_MARKER = "[unused0]"
DOC_MARKER = "[unused1]"
LINEAR_KEY = "linear.weight"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHARD_INDEX = "model.safetensors.index.json"


def _model_file(model: str, filename: str) -> str | None:
    return find(model, filename)


def load_state_dict(model: str) -> dict[str, torch.Tensor]:
    """The raw checkpoint state dict of a HF model dir or cached hub id (safetensors, sharded, or .bin)."""
    if path := _model_file(model, _WEIGHT_FILES[0]):
        return load_file(path)
    if index := _model_file(model, _SHARD_INDEX):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(_model_file(model, shard)))
        return state
    if path := _model_file(model, _WEIGHT_FILES[1]):
        return torch.load(path, map_location="cpu", weights_only=True)
    raise ConfigError(f"colbert: {model}: no {' / '.join(_WEIGHT_FILES)} weights found")


def load_projection(path: str | os.PathLike) -> torch.Tensor:
    """A ``[dim, hidden]`` projection from safetensors or a torch file (a tensor, or a dict with
    ``linear.weight`` / ``weight`` / a single tensor)."""
    path = str(path)
    if path.endswith(".safetensors"):
        obj: object = load_file(path)
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in (LINEAR_KEY, "weight"):
            if key in obj:
                return obj[key]
        if len(obj) == 1:
            return next(iter(obj.values()))
        raise ConfigError(f"colbert: {path}: no '{LINEAR_KEY}' among keys {sorted(obj)[:10]}")
    if isinstance(obj, torch.Tensor):
        return obj
    raise ConfigError(f"colbert: {path}: expected a tensor or a state dict, got {type(obj).__name__}")


class ColBERTTeacher(Teacher):
    """MaxSim scorer over a HF encoder plus (optionally) ColBERT's linear projection.

    Args:
        model: HF id, local dir or short name: a ColBERT checkpoint (BERT weights with or without
            the ``bert.`` prefix, plus ``linear.weight``) or any plain encoder.
        projection: a separate ``linear.weight`` file; overrides one in the checkpoint.
        max_query_len: query length in tokens (ColBERT mode: exactly this, [MASK]-padded).
        max_passage_len: document truncation length in tokens.
        batch_size: texts per forward pass (length-sorted).
        device: torch device; ``None`` picks CUDA when available (then fp16 autocast).
        passage_chunk: distinct passages encoded and held at once; bounds memory on large batches.
    """

    name = "colbert"

    def __init__(self, model: str | os.PathLike, projection: str | os.PathLike | None = None,
                 max_query_len: int = 32, max_passage_len: int = 256, batch_size: int = 32,
                 device: str | None = None, passage_chunk: int = 512):
        hf_logging.disable_progress_bar()
        self.model_name = resolve_model(model)
        with loading_model(str(model)):
            config = AutoConfig.from_pretrained(self.model_name)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            state = load_state_dict(self.model_name)
        weight = state.pop(LINEAR_KEY, None)
        bias = state.pop("linear.bias", None)
        if projection is not None:
            weight, bias = load_projection(projection), None
        self.encoder = AutoModel.from_config(config, attn_implementation="sdpa")
        self._load_encoder_weights(state)
        hidden = int(config.hidden_size)
        self.linear: torch.nn.Linear | None = None
        if weight is not None:
            if weight.ndim != 2 or weight.shape[1] != hidden:
                raise ConfigError(f"colbert: projection has shape {tuple(weight.shape)}, expected [dim, {hidden}]")
            self.linear = torch.nn.Linear(hidden, weight.shape[0], bias=bias is not None)
            with torch.no_grad():
                self.linear.weight.copy_(weight.float())
                if bias is not None:
                    self.linear.bias.copy_(bias.float())
        self.device = pick_device(device)
        self.encoder.float().to(self.device).eval()
        if self.linear is not None:
            self.linear.to(self.device).eval()
        self.max_query_len, self.max_passage_len = max_query_len, max_passage_len
        self.batch_size, self.passage_chunk = batch_size, passage_chunk
        tok = self.tokenizer
        self.skip_ids = sorted({ids[0] for s in string.punctuation if (ids := tok.encode(s, add_special_tokens=False))})
        if self.colbert_mode:
            self.q_marker, self.d_marker = (self._token_id(QUERY_MARKER), self._token_id(DOC_MARKER))
            self.mask_id = tok.mask_token_id
            if self.mask_id is None:
                raise ConfigError(f"colbert: tokenizer of {self.model_name} has no [MASK] token")

    @property
    def colbert_mode(self) -> bool:
        """True when a projection exists: markers, [MASK] augmentation and projection apply."""
        return self.linear is not None

    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ConfigError(f"colbert: tokenizer of {self.model_name} has no {token} marker token")
        return int(tid)

    def _load_encoder_weights(self, state: dict[str, torch.Tensor]) -> None:
        # Public ColBERT checkpoints keep the encoder under the base-model prefix ("bert."), a plain HF
        # encoder saves it unprefixed: accept both by stripping the prefix where present.
        prefix = f"{self.encoder.base_model_prefix}."
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
        missing, _unexpected = self.encoder.load_state_dict(state, strict=False)
        # ColBERT never uses the pooler (and colbertv2.0 ships none); an unexpected key is a head we ignore.
        missing = [k for k in missing if not k.startswith("pooler.") and not k.endswith("position_ids")]
        if missing:
            raise ConfigError(f"colbert: {self.model_name}: checkpoint lacks encoder weights "
                              f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")

    def tokenize(self, texts: Sequence[str], kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``input_ids``, ``attention_mask`` and the mask of scored positions, each ``[n, L]``."""
        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
        max_len = self.max_query_len if kind == "query" else self.max_passage_len
        room = max_len - 1 if self.colbert_mode else max_len  # the marker takes one position
        ids_list = self.tokenizer(list(texts), truncation=True, max_length=room)["input_ids"]
        if self.colbert_mode:
            marker = self.q_marker if kind == "query" else self.d_marker
            ids_list = [ids[:1] + [marker] + ids[1:] for ids in ids_list]
        width = max_len if (self.colbert_mode and kind == "query") else max(len(i) for i in ids_list)
        fill = self.mask_id if (self.colbert_mode and kind == "query") else self.tokenizer.pad_token_id
        ids = torch.full((len(ids_list), width), fill, dtype=torch.long)
        attn = torch.zeros((len(ids_list), width), dtype=torch.long)
        for r, row in enumerate(ids_list):
            ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            attn[r, :len(row)] = 1
        if kind == "query":
            scored = torch.ones_like(attn, dtype=torch.bool) if self.colbert_mode else attn.bool()
        else:
            scored = attn.bool() & ~torch.isin(ids, torch.tensor(self.skip_ids, dtype=torch.long))
        return ids, attn, scored

    def token_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised (projected) token vectors ``[n, L, dim]``."""
        hidden = self.encoder(input_ids=input_ids.to(self.device),
                              attention_mask=attention_mask.to(self.device)).last_hidden_state
        if self.linear is not None:
            hidden = self.linear(hidden)
        return F.normalize(hidden.float(), dim=-1)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded scored-token vectors ``[n, L, dim]`` and their mask ``[n, L]`` (unscored rows zero)."""
        chunks: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []
        with autocast(self.device):
            for idx in length_sorted_batches([len(t) for t in texts], self.batch_size):
                ids, attn, scored = self.tokenize([texts[i] for i in idx], kind)
                vec = self.token_vectors(ids, attn)
                chunks.append((idx, vec * scored.to(self.device).unsqueeze(-1), scored.to(self.device)))
        width = max((c[1].shape[1] for c in chunks), default=1)
        dim = chunks[0][1].shape[-1] if chunks else 1
        out = torch.zeros((len(texts), width, dim), device=self.device)
        mask = torch.zeros((len(texts), width), dtype=torch.bool, device=self.device)
        for idx, vec, m in chunks:
            t = torch.as_tensor(idx, device=self.device)
            out[t, :vec.shape[1]] = vec
            mask[t, :m.shape[1]] = m
        return out, mask

    @staticmethod
    def maxsim(q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor) -> torch.Tensor:
        """Row-aligned MaxSim: ``q [n, m, dim]``, ``d [n, l, dim]`` → ``[n]``."""
        sim = torch.bmm(q, d.transpose(1, 2))
        sim = sim.masked_fill(~d_mask.unsqueeze(1), float("-inf")).amax(dim=2)
        # A document with no scored token (cannot happen with [CLS] present) would give -inf: score 0.
        sim = torch.where(torch.isfinite(sim), sim, torch.zeros_like(sim))
        return (sim * q_mask).sum(dim=1)

    def _passage_chunks(self, passages: Sequence[str]):
        for s in range(0, len(passages), self.passage_chunk):
            yield s, self.encode(passages[s:s + self.passage_chunk], "passage")

    def score_batch(self, batch: pd.DataFrame, pairs_per_step: int = 128) -> np.ndarray:
        self.check_batch(batch)
        uq, qi = factorize(batch["query"].tolist())
        up, pi = factorize(batch["passage"].tolist())
        out = np.empty(len(batch), dtype=np.float32)
        if not len(batch):
            return out
        q, q_mask = self.encode(uq, "query")
        with torch.inference_mode():
            for start, (d, d_mask) in self._passage_chunks(up):
                rows = np.flatnonzero((pi >= start) & (pi < start + d.shape[0]))
                for s in range(0, len(rows), pairs_per_step):
                    r = rows[s:s + pairs_per_step]
                    qq = torch.as_tensor(qi[r], device=self.device)
                    dd = torch.as_tensor(pi[r] - start, device=self.device)
                    out[r] = self.maxsim(q[qq], q_mask[qq].float(), d[dd], d_mask[dd]).cpu().numpy()
        return out

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        out = np.zeros((len(queries), len(passages)), dtype=np.float32)
        if not len(queries) or not len(passages):
            return out
        q, q_mask = self.encode(list(queries), "query")
        with torch.inference_mode():
            for start, (d, d_mask) in self._passage_chunks(list(passages)):
                n = d.shape[0]
                for i in range(len(queries)):
                    qq = q[i:i + 1].expand(n, -1, -1)
                    qm = q_mask[i:i + 1].float().expand(n, -1)
                    out[i, start:start + n] = self.maxsim(qq, qm, d, d_mask).cpu().numpy()
        return out
