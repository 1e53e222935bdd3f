"""Encoding as a plain batch function: texts in, float32 vectors out, the same whichever texts share a batch.

:func:`encode_bucketed` is what every encoder path runs: in process (teacher vectors, clusters, evaluation) and
inside :class:`EncoderActor`, the Ray Data callable class of the sharded encoder (:mod:`tasb_ray.distributed.encode`)
and of the in-memory pipelines (:mod:`tasb_ray.distributed.texts`). Also here: the Arrow form of the vectors,
and the identity of a model (resolved name, encoder spec, weight fingerprint) that outputs are keyed by.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import ray
import torch
from transformers import AutoConfig

from tasb_ray.models.encoder import BertDot, spec_from_model
from tasb_ray.models.registry import loading_model, resolve_model
from tasb_ray.schema import DOC_ID, TEXT

log = logging.getLogger(__name__)

ROW = "row"
EMBEDDING = "embedding"
# Per-row note of the actor that encoded the row: "device|Ray GPU ids|CUDA_VISIBLE_DEVICES". Drivers read it into
# their stats (which GPU each actor held) and never write it to a shard.
PLACEMENT = "_placement"
NODE = "node"  # the Ray node that encoded a row: how a multi-node run shares out its work (manifest, stats)
PAD_MULTIPLE = 8


# --- deterministic encoding ------------------------------------------------------------------------------------


def encode_bucketed(encoder, texts: Sequence[str], kind: str, batch_size: int = 64,
                    pad_multiple: int = PAD_MULTIPLE, amp_dtype: torch.dtype | None | str = "auto") -> np.ndarray:
    """float32 ``[N, dim]`` embeddings of ``texts`` whose values do not depend on which texts are encoded together.

    Each text is padded to its own token length rounded up to ``pad_multiple`` (capped at the max length), and
    a forward pass only holds texts of one padded length; longest first, ``batch_size`` rows at most. Equal to
    ``BertDot.encode`` up to float rounding (padding is masked).

    Args:
        encoder: a :class:`tasb_ray.models.encoder.BertDot`.
        texts: the texts.
        kind: ``query`` or ``passage`` (selects the max length).
        batch_size: rows per forward pass.
        pad_multiple: padded lengths are multiples of this.
        amp_dtype: autocast dtype; ``auto`` is float16 on CUDA and none (float32) on CPU, None turns it off.
    """
    if kind not in ("query", "passage"):
        raise ValueError(f"kind must be 'query' or 'passage', got {kind!r}")
    n = len(texts)
    out = np.empty((n, encoder.dim), dtype=np.float32)
    if n == 0:
        return out
    max_len = encoder.spec.query_max_len if kind == "query" else encoder.spec.passage_max_len
    ids = encoder.tokenizer(list(texts), truncation=True, max_length=max_len, padding=False,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
    padded = np.minimum(-(-lengths // pad_multiple) * pad_multiple, max_len)
    pad_id = encoder.tokenizer.pad_token_id or 0
    device = encoder.device
    was_training = encoder.training
    encoder.eval()
    if amp_dtype == "auto":
        amp_dtype = torch.float16 if device.type == "cuda" else None
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                else torch.autocast(device.type, enabled=False))
    with torch.inference_mode(), autocast:
        for length in np.unique(padded)[::-1]:
            rows = np.flatnonzero(padded == length)
            for s in range(0, len(rows), batch_size):
                idx = rows[s:s + batch_size]
                input_ids = np.full((len(idx), int(length)), pad_id, dtype=np.int64)
                mask = np.zeros((len(idx), int(length)), dtype=np.int64)
                for j, i in enumerate(idx):
                    input_ids[j, :lengths[i]] = ids[i]
                    mask[j, :lengths[i]] = 1
                vec = encoder(torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device))
                out[idx] = vec.float().cpu().numpy()
    encoder.train(was_training)
    return out


def current_node_id() -> str:
    """The Ray node id of this process; "" outside Ray."""
    try:
        return ray.get_runtime_context().get_node_id() or ""
    except Exception:  # noqa: BLE001 - outside Ray
        return ""


def assigned_cpus() -> int:
    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    except Exception:  # noqa: BLE001 - outside Ray
        cpus = 0
    return max(1, int(round(cpus))) if cpus else 0


class EncoderActor:
    """Ray Data callable class: loads a :class:`BertDot` once, then encodes pyarrow batches.

    Input batches have ``row``, the id column and ``text``; output batches ``row``, the id column,
    ``embedding`` (fixed-size list of float32) and ``node`` (the actor's Ray node id), same rows, same order.

    Args:
        model, pooling, normalize, query_max_len, passage_max_len: as for :class:`BertDot`.
        kind: ``passage`` or ``query``.
        id_column: the id column to carry through (``doc_id`` or ``query_id``).
        batch_size: rows per forward pass.
        device: ``cuda`` or ``cpu``; ``cuda`` falls back to CPU when torch sees no CUDA (a GPU actor on a
            cluster whose GPUs are logical, as in tests). On CPU torch gets as many threads as the actor holds CPUs
            (``threads`` overrides): more threads than cores was measured 30x slower on this machine.
    """

    def __init__(self, model: str, pooling: str = "auto", normalize: bool | None = None,
                 query_max_len: int | None = None, passage_max_len: int | None = None, kind: str = "passage",
                 id_column: str = DOC_ID, batch_size: int = 64, device: str = "cpu", threads: int | None = None):
        if device == "cuda" and not torch.cuda.is_available():
            log.warning("EncoderActor: a GPU was asked for but torch sees no CUDA; encoding on CPU")
            device = "cpu"
        if device == "cpu":
            n = threads or assigned_cpus() or torch.get_num_threads()
            torch.set_num_threads(max(1, int(n)))
        self.encoder = BertDot(model, pooling=pooling, normalize=normalize, query_max_len=query_max_len,
                               passage_max_len=passage_max_len).to(device).eval()
        self.kind = kind
        self.id_column = id_column
        self.batch_size = batch_size
        self.placement = placement_note(device)
        if device == "cuda":
            # CUDA context, cuBLAS handles and kernel selection cost ~1 s on the first call: pay it here, not in
            # the first block (where it would count against the actor's throughput).
            encode_bucketed(self.encoder, ["warm up"] * 2, kind, batch_size)
        self.node = current_node_id()

    def __call__(self, batch):
        texts = batch.column(TEXT).to_pylist()
        vectors = encode_bucketed(self.encoder, texts, self.kind, self.batch_size)
        return pa.table({ROW: batch.column(ROW), self.id_column: batch.column(self.id_column),
                         EMBEDDING: fixed_size_list(vectors),
                         PLACEMENT: pa.array([self.placement] * batch.num_rows, type=pa.string()),
                         NODE: pa.array([self.node] * len(texts), pa.string())})


def placement_note(device: str) -> str:
    """``device|Ray GPU ids|CUDA_VISIBLE_DEVICES`` of this worker (see :data:`PLACEMENT`)."""
    try:
        ids = ",".join(str(i) for i in ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - outside a Ray worker
        ids = ""
    return f"{device}|{ids}|{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}"


def placements_of(table) -> list[str]:
    """The distinct placement notes of an encoded batch (empty for batches without the column)."""
    if PLACEMENT not in table.column_names:
        return []
    return sorted(set(table.column(PLACEMENT).unique().to_pylist()))


def fixed_size_list(vectors: np.ndarray):
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])


def vectors_of(column) -> np.ndarray:
    """``[rows, dim]`` float32 view of a fixed-size-list column (chunked or not)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dim = arr.type.list_size
    if len(arr) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    flat = arr.flatten()
    return flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), dim)


