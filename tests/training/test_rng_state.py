"""A checkpoint's rng.pt is read with torch's tensors-only unpickler: a planted pickle is refused, not run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from tasb_ray.errors import TasbRayError
from tasb_ray.training.trainer import load_rng_state


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        # Unpickling calls os.makedirs(marker): proof that code ran.
        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_planted_rng_state_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "checkpoint" / "rng.pt"
    path.parent.mkdir()
    obj = {"torch": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    with pytest.raises(TasbRayError) as e:
        load_rng_state(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_saved_rng_state_round_trips(tmp_path):
    path = tmp_path / "rng.pt"
    state = {"torch": torch.get_rng_state(), "scaler": torch.amp.GradScaler("cpu").state_dict()}
    torch.save(state, path)
    loaded = load_rng_state(path)
    assert torch.equal(loaded["torch"], state["torch"]) and loaded["scaler"] == state["scaler"]


def test_no_full_unpickle_left_in_the_package():
    root = Path(__file__).resolve().parents[2] / "tasb_ray"
    offenders = [f"{p}:{n}" for p in root.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line]
    assert offenders == []
