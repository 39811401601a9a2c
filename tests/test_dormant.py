"""The dormant-neuron score on a hand-built network."""

import pytest
import torch
from torch import nn

from sb3_sparse.core.dormant import dormant_fractions, hidden_activations


def test_dormant_fraction_on_hand_built_network():
    net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.Tanh())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.05, 0.0], [-1.0, -1.0]]))
        net[0].bias.zero_()
    x = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    # |activations| per neuron, mean over the batch: 1.5, 1.5, 0.075, 0 -> layer mean 0.76875
    # scores: 1.951, 1.951, 0.0976, 0 -> with tau = 0.1 neurons 3 and 4 are dormant
    assert [name for name, _ in hidden_activations(net)] == ["0"]  # the output Tanh is excluded
    fractions = dormant_fractions(net, lambda: net(x), threshold=0.1)
    assert fractions == {"0": 0.5, "": 0.5}
    assert dormant_fractions(net, lambda: net(x), threshold=0.09)["0"] == pytest.approx(0.25)


def test_dormant_fraction_on_conv_uses_spatial_mean():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.LeakyReLU(), nn.Flatten(), nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        net[0].bias.zero_()
    fractions = dormant_fractions(net, lambda: net(torch.ones(3, 1, 2, 2)))
    assert fractions["0"] == 0.5


def test_callback_logs_dormant_fractions_every_k_updates():
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import configure

    from sb3_sparse import SparseTrainingCallback

    model = TD3(
        "SparseMlpPolicy", "Pendulum-v1", learning_starts=50, policy_kwargs=dict(net_arch=[32, 32], dormant_interval=10)
    )
    logged = []
    model.set_logger(configure(None, []))
    original = model.logger.record
    model.logger.record = lambda k, v, exclude=None: (logged.append((k, v)), original(k, v, exclude))
    model.learn(150, callback=SparseTrainingCallback())
    dormant = [(k, v) for k, v in logged if k.startswith("sparse/dormant/")]
    network_level = [v for k, v in dormant if k in ("sparse/dormant/actor", "sparse/dormant/critic")]
    assert len(network_level) == 2 * (model._n_updates // 10)
    assert all(0.0 <= v <= 1.0 for _, v in dormant)
    assert {k for k, _ in dormant} >= {"sparse/dormant/actor/mu.0", "sparse/dormant/critic/qf0.2"}
