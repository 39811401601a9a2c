"""The sparse backend's staged magnitude target rule, both paths (NumPy on the CPU, torch forced on
the CPU, or on CUDA where there is one), against a straightforward dense reference and the masked
backend's rule, on random supports with exact ties in magnitude; and its stops on non-finite values."""

import numpy as np
import pytest
import torch
from torch import nn

from sb3_sparse.core import random_mask
from sb3_sparse.core.backends.sparse_target import DeviceRule, HostRule, StagedTarget
from sb3_sparse.core.layers import to_masked
from sb3_sparse.core.sparse_layer import SparseLinear
from sb3_sparse.core.topology import TargetSupport, prune_to_count_

SIDE = 16
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # of the torch path


def sparse_layer(mask, weight):
    positions = torch.nonzero(mask.reshape(-1)).reshape(-1)
    layer = SparseLinear(SIDE, SIDE, positions, bias=False)
    with torch.no_grad():
        layer.values.copy_(weight.reshape(-1)[positions])
    layer.values.requires_grad_(False)
    return layer


def reference_rule(weight, support, online, staging, tau):
    """The rule on dense arrays, by a full sort: of ``S`` and ``N`` the ``|S|`` largest stay.

    ``staging`` is dense, meaningful on ``online`` (M). Returns whether ``N`` is now empty.
    """
    weight[~online] *= np.float32(1 - tau)
    newcomers = online & ~support
    weight[online] = np.where(support[online], staging[online], 0.0)
    if not newcomers.any():
        return False
    threshold = np.max(np.abs(staging[newcomers]))
    if not np.isfinite(threshold):
        raise FloatingPointError("newcomer")
    if threshold == 0:
        return False
    if np.isnan(weight[support]).any():
        raise FloatingPointError("support")
    candidates = np.flatnonzero(support | newcomers)
    magnitudes = np.where(newcomers, np.abs(staging), np.abs(weight))[candidates]
    order = np.lexsort((candidates, magnitudes))  # ascending by magnitude, ties by position
    going, staying = candidates[order[: np.count_nonzero(newcomers)]], candidates[order[np.count_nonzero(newcomers) :]]
    support[going], support[staying] = False, True
    staging[online & ~support] = 0.0
    weight[going] = 0.0
    weight[online & support] = staging[online & support]
    return not (online & ~support).any()


def step_values(kind, gen, shape):
    if kind == "gaussian":
        return torch.randn(shape, generator=gen)
    if kind == "few":  # few newcomers reach the target at a time: most are not ranked
        return torch.randn(shape, generator=gen) * torch.where(torch.rand(shape, generator=gen) < 0.1, 1.0, 0.01)
    return torch.randint(-2, 3, shape, generator=gen).float() * 0.5  # exact ties and zeros


@pytest.mark.parametrize("kind", ["gaussian", "few", "ties"])
@pytest.mark.parametrize("seed", range(6))
def test_both_paths_equal_the_reference_and_the_masked_rule(kind, seed):
    gen = torch.Generator().manual_seed(seed)
    tau = {"gaussian": 0.3, "few": 0.05, "ties": 0.5}[kind]
    n_online = 64 if seed % 3 else 48  # also fewer online than target connections (pruning)
    online_mask = random_mask((SIDE, SIDE), n_online, gen).bool()
    target_mask = random_mask((SIDE, SIDE), 64, gen).bool()
    start = step_values(kind, gen, (SIDE, SIDE)) * target_mask
    layers = [sparse_layer(target_mask, start), sparse_layer(target_mask, start).to(DEVICE)]
    positions = torch.nonzero(online_mask.reshape(-1)).reshape(-1)
    staged = [StagedTarget(layers[0], positions, host=True), StagedTarget(layers[1], positions.to(DEVICE), host=False)]
    assert isinstance(staged[0].rule, HostRule) and isinstance(staged[1].rule, DeviceRule)
    masked_online, masked_target = to_masked(nn.Linear(SIDE, SIDE)), to_masked(nn.Linear(SIDE, SIDE))
    masked_online.set_mask_(online_mask.float())
    masked_target.set_mask_(target_mask.float())
    with torch.no_grad():
        masked_target.weight.copy_(start)
    index = TargetSupport(masked_target, masked_online)
    weight, support = start.numpy().reshape(-1).copy(), target_mask.numpy().reshape(-1).copy()
    online = online_mask.numpy().reshape(-1)
    staging = np.zeros(SIDE * SIDE, dtype=np.float32)
    staging[online & support] = weight[online & support]
    swaps = 0
    for step in range(40):
        values = step_values(kind, gen, (SIDE, SIDE))
        if kind == "ties" and step % 3 == 2:
            values = values * target_mask  # no newcomer gets a value: zeros in the support tie with them
        values = values.reshape(-1)[online_mask.reshape(-1)]
        with torch.no_grad():
            staged[0].staging.data.mul_(1 - tau).add_(values, alpha=tau)  # as SB3's polyak_update
            staged[1].staging.data.copy_(staged[0].staging.detach())  # the same (CUDA may round a + tau * b otherwise)
            masked_online.weight.view(-1)[online_mask.reshape(-1)] = values
            masked_target.weight.mul_(1 - tau).add_(masked_online.weight, alpha=tau)
            expected = torch.from_numpy(staging[online]).mul_(1 - tau).add_(values, alpha=tau)
        staging[online] = expected.numpy()
        before = support.copy()
        synced = reference_rule(weight, support, online, staging, tau)
        swaps += not np.array_equal(before, support)
        prune_to_count_(masked_target, masked_online, index)
        results = [s.magnitude(layer, tau) for s, layer in zip(staged, layers, strict=True)]
        assert results == [synced, synced]
        host, device = layers
        assert torch.equal(host.weight_positions, device.weight_positions.cpu())
        assert torch.equal(host.values.view(torch.int32), device.values.cpu().view(torch.int32))  # signed zeros too
        assert torch.equal(staged[0].staging.view(torch.int32), staged[1].staging.cpu().view(torch.int32))
        assert np.array_equal(host.dense_mask().numpy().reshape(-1) != 0, support)
        assert np.array_equal(host.to_dense_weight().numpy().reshape(-1), weight)
        assert np.array_equal(staged[0].staging.detach().numpy(), staging[online])
        assert torch.equal(masked_target.weight_mask.view(-1) != 0, torch.from_numpy(support))
        assert torch.equal(masked_target.weight.view(-1), torch.from_numpy(weight))
        if synced:
            assert host.live is None and int(host.values.numel()) == 64
            break
    assert swaps > 0  # newcomers got in: the ranking ran, not only the early exits


