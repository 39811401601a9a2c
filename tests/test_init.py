"""Sparsity-aware initialization (``init="sparse"``, Graesser et al.'s ``fixed_sparse_init``)."""

import math

import pytest
import torch
from stable_baselines3 import DQN, TD3
from torch import nn

from sb3_sparse.core import SparseConfig, resolve_config
from sb3_sparse.core.initialization import sparse_fans, sparse_init_, sparse_init_bounds
from sb3_sparse.core.layers import MaskedConv2d, MaskedLinear
from sb3_sparse.core.sparsify import sparsify_


def test_sparse_init_variance_per_unit_on_a_known_mask():
    """Two blocks with hand-computed fans: outputs 0-199 read inputs 0-99, outputs 200-399 read all 400."""
    torch.manual_seed(0)
    layer = MaskedLinear(400, 400)
    mask = torch.zeros(400, 400)
    mask[:200, :100] = 1.0
    mask[200:, :] = 1.0
    layer.set_mask_(mask)
    sparse_init_(layer)
    w = layer.weight.detach()
    # Inputs 0-99 leave to all 400 outputs; inputs 100-399 to the 200 outputs of the second block.
    blocks = {
        "fan_in 100, fan_out 400": (w[:200, :100], 1.0 / ((100 + 400) / 2)),
        "fan_in 400, fan_out 400": (w[200:, :100], 1.0 / ((400 + 400) / 2)),
        "fan_in 400, fan_out 200": (w[200:, 100:], 1.0 / ((400 + 200) / 2)),
    }
    for name, (values, variance) in blocks.items():
        assert values.var().item() == pytest.approx(variance, rel=0.05), name
        assert values.abs().max().item() <= math.sqrt(3 * variance), name  # uniform on [-b, b]
        assert values.abs().max().item() > 0.98 * math.sqrt(3 * variance), name
    assert torch.all(w[:200, 100:] == 0)
    # Per unit: each output unit's weights scaled by their bound are U(-1, 1), variance 1/3.
    bounds = sparse_init_bounds(mask)
    scaled = torch.where(mask.bool(), w / bounds.clamp(min=1e-12), torch.nan)
    per_unit = scaled.nanmean(dim=1, keepdim=True)
    per_unit_var = ((scaled - per_unit) ** 2).nanmean(dim=1)
    assert per_unit_var.mean().item() == pytest.approx(1 / 3, rel=0.02)
    # Within 5 standard errors per unit (the variance of x**2 for x ~ U(-1, 1) is 1/5 - 1/9).
    standard_error = torch.sqrt((1 / 5 - 1 / 9) / mask.sum(dim=1))
    assert torch.all((per_unit_var - 1 / 3).abs() < 5 * standard_error)


def _reference_bounds(mask: torch.Tensor) -> torch.Tensor:
    """Graesser et al.'s rule written out connection by connection (PyTorch layout (out, in, *kernel)):
    fan_in of the output unit and fan_out of the input unit, both counted over kernel positions."""
    bounds = torch.zeros_like(mask)
    for index in mask.nonzero().tolist():
        out, inp = index[0], index[1]
        fan_in = mask[out].sum().item()
        fan_out = mask[:, inp].sum().item()
        bounds[tuple(index)] = math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2))
    return bounds


@pytest.mark.parametrize("shape", [(7, 5), (6, 4, 3, 3)])
def test_bounds_match_the_rule_connection_by_connection(shape):
    generator = torch.Generator().manual_seed(1)
    mask = (torch.rand(shape, generator=generator) < 0.3).float()
    mask.view(-1)[0] = 1.0
    torch.testing.assert_close(sparse_init_bounds(mask), _reference_bounds(mask))


def test_grouped_conv_fans_stay_within_each_group():
    conv = MaskedConv2d(4, 6, 3, groups=2)
    fan_in, fan_out = sparse_fans(torch.ones_like(conv.weight), groups=2)
    assert set(fan_in.unique().tolist()) == {2 * 9} and set(fan_out.unique().tolist()) == {3 * 9}
    conv.set_mask_((torch.arange(conv.weight.numel()) % 3 == 0).float().view_as(conv.weight))
    sparse_init_(conv)
    bounds = sparse_init_bounds(conv.weight_mask, groups=2)
    assert torch.all(conv.weight.abs() <= bounds) and torch.all((conv.weight != 0) == conv.weight_mask.bool())


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def test_dense_init_is_pytorch_init_times_mask_and_sparse_redraws():
    for init in ("dense", "sparse"):
        torch.manual_seed(0)
        net = _net()
        before = [m.weight.detach().clone() for m in net if isinstance(m, nn.Linear)]
        sparsify_(net, SparseConfig(method="static", sparsity=0.5, init=init), 0.5)
        for layer, dense in zip([m for m in net if isinstance(m, nn.Linear)], before, strict=True):
            mask = getattr(layer, "weight_mask", None)
            if mask is None:  # the output layer stays dense and keeps PyTorch's init
                assert torch.equal(layer.weight, dense)
                continue
            assert torch.all(layer.weight[mask == 0] == 0)
            if init == "dense":
                assert torch.equal(layer.weight, dense * mask)
            else:
                assert not torch.equal(layer.weight, dense * mask)
                assert torch.all(layer.weight.abs() <= sparse_init_bounds(mask))


def test_init_is_validated_and_presets_follow_their_source():
    with pytest.raises(ValueError, match=r"Unknown init='glorot'; allowed: \['dense', 'sparse'\]"):
        SparseConfig(init="glorot")
    for preset in ("dqn-rigl", "dqn-rigl-nobias", "dqn-set", None):
        assert resolve_config(preset, "dqn", {}).init == "sparse", preset
    assert resolve_config("dqn-set", "dqn", {}).method == "set"
    assert resolve_config("dqn-gmp", "dqn", {}).init == "dense"
    for preset, algo in [("static", "td3"), ("ds-td3", "td3"), ("ds-sac", "sac"), ("tows", "sac"), (None, "td3")]:
        assert resolve_config(preset, algo, {}).init == "dense", preset
    assert resolve_config("dqn-rigl", "dqn", {"init": "dense"}).init == "dense"


def _weights(model):
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


@pytest.mark.parametrize(
    "algo, env, kwargs, expected",
    [
        (DQN, "CartPole-v1", dict(preset="dqn-rigl", init="dense"), "dense"),
        (DQN, "CartPole-v1", dict(method="static", sparsity=0.5), "sparse"),
        (TD3, "Pendulum-v1", dict(preset="static", init="sparse"), "sparse"),
    ],
)
def test_sparse_init_is_seeded_matches_targets_and_survives_save_load(tmp_path, algo, env, kwargs, expected):
    kwargs = {"net_arch": [32, 32]} | kwargs
    model = algo("SparseMlpPolicy", env, policy_kwargs=kwargs, seed=3, device="cpu")
    policy = model.policy
    assert policy.sparse_config.init == expected
    pairs = [("q_net", "q_net_target")] if algo is DQN else [("actor", "actor_target"), ("critic", "critic_target")]
    for online, target in ((getattr(policy, a), getattr(policy, b)) for a, b in pairs):
        for (name, a), b in zip(online.state_dict().items(), target.state_dict().values(), strict=True):
            assert torch.equal(a, b), name  # targets copied after the redraw
    again = algo("SparseMlpPolicy", env, policy_kwargs=kwargs, seed=3, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(_weights(model).values(), _weights(again).values(), strict=True))
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.sparse_config.init == expected
    assert loaded.policy_kwargs.get("init", expected) == expected
    for key, value in _weights(model).items():
        assert torch.equal(value, loaded.policy.state_dict()[key]), key
