import pytest
import torch

from tasb_ray.errors import ConfigError
from tasb_ray.models.encoder import BertDot, reinit_top_layers, transformer_layers


def _state(model):
    return {k: v.detach().clone() for k, v in model.bert.state_dict().items()}


def test_reinit_changes_exactly_the_top_layers(tiny_model):
    before = BertDot(str(tiny_model))
    n_layers = len(transformer_layers(before.bert))
    assert n_layers >= 2
    after = BertDot(str(tiny_model))
    rng_before = torch.get_rng_state()
    reinit_top_layers(after.bert, 1, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global stream is untouched
    a, b = _state(before), _state(after)
    top = f"encoder.layer.{n_layers - 1}."
    for key in a:
        if key.startswith(top) and key.endswith("weight") and "LayerNorm" not in key:
            assert not torch.equal(a[key], b[key]), key
        elif not key.startswith(top):
            assert torch.equal(a[key], b[key]), key
    # LayerNorm goes back to its initial weight 1 / bias 0, as _init_weights defines it.
    ln = next(k for k in b if k.startswith(top) and "LayerNorm.weight" in k)
    assert torch.equal(b[ln], torch.ones_like(b[ln]))
    again = BertDot(str(tiny_model))
    reinit_top_layers(again.bert, 1, seed=7)
    assert all(torch.equal(v, _state(again)[k]) for k, v in b.items())  # same seed, same weights
    other = BertDot(str(tiny_model))
    reinit_top_layers(other.bert, 1, seed=8)
    assert not all(torch.equal(v, _state(other)[k]) for k, v in b.items())


def test_reinit_zero_is_a_no_op_and_too_many_is_refused(tiny_model):
    model = BertDot(str(tiny_model))
    before = _state(model)
    reinit_top_layers(model.bert, 0, seed=1)
    assert all(torch.equal(v, _state(model)[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="reinit_top_layers"):
        reinit_top_layers(model.bert, 99, seed=1)
