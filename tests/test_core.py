"""The pure-PyTorch core on tiny networks: distributions, masks, drop/grow, target rules."""

import numpy as np
import pytest
import torch
from torch import nn

from sb3_sparse.core import SparseConfig, SparseController, lambda_counts, layer_counts, random_mask, resolve_config
from sb3_sparse.core.layers import MaskedLinear, to_masked
from sb3_sparse.core.schedules import cubic_sparsity_at, drop_fraction_at
from sb3_sparse.core.sparsify import output_layer_names, sparsify_
from sb3_sparse.core.topology import TargetSupport, drop_smallest, grow_best, prune_to_count_

ACTOR = [(256, 17), (256, 256), (6, 256)]


def sparsities(counts, shapes):
    return [1 - c / (s[0] * s[1]) for c, s in zip(counts, shapes, strict=False)]


def test_er_matches_reference_example():
    # Grooten et al.'s code, global 0.9 with a dense output layer: [0.552, 0.944, 0].
    counts = layer_counts(ACTOR, [True, True, False], 0.9, "er")
    assert sparsities(counts, ACTOR) == pytest.approx([0.552, 0.944, 0.0], abs=1e-3)
    total = sum(s[0] * s[1] for s in ACTOR)
    assert 1 - sum(counts) / total == pytest.approx(0.9, abs=1e-4)


def test_uniform_matches_reference_example():
    counts = layer_counts(ACTOR, [True, True, False], 0.9, "uniform")
    assert sparsities(counts, ACTOR) == pytest.approx([0.920, 0.920, 0.0], abs=1e-3)


def test_er_layer_over_density_one_is_made_dense_and_rest_resolved():
    shapes = [(256, 3), (256, 256), (1, 256)]
    counts = layer_counts(shapes, [True, True, False], 0.5, "er")
    assert counts[0] == 256 * 3  # ER would ask for density > 1 here
    total = sum(s[0] * s[1] for s in shapes)
    assert 1 - sum(counts) / total == pytest.approx(0.5, abs=1e-4)


def test_erk_uses_kernel_dimensions():
    shapes = [(32, 4, 8, 8), (64, 32, 4, 4), (64, 64, 3, 3)]
    counts = layer_counts(shapes, [True] * 3, 0.9, "erk")
    densities = [c / (a * b * h * w) for c, (a, b, h, w) in zip(counts, shapes, strict=False)]
    raw = [sum(s) / (s[0] * s[1] * s[2] * s[3]) for s in shapes]
    assert densities[0] / densities[2] == pytest.approx(raw[0] / raw[2], rel=1e-3)


def test_lambda_counts_are_exact():
    assert lambda_counts([(256, 17), (256, 256)], (7, 64)) == [7 * 273, 64 * 512]
    with pytest.raises(ValueError, match=r"lambdas\[0\]"):
        lambda_counts([(256, 3), (256, 256)], (7, 64))  # 7 * 259 > 768 connections


@pytest.mark.parametrize("sparsity", [1.0, 1.2, -0.1])
def test_bad_sparsity_is_rejected(sparsity):
    with pytest.raises(ValueError, match="sparsity must be in"):
        SparseConfig(sparsity=sparsity)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("drop_fraction", 1.0, "drop_fraction must be in"),
        ("drop_fraction", 0.0, "drop_fraction must be in"),
        ("update_interval", 0, "update_interval must be"),
        ("method", "magic", "Unknown method"),
        ("distribution", "gaussian", "Unknown distribution"),
        ("target_sparsity", "none", "Unknown target_sparsity"),
        ("end_fraction", 0.0, "end_fraction must be in"),
        ("actor_sparsity", 1.5, "actor_sparsity must be in"),
    ],
)
def test_bad_settings_name_the_parameter(field, value, message):
    with pytest.raises(ValueError, match=message):
        SparseConfig(**{field: value})


def test_presets_and_overrides():
    assert resolve_config("set", "td3", {}).drop_fraction == 0.05
    assert resolve_config("set", "sac", {}).drop_fraction == 0.1
    tows = resolve_config("tows", "td3", {"sparsity": 0.7})
    assert tows.mask_optimizer_moments and tows.sparsity == 0.7 and tows.method == "set"
    assert resolve_config("static", "td3", {}).method == "static"
    with pytest.raises(ValueError, match="Unknown preset"):
        resolve_config("rigl-xl", "td3", {})
    with pytest.raises(TypeError, match="Did you mean 'sparsity'"):
        resolve_config(None, "td3", {"sparsty": 0.5})


