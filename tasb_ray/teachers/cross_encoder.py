"""BERT-CAT: a cross-encoder reading ``[CLS] query [SEP] passage [SEP]`` and emitting a relevance logit.

The TAS-B teacher ensemble is BERT-CAT plus ColBERT scores; BERT-CAT alone is the Margin-MSE
paper's strongest single teacher.

References:
    Nogueira & Cho, "Passage Re-ranking with BERT", arXiv 1901.04085.
    Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
    Distillation", arXiv 2010.02666 (BERT-CAT as the Margin-MSE teacher).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from tasb_ray.models.batching import length_sorted_batches
from tasb_ray.models.registry import loading_model, resolve_model
from tasb_ray.teachers._neural import autocast, pick_device
from tasb_ray.teachers.base import Teacher


class CrossEncoderTeacher(Teacher):
    """Any ``AutoModelForSequenceClassification`` checkpoint as a pair scorer.

    Score: with one label (the MS MARCO cross-encoders, the authors' BERT-CAT) the logit itself; with
    two or more labels ``logit[-1] - logit[0]``, i.e. the log-odds of the last ("relevant") class
    against the first ("not relevant") one. A margin of logits, unlike a softmax probability, does not
    saturate, which keeps Margin-MSE targets informative among strong candidates.

    Truncation: the query is cut to ``max_query_len`` tokens first, then the passage so that the whole
    sequence (special tokens included) fits ``max_query_len + max_passage_len`` tokens, capped at the
    model's maximum length. Cutting each side on its own keeps a long passage from eating the query.

    Args:
        model: HF id, local path or short name.
        max_query_len, max_passage_len: token budgets (see above).
        batch_size: pairs per forward pass; batches are formed over pairs sorted by length.
        device: torch device; ``None`` picks CUDA when available (then fp16 autocast).
    """

    name = "cross-encoder"

    def __init__(self, model: str | os.PathLike, max_query_len: int = 32, max_passage_len: int = 256,
                 batch_size: int = 32, device: str | None = None):
        hf_logging.disable_progress_bar()
        self.model_name = resolve_model(model)
        with loading_model(str(model)):
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self.model = AutoModelForSequenceClassification.from_pretrained(self.model_name)
        self.device = pick_device(device)
        self.model.to(self.device).eval()
        self.max_query_len = max_query_len
        limit = min(getattr(self.model.config, "max_position_embeddings", 512), 512)
        self.max_len = min(max_query_len + max_passage_len, limit)
        self.batch_size = batch_size

    def _truncate_queries(self, queries: Sequence[str]) -> list[str]:
        # Cut at the character end of the last kept token: exact for fast tokenizers and independent
        # of the model's pair template (BERT, RoBERTa, ... all tokenise the cut string identically).
        if not getattr(self.tokenizer, "is_fast", True):  # no offsets: rebuild the text from kept tokens
            return [self.tokenizer.convert_tokens_to_string(self.tokenizer.tokenize(q)[:self.max_query_len])
                    for q in queries]
        enc = self.tokenizer(list(queries), add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for text, ids, offsets in zip(queries, enc["input_ids"], enc["offset_mapping"]):
            out.append(text if len(ids) <= self.max_query_len else text[:offsets[self.max_query_len - 1][1]])
        return out

    def tokenize(self, queries: Sequence[str], passages: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for aligned query / passage lists (padded to the longest pair)."""
        batch = self.tokenizer(self._truncate_queries(queries), list(passages), padding=True,
                               truncation="only_second", max_length=self.max_len, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] == 1:
            return logits[:, 0]
        return logits[:, -1] - logits[:, 0]

    @torch.inference_mode()
    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """float32 scores of aligned (query, passage) lists."""
        out = np.empty(len(queries), dtype=np.float32)
        lengths = [len(q) + len(p) for q, p in zip(queries, passages)]
        with autocast(self.device):
            for idx in length_sorted_batches(lengths, self.batch_size):
                inputs = self.tokenize([queries[i] for i in idx], [passages[i] for i in idx])
                logits = self.model(**inputs).logits
                out[idx] = self.logits_to_scores(logits.float()).cpu().numpy()
        return out

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        return self.score_pairs(batch["query"].tolist(), batch["passage"].tolist())
