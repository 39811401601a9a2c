"""Topology updates on tiny networks: exact drop counts on nearly dense layers, and a stop on
non-finite values (issue #11, defects 6 and 2)."""

import pytest
import torch
from torch import nn

from sb3_sparse.core import SparseConfig, SparseController
from sb3_sparse.core.layers import to_masked
from sb3_sparse.core.sparsify import sparsify_
from sb3_sparse.core.topology import TargetSupport, prune_to_count_


def _controlled(config, net, name="critic"):
    controller = SparseController(config, seed=0)
    controller.add_network(name, net, clock=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    controller.attach_optimizer(name, optimizer)
    controller.driven = True
    return controller, optimizer


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_nearly_dense_layer_drops_eta_times_active(method):
    """No cap at the absent count: regrowth may re-pick just-dropped positions (they restart at 0)."""
    config = SparseConfig(method=method, sparsity=0.5, update_interval=1, drop_fraction=0.3, sparse_output_layer=True)
    net = nn.Sequential(nn.Linear(8, 8, bias=False))
    sparsify_(net, config, 0.5)
    layer = net[0]
    mask = torch.ones(64)
    mask[[5, 40]] = 0.0  # 62 of 64 connections
    with torch.no_grad():
        layer.weight_mask.copy_(mask.view(8, 8))
        layer.weight.copy_(torch.randperm(64, generator=torch.Generator().manual_seed(0)).view(8, 8) + 1.0)
        layer.weight.mul_(layer.weight_mask)
    controller, optimizer = _controlled(config, net)
    optimizer.param_groups[0]["lr"] = 0.0  # only the topology moves
    before = layer.weight.detach().clone().view(-1)
    n = round(0.3 * 62)
    smallest = torch.topk(torch.where(mask == 1, before.abs(), torch.inf), n, largest=False).indices
    net(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    after = layer.weight.detach().view(-1)
    assert int(layer.weight_mask.sum()) == 62 and controller.networks["critic"].counts == [62]
    assert torch.all(after[smallest] == 0)  # all n dropped: absent, or re-picked at exactly 0
    others = torch.ones(64, dtype=torch.bool)
    others[smallest] = False
    assert torch.equal(after[others & (mask == 1)], before[others & (mask == 1)])


def _two_layer_net(config):
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    sparsify_(net, config, config.sparsity)
    return net


@pytest.mark.parametrize("moments", [False, True])
@pytest.mark.parametrize("method", ["set", "rigl", "gmp"])
@pytest.mark.parametrize("where", ["weight", "gradient"])
def test_topology_update_stops_on_non_finite_values(where, method, moments):
    config = SparseConfig(
        method=method, sparsity=0.7, update_interval=5, mask_optimizer_moments=moments, prune_start_fraction=0.0
    )
    net = _two_layer_net(config)
    controller, optimizer = _controlled(config, net)
    controller.training_progress = 0.5
    for step in range(5):
        optimizer.zero_grad()
        net(torch.randn(16, 6)).pow(2).mean().backward()
        if step == 4:  # just before the topology update
            with torch.no_grad():
                tensor = net[2].weight if where == "weight" else net[2].weight.grad
                tensor.view(-1)[int(torch.nonzero(net[2].weight_mask.view(-1))[0])] = float("nan")
            masks = [net[0].weight_mask.clone(), net[2].weight_mask.clone()]
            with pytest.raises(FloatingPointError, match=r"critic.*'2'.*update 5"):
                optimizer.step()
            assert controller.n_topology_updates == 0
            assert torch.equal(masks[0], net[0].weight_mask) and torch.equal(masks[1], net[2].weight_mask)
        else:
            optimizer.step()


def test_target_rule_stops_on_non_finite_values():
    config = SparseConfig(method="set", sparsity=0.5, update_interval=1000)
    online = nn.Sequential(to_masked(nn.Linear(16, 16)))
    target = nn.Sequential(to_masked(nn.Linear(16, 16)))
    with torch.no_grad():
        online[0].weight_mask.copy_((torch.arange(256) % 2).view(16, 16).float())
        target[0].weight_mask.copy_((torch.arange(256) // 128).view(16, 16).float())  # a different support
        online[0].weight.mul_(online[0].weight_mask)
        target[0].weight.mul_(target[0].weight_mask)
    controller = SparseController(config, seed=0)
    controller.add_network("critic", online, target, clock=True)
    controller.clock = 42
    with torch.no_grad():
        online[0].weight.view(-1)[1] = float("nan")  # an online-only position
        for p, t in zip(online.parameters(), target.parameters(), strict=True):
            t.data.mul_(0.99).add_(p.data, alpha=0.01)
    with pytest.raises(FloatingPointError, match=r"critic.*target.*'0'.*update 42"):
        target(torch.zeros(1, 16))


@pytest.mark.parametrize("position", ["newcomer", "support"])
def test_prune_to_count_refuses_to_rank_nan(position):
    online, target = to_masked(nn.Linear(16, 16)), to_masked(nn.Linear(16, 16))
    with torch.no_grad():
        online.weight_mask.copy_((torch.arange(256) % 2).view(16, 16).float())
        target.weight_mask.copy_((torch.arange(256) // 128).view(16, 16).float())
        target.weight.mul_(target.weight_mask)
        online.weight.mul_(online.weight_mask)
    index = TargetSupport(target, online)
    with torch.no_grad():
        target.weight.add_(online.weight, alpha=0.5)
        target.weight.view(-1)[1 if position == "newcomer" else 200] = float("nan")
    with pytest.raises(FloatingPointError):
        prune_to_count_(target, online, index)