def test_random_mask_has_exact_count():
    mask = random_mask((64, 32), 100, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 100 and set(mask.unique().tolist()) == {0.0, 1.0}


def test_sparsify_keeps_outputs_dense_and_hits_sparsity():
    net = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    assert output_layer_names(net) == {"4"}
    counts = sparsify_(net, SparseConfig(sparsity=0.8), 0.8)
    assert isinstance(net[0], MaskedLinear) and isinstance(net[2], MaskedLinear) and type(net[4]) is nn.Linear
    for layer, count in zip([net[0], net[2]], counts, strict=False):
        assert int(layer.weight_mask.sum()) == count
        assert torch.all(layer.weight[layer.weight_mask == 0] == 0)
    assert 1 - sum(counts) / (640 + 4096 + 128) == pytest.approx(0.8, abs=1e-3)


def test_bias_false_removes_sparse_layer_biases():
    net = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 2))
    sparsify_(net, SparseConfig(sparsity=0.3, bias=False), 0.3)
    assert net[0].bias is None and net[2].bias is not None


def test_drop_smallest_and_grow_random():
    layer = to_masked(nn.Linear(8, 8))
    layer.set_mask_(random_mask((8, 8), 32, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        layer.weight.mul_(0).add_(torch.arange(64.0).view(8, 8) - 31.5).mul_(layer.weight_mask)
    active_before = layer.weight[layer.weight_mask == 1].abs()
    dropped = drop_smallest(layer, 4)
    assert sorted(layer.weight.detach().view(-1).abs()[dropped].tolist()) == [0.0] * 4
    kept = layer.weight[layer.weight_mask == 1].abs()
    assert kept.min() >= torch.sort(active_before).values[3]
    grown = grow_best(layer, 4, torch.rand(8, 8, generator=torch.Generator().manual_seed(2)))
    assert int(layer.weight_mask.sum()) == 32
    assert torch.all(layer.weight.view(-1)[grown] == 0)


def test_prune_to_count_matches_brute_force_over_repeated_updates():
    gen = torch.Generator().manual_seed(3)
    newcomers_all_out = 0  # updates where no target entry was as small as a newcomer
    for trial in range(10):
        tau = 0.01 if trial % 3 == 0 else 0.3  # SB3's small tau: newcomers rarely get in
        online = to_masked(nn.Linear(16, 16))
        target = to_masked(nn.Linear(16, 16))
        online.set_mask_(random_mask((16, 16), 64, gen))
        target.set_mask_(random_mask((16, 16), 64, gen) if trial % 2 else online.weight_mask.clone())
        with torch.no_grad():
            target.weight.copy_(torch.randn(16, 16, generator=gen) * target.weight_mask)
        index = TargetSupport(target, online)
        for _ in range(15):  # the index is carried across target updates, as in training
            with torch.no_grad():
                online.weight.copy_(torch.randn(16, 16, generator=gen) * online.weight_mask)
                target.weight.mul_(1 - tau).add_(online.weight, alpha=tau)  # a polyak update
                if trial >= 6:  # regrown online connections start at exactly 0: ties at zero
                    online.weight.view(-1)[torch.randperm(256, generator=gen)[:64]] = 0.0
                    target.weight.mul_(1 - tau).add_(online.weight, alpha=tau)
            before = target.weight.detach().abs().view(-1).clone()
            was = target.weight_mask.view(-1) == 1
            newcomers_all_out += bool(before[was].min() > before[~was].max())
            prune_to_count_(target, online, index)
            assert int(target.weight_mask.sum()) == 64
            kept = target.weight_mask.view(-1) == 1
            assert before[kept].min() >= before[~kept].max()  # the largest stay
            if trial < 6:  # no ties: exactly a top-k
                expected = torch.zeros(256)
                expected[torch.topk(before, 64).indices] = 1
                assert torch.equal(target.weight_mask.view(-1), expected)
            assert torch.all(target.weight[target.weight_mask == 0] == 0)
            rebuilt = TargetSupport(target, online)
            assert np.array_equal(np.sort(rebuilt.newcomers), np.sort(index.newcomers))
            assert np.array_equal(rebuilt.in_support, index.in_support) and rebuilt.count == index.count
    assert 0 < newcomers_all_out < 150  # both branches of the rule ran


def test_prune_to_count_follows_tensors_to_new_storage():
    """Pruning keeps NumPy views of the tensors; Module.to() gives them new storage."""
    gen = torch.Generator().manual_seed(4)
    online, target = to_masked(nn.Linear(16, 16)), to_masked(nn.Linear(16, 16))
    online.set_mask_(random_mask((16, 16), 64, gen))
    target.set_mask_(random_mask((16, 16), 64, gen))
    index = TargetSupport(target, online)
    for step in range(4):
        with torch.no_grad():
            online.weight.copy_(torch.randn(16, 16, generator=gen) * online.weight_mask)
            target.weight.mul_(0.7).add_(online.weight, alpha=0.3)
        if step == 2:  # what a device round trip does
            target.weight.data = target.weight.data.clone()
            target._buffers["weight_mask"] = target.weight_mask.clone()
        before = target.weight.detach().abs().view(-1).clone()
        prune_to_count_(target, online, index)
        expected = torch.zeros(256)
        expected[torch.topk(before, 64).indices] = 1
        assert torch.equal(target.weight_mask.view(-1), expected)
        assert torch.all(target.weight[target.weight_mask == 0] == 0)


def test_schedules():
    assert drop_fraction_at(0.3, "constant", 0.5, 0.8) == 0.3
    assert drop_fraction_at(0.3, "cosine", 0.0, 0.8) == pytest.approx(0.3)
    assert drop_fraction_at(0.3, "cosine", 0.4, 0.8) == pytest.approx(0.15)
    assert drop_fraction_at(0.3, "cosine", 0.9, 0.8) == 0.0
    assert cubic_sparsity_at(0.0, 0.9, 0.1, 0.2, 0.8) == 0.0
    assert cubic_sparsity_at(0.0, 0.9, 0.5, 0.2, 0.8) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity_at(0.0, 0.9, 0.8, 0.2, 0.8) == 0.9


def _tiny_setup(config, optimizer=torch.optim.Adam, **optimizer_kwargs):
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    sparsify_(net, config, config.sparsity)
    controller = SparseController(config, seed=0)
    controller.add_network("q", net, clock=True)
    opt = optimizer(net.parameters(), lr=1e-2, **optimizer_kwargs)
    controller.attach_optimizer("q", opt)
    controller.driven = True
    return net, opt, controller


def _train(net, opt, steps):
    for _ in range(steps):
        x = torch.randn(16, 6)
        loss = (net(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_controller_evolves_on_schedule_with_moment_masking():
    config = SparseConfig(method="set", sparsity=0.7, update_interval=5, drop_fraction=0.2, mask_optimizer_moments=True)
    net, opt, controller = _tiny_setup(config)
    masks = [net[0].weight_mask.clone(), net[2].weight_mask.clone()]
    _train(net, opt, 4)
    assert controller.n_topology_updates == 0
    _train(net, opt, 1)
    assert controller.n_topology_updates == 1 and controller.last_changed_fraction > 0
    assert not torch.equal(masks[1], net[2].weight_mask)
    for layer, mask in zip([net[0], net[2]], masks, strict=False):
        assert int(layer.weight_mask.sum()) == int(mask.sum())
        absent = layer.weight_mask == 0
        assert torch.all(layer.weight[absent] == 0)
        for v in opt.state[layer.weight].values():
            if v.shape == layer.weight.shape:
                assert torch.all(v[absent] == 0)
        new = (layer.weight_mask == 1) & (mask == 0)
        if new.any():  # new connections start at zero weight and zero moments
            assert torch.all(opt.state[layer.weight]["exp_avg"][new] == 0)


@pytest.mark.parametrize(
    ("optimizer", "kwargs"),
    [(torch.optim.Adam, {}), (torch.optim.SGD, {"momentum": 0.9}), (torch.optim.NAdam, {})],
)
def test_absent_weights_stay_zero_without_moment_masking(optimizer, kwargs):
    """SET without moment masking: gradients are masked and a dropped connection's first
    moment is zeroed, so Adam/SGD leave absent weights at exactly 0 with no per-step re-mask;
    an optimizer not known to do so (NAdam) gets the re-mask."""
    config = SparseConfig(method="set", sparsity=0.7, update_interval=3, drop_fraction=0.3)
    net, opt, controller = _tiny_setup(config, optimizer, **kwargs)
    assert controller.networks["q"].remask_weights == (optimizer is torch.optim.NAdam)
    layers = [net[0], net[2]]
    checks = []
    opt.register_step_post_hook(lambda *a: checks.append(all(torch.all(m.weight[m.weight_mask == 0] == 0) for m in layers)))
    _train(net, opt, 2)
    before = net[2].weight_mask.clone()
    _train(net, opt, 1)  # a topology update
    dropped = (before == 1) & (net[2].weight_mask == 0)
    assert dropped.any()
    state = opt.state[net[2].weight]
    first = state.get("exp_avg", state.get("momentum_buffer"))
    assert torch.all(first[dropped] == 0)
    if "exp_avg_sq" in state:  # the second moment is left to decay, as in the papers' SET
        assert torch.any(state["exp_avg_sq"][dropped] > 0)
    _train(net, opt, 17)
    assert controller.n_topology_updates == 6 and len(checks) == 20 and all(checks)


def test_without_driver_topology_stays_static_and_warns_once():
    config = SparseConfig(method="set", sparsity=0.7, update_interval=2)
    net, opt, controller = _tiny_setup(config)
    controller.driven = False
    before = net[2].weight_mask.clone()
    with pytest.warns(UserWarning, match="SparseTrainingCallback"):
        _train(net, opt, 6)
    assert torch.equal(before, net[2].weight_mask)
