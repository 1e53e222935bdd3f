"""Shared plumbing of the transformer teachers: device choice, fp16 autocast, length-sorted batches."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch

from tasb_ray.models.encoder import pick_device  # noqa: F401 - re-exported for the teachers


def autocast(device: torch.device):
    """fp16 autocast on CUDA (teachers only run inference, where fp16 costs no measurable quality)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches over items sorted by decreasing length, so each batch pads to similar lengths.

    The longest batch comes first, so an out-of-memory error shows at once rather than at the end.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    for s in range(0, len(order), batch_size):
        yield order[s:s + batch_size]