# --- model identity ----------------------------------------------------------------------------------------


def resolve_encoder(model: str, pooling: str = "auto", normalize: bool | None = None,
                    query_max_len: int | None = None, passage_max_len: int | None = None) -> tuple[str, dict]:
    """The resolved model name and the encoder spec :class:`BertDot` would use, without loading weights."""
    name = resolve_model(model)
    with loading_model(str(model)):
        # The config is small and local: a wrong name fails here, in one line, not inside every Ray actor.
        AutoConfig.from_pretrained(name)
        base = spec_from_model(name)
    overrides = {k: v for k, v in dict(pooling=None if pooling == "auto" else pooling, normalize=normalize,
                                       query_max_len=query_max_len, passage_max_len=passage_max_len).items()
                 if v is not None}
    return name, asdict(replace(base, **overrides))


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(name: str) -> str | None:
    """sha256 over a local model directory's weights and configs (None for a hub id): a checkpoint retrained in
    place must not pass for the one that produced existing shards."""
    p = Path(name)
    if not p.is_dir():
        return None
    files = [f for f in sorted(p.iterdir())
             if f.is_file() and (f.suffix in (".safetensors", ".bin", ".json", ".txt") or f.name == "modules.json")]
    # Every stage lookup of a sweep asks again; the weights are read once per process while no file changed.
    memo = (str(p.resolve()), *((f.name, (st := f.stat()).st_size, st.st_mtime_ns, st.st_ino) for f in files))
    if memo not in _FINGERPRINTS:
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
        _FINGERPRINTS[memo] = h.hexdigest()
    return _FINGERPRINTS[memo]
