"""A method is a composition: a new grow rule is defined and registered here, touching neither
the controller nor a backend."""

import torch
from torch import nn

from sb3_sparse.core import SparseConfig, SparseController
from sb3_sparse.core.methods import MAGNITUDE, METHODS, Method, Scorer
from sb3_sparse.core.sparsify import sparsify_


def test_a_new_grow_rule_is_one_composition(monkeypatch):
    # Grow at the first absent positions in row-major order: deterministic, so checkable.
    first_positions = Scorer(lambda weight, grad, generator: -torch.arange(weight.numel(), dtype=weight.dtype).view_as(weight))
    monkeypatch.setitem(METHODS, "toy", Method(drop=MAGNITUDE, grow=first_positions))
    config = SparseConfig(method="toy", sparsity=0.5, update_interval=1, drop_fraction=0.25, sparse_output_layer=True)
    net = nn.Sequential(nn.Linear(4, 4, bias=False))
    sparsify_(net, config, 0.5)
    layer = net[0]
    with torch.no_grad():
        layer.weight_mask.copy_(torch.tensor([[0.0, 0, 1, 1]] * 4))
        layer.weight.copy_(torch.arange(1.0, 17.0).view(4, 4) * layer.weight_mask)
    controller = SparseController(config, seed=0)
    controller.add_network("net", net, clock=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: only the topology moves
    controller.attach_optimizer("net", optimizer)
    controller.driven = True
    layer.weight.grad = torch.zeros(4, 4)
    optimizer.step()
    # drop the 2 smallest |w| (3 and 4, row 0); grow the 2 first absent positions (row 0, columns 0 and 1)
    expected = torch.tensor([[1.0, 1, 0, 0]] + [[0.0, 0, 1, 1]] * 3)
    assert torch.equal(layer.weight_mask, expected)
    assert controller.n_topology_updates == 1 and controller.last_changed_fraction == 0.25
    assert torch.all(layer.weight[expected == 1][:2] == 0)  # grown at exactly zero
