"""Shared plumbing of the transformer teachers: device choice and fp16 autocast."""

from __future__ import annotations

import contextlib

import torch

from tasb_ray.models.encoder import pick_device  # noqa: F401 - re-exported for the teachers


def autocast(device: torch.device):
    """fp16 autocast on CUDA (teachers only run inference, where fp16 costs no measurable quality)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