@pytest.mark.parametrize("host", [True, False])
@pytest.mark.parametrize(
    "where, value, raises",
    [
        ("newcomer", float("nan"), True),
        ("newcomer", float("inf"), True),
        ("support in M", float("nan"), True),
        ("support outside M", float("nan"), True),
        ("support in M", float("inf"), False),  # ranked like any large value, as by the masked rule
        ("support, no newcomer reached", float("nan"), False),  # nothing is ranked
    ],
)
def test_non_finite_values(host, where, value, raises):
    mask = torch.zeros(SIDE * SIDE, dtype=torch.bool)
    online = torch.arange(0, SIDE * SIDE, 2)  # even positions
    mask[SIDE * SIDE // 2 :] = True  # the upper half: odd ones outside M, even ones in M
    layer = sparse_layer(mask.view(SIDE, SIDE), torch.ones(SIDE, SIDE)).to("cpu" if host else DEVICE)
    staged = StagedTarget(layer, online.to(layer.values.device), host=host)
    with torch.no_grad():
        staging = staged.staging.detach()
        if where != "support, no newcomer reached":
            staging[:5] = 0.5  # newcomers: the lower half's even positions
        if where == "newcomer":
            staging[1] = value
        elif where == "support in M":
            staging[-1] = value
        else:
            layer.values[-1] = value  # an odd position of the upper half
    if raises:
        with pytest.raises(FloatingPointError):
            staged.magnitude(layer, 0.01)
    else:
        staged.magnitude(layer, 0.01)


@pytest.mark.parametrize("host", [True, False])
def test_a_support_holding_the_online_positions_only_decays(host):
    gen = torch.Generator().manual_seed(0)
    target_mask = random_mask((SIDE, SIDE), 64, gen).bool()
    positions = torch.nonzero(target_mask.reshape(-1)).reshape(-1)
    online = positions[torch.randperm(64, generator=gen)[:48]].sort().values  # pruned: M inside S, N empty
    start = torch.randn(SIDE, SIDE, generator=gen) * target_mask
    layer = sparse_layer(target_mask, start).to("cpu" if host else DEVICE)
    staged = StagedTarget(layer, online.to(layer.values.device), host=host)
    expected = start.reshape(-1)[positions].clone()
    in_online = torch.isin(positions, online)
    for _ in range(5):
        values = torch.randn(48, generator=gen).to(layer.values.device)
        with torch.no_grad():
            staged.staging.data.mul_(0.9).add_(values, alpha=0.1)
        assert not staged.magnitude(layer, 0.1)
        expected[~in_online] *= 0.9
        expected[in_online] = staged.staging.detach().cpu()
        assert torch.equal(layer.weight_positions.long().cpu(), positions)
        assert torch.equal(layer.values.detach().cpu(), expected)
