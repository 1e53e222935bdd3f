"""What every stage of a run needs: its prepared dataset, work and output directories, an encoder, a Ray scope."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tasb_ray.data import PreparedDataset, prepare_dataset
from tasb_ray.data.prepare import PrepareOptions, cache_root
from tasb_ray.distributed.options import RayOptions
from tasb_ray.distributed.runtime import ray_session
from tasb_ray.models.encoder import BertDot, pick_device
from tasb_ray.training.config import TrainingConfig


def open_data(cfg: TrainingConfig) -> PreparedDataset:
    d = cfg.data
    return prepare_dataset(d.dataset, cache_dir=d.cache_dir,
                           options=PrepareOptions(dev_fraction=d.dev_fraction, dev_seed=d.dev_seed))


def work_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.work_dir) if cfg.work_dir else cache_root(cfg.data.cache_dir) / "work"


def output_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.output_dir) if cfg.output_dir else Path("runs") / cfg.name


def student_encoder(model: str, cfg: TrainingConfig):
    s = cfg.student
    enc = BertDot(model, pooling=s.pooling, normalize=s.normalize, query_max_len=s.query_max_len,
                  passage_max_len=s.passage_max_len)
    return enc.to(pick_device(cfg.device)).eval()


def ray_scope(use_ray: bool, ray: RayOptions):
    """One Ray instance for a stage build (its steps would each start and stop their own); else nothing."""
    if not use_ray:
        return contextlib.nullcontext()
    return ray_session(ray.address)

