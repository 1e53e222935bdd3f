"""The Ray Data encoder on a cluster with (logical) GPUs, and mixed precision against float32, all on CPU.

A local Ray started with ``num_gpus=2`` hands out GPU ids without any GPU: the actor pool must ask for one GPU per
actor (each actor sees its own id), and each actor must still encode on CPU because torch sees no CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from beir_fixture import write_beir

from tasb_ray.data import prepare_dataset
from tasb_ray.distributed.batch_encoder import encode_bucketed
from tasb_ray.distributed.encode import encode_corpus, load_embeddings
from tasb_ray.distributed.ray_data import gpu_pool
from tasb_ray.errors import TasbRayError
from tasb_ray.models.encoder import BertDot

# Measured on the tiny random BERT (2 layers, hidden 128), torch 2.13 CPU autocast, 2026-12-01: embeddings
# 1 - cosine <= 3.6e-7, loss 30.4937 vs 30.4828 (0.04%). The bounds leave room for other models and kernels (a
# trained 6-layer model drifts more in bf16), not for a broken path: dropout without a shared seed gave 77%.
MIN_COSINE_BF16 = 0.99
MAX_LOSS_REL_DIFF_BF16 = 0.05


def test_gpu_pool_one_gpu_per_actor_and_a_cpu_share():
    assert gpu_pool(16, 1) == (1, {"num_gpus": 1, "num_cpus": 1.0})
    assert gpu_pool(2, 2) == (2, {"num_gpus": 1, "num_cpus": 0.5})
    assert gpu_pool(2, 2, num_actors=1) == (1, {"num_gpus": 1, "num_cpus": 1.0})
    with pytest.raises(TasbRayError, match="has 0.5 GPUs"):
        gpu_pool(2, 0.5)


@pytest.fixture(scope="module")
def ray_gpus(tmp_path_factory):
    import ray

    from tasb_ray.distributed.runtime import init_ray

    started = init_ray(num_cpus=2, num_gpus=2, temp_dir=tmp_path_factory.mktemp("ray"),
                       object_store_memory=256 * 2**20)
    yield
    if started:
        ray.shutdown()


def test_encode_corpus_asks_one_gpu_per_actor_and_encodes_on_cpu(ray_gpus, tiny_model, tmp_path):
    prepared = prepare_dataset(str(write_beir(tmp_path / "beir")), cache_dir=tmp_path / "cache")
    stats: dict = {}
    out = encode_corpus(prepared, str(tiny_model), tmp_path / "emb", shard_rows=8, block_rows=4, batch_size=4,
                        show_progress=False, stats=stats)
    assert stats["actor_pool"] == {"actors": 2, "resources": {"num_gpus": 1, "num_cpus": 0.5}, "use_gpu": True}
    # device|Ray GPU ids|CUDA_VISIBLE_DEVICES as each actor saw it: one GPU id each, the only one it can see.
    saw = [s.split("|") for s in stats["actors_saw"]]
    assert saw, stats
    for device, ids, visible in saw:
        assert device == "cpu" and ids in ("0", "1") and visible == ids, saw
    ids, vectors = load_embeddings(out, verify=True)
    corpus = prepared.corpus()
    assert list(ids) == list(corpus["doc_id"])
    want = BertDot(str(tiny_model)).encode(corpus["text"].tolist(), "passage", batch_size=8)
    np.testing.assert_allclose(vectors, want, atol=1e-5, rtol=0)


# --- bf16 autocast against float32 (autocast on CPU) ---------------------------------------------------------


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_encoder_vectors_agree_with_fp32(tiny_model):
    enc = BertDot(str(tiny_model))
    texts = [f"what is known about heart disease and statin {i} in cardio research" * (1 + i % 3) for i in range(24)]
    fp32 = encode_bucketed(enc, texts, "passage", batch_size=8)
    bf16 = encode_bucketed(enc, texts, "passage", batch_size=8, amp_dtype=torch.bfloat16)
    assert not np.array_equal(fp32, bf16), "autocast did not change anything: the bf16 path did not run"
    cos = _cosines(fp32, bf16)
    print(f"bf16 vs fp32 embeddings: 1 - min cosine {1 - cos.min():.2e}")
    assert cos.min() >= MIN_COSINE_BF16, cos.min()


def test_bf16_training_loss_agrees_with_fp32(tiny_model, tmp_path):
    from tasb_ray.config import from_dict
    from tasb_ray.training.config import TrainingConfig
    from tasb_ray.training.trainer import Trainer

    from benchmarks.train_overhead import synthetic

    cfg = from_dict(TrainingConfig, {
        "alpha": 0.0, "progress": False, "device": "cpu",
        "student": {"model": str(tiny_model), "query_max_len": 16, "passage_max_len": 48},
        "sampler": {"sampling": "random", "batch_size": 8}, "optim": {"max_steps": 10}})
    trainer = Trainer(cfg, synthetic(32), tmp_path / "out")
    assert trainer.amp_dtype is None   # amp is for CUDA only unless asked for
    batch = next(trainer.sampler.fork())
    torch.manual_seed(0)   # the same dropout masks in both passes: only the precision differs
    fp32, _ = trainer.batch_loss(batch)
    trainer.amp_dtype = torch.bfloat16
    torch.manual_seed(0)
    bf16, _ = trainer.batch_loss(batch)
    print(f"bf16 vs fp32 loss: {bf16.total.item():.6f} vs {fp32.total.item():.6f}")
    assert bf16.total.dtype == torch.float32   # scores are cast up before the loss
    assert fp32.total.item() != bf16.total.item(), "autocast did not change anything: the bf16 path did not run"
    rel = abs(bf16.total.item() - fp32.total.item()) / abs(fp32.total.item())
    assert rel <= MAX_LOSS_REL_DIFF_BF16, rel
    # and a whole step runs (backward through the bf16 graph, AdamW on float32 weights)
    logs = trainer.train_step()
    assert np.isfinite(logs["loss"]) and next(trainer.student.parameters()).dtype == torch.float32
