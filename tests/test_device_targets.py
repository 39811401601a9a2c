"""The device path of the magnitude target rule (torch, no host copy) against the NumPy path, bit
for bit, forced on the CPU."""

import numpy as np
import pytest
import torch
from torch import nn

from sb3_sparse.core import random_mask
from sb3_sparse.core.layers import to_masked
from sb3_sparse.core.topology import DeviceTargetSupport, TargetSupport


def bits(tensor):
    return tensor.detach().view(torch.int32)  # compares signed zeros too


def online_weights(kind, step, gen, target_mask):
    if kind == "gaussian":
        return torch.randn(16, 16, generator=gen)
    weights = torch.randint(-2, 3, (16, 16), generator=gen).float()  # exact ties in magnitude, zeros in the support
    # Every third update no newcomer gets a value (zeros in the support may tie with them):
    # the rule must leave the target alone.
    return weights * target_mask if step % 3 == 2 else weights


@pytest.mark.parametrize("kind", ["gaussian", "ties"])
@pytest.mark.parametrize("seed", range(4))
def test_device_rule_equals_numpy_rule_bit_for_bit(kind, seed):
    gen = torch.Generator().manual_seed(seed)
    tau = 0.3 if kind == "gaussian" else 0.5
    online = to_masked(nn.Linear(16, 16))
    online.set_mask_(random_mask((16, 16), 64, gen))
    pair = [to_masked(nn.Linear(16, 16)), to_masked(nn.Linear(16, 16))]
    mask = random_mask((16, 16), 64, gen)  # a support of its own, as after topology updates
    start = online_weights(kind, 0, gen, mask)
    for target in pair:
        target.set_mask_(mask)
        with torch.no_grad():
            target.weight.copy_(start * mask)
    host, device = TargetSupport(pair[0], online), DeviceTargetSupport(pair[1], online)
    changes = 0
    for step in range(15):
        with torch.no_grad():
            online.weight.copy_(online_weights(kind, step, gen, pair[0].weight_mask) * online.weight_mask)
            for target in pair:
                target.weight.mul_(1 - tau).add_(online.weight, alpha=tau)
        before = pair[0].weight_mask.clone()
        host.prune(pair[0], online)
        device.prune(pair[1], online)
        changes += not torch.equal(before, pair[0].weight_mask)
        assert torch.equal(bits(pair[0].weight), bits(pair[1].weight))
        assert torch.equal(pair[0].weight_mask, pair[1].weight_mask)
        assert np.array_equal(host.in_support, device.in_support.numpy())
        assert np.array_equal(np.sort(host.newcomers), np.flatnonzero(device.newcomers.numpy()))
        assert int(pair[1].weight_mask.sum()) == 64
    assert changes > 0  # newcomers got in: the ranking ran, not only the early exits
