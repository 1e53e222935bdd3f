"""Shared fixtures: a tiny random BERT (MiniLM tokenizer) and a tiny BEIR dataset. No network, no real weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from beir_fixture import write_beir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    import torch

    # Tiny models gain nothing from a second thread, and two OpenMP threads on 2 busy cores
    # (a Ray worker, a benchmark) run ~30x slower than one: measured 2.8 s vs 0.08 s per tiny step.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tasb_ray.models.tiny import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny_beir(tmp_path) -> Path:
    return write_beir(tmp_path / "tinybeir")


@pytest.fixture(scope="module")
def prepared_tiny_beir(tmp_path_factory):
    """The tiny BEIR dataset prepared once per test module (read only: tests share it)."""
    from tasb_ray.data import prepare_dataset

    root = write_beir(tmp_path_factory.mktemp("data") / "tinybeir")
    return prepare_dataset(str(root), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("TASB_RAY_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray per test module (2 CPUs, temp dir under pytest's tmp), shut down only if the module started it."""
    import ray

    from tasb_ray.distributed.runtime import init_ray

    started = init_ray(num_cpus=2, temp_dir=tmp_path_factory.mktemp("ray"), object_store_memory=256 * 2**20)
    yield
    if started:
        ray.shutdown()
