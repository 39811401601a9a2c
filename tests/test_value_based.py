"""DQN, QR-DQN, TQC, CrossQ and DDPG with every method; RigL growth, pruning schedule, bias removal."""

import ale_py
import gymnasium as gym
import pytest
import torch
from invariants import InvariantProbe, check_online, check_target
from sb3_contrib import QRDQN, TQC, CrossQ
from stable_baselines3 import DDPG, DQN
from stable_baselines3.common.env_util import make_atari_env
from stable_baselines3.common.utils import polyak_update

import sb3_sparse
from sb3_sparse import SparseTrainingCallback
from sb3_sparse.core import SparseConfig, SparseController
from sb3_sparse.core.config import PRESETS
from sb3_sparse.core.sparsify import sparsify_

gym.register_envs(ale_py)

ALGOS = {"dqn": (DQN, "CartPole-v1"), "qrdqn": (QRDQN, "CartPole-v1"), "tqc": (TQC, "Pendulum-v1"),
         "crossq": (CrossQ, "Pendulum-v1"), "ddpg": (DDPG, "Pendulum-v1")}  # fmt: skip
METHODS = {
    "static": dict(method="static", sparsity=0.8),
    "set": dict(method="set", sparsity=0.8, drop_fraction=0.3),
    "tows": dict(preset="tows", sparsity=0.8, drop_fraction=0.3),
    "rigl": dict(method="rigl", sparsity=0.8, drop_fraction=0.3, drop_schedule="cosine", mask_optimizer_moments=True),
    "gmp": dict(method="gmp", sparsity=0.8, prune_start_fraction=0.1, prune_end_fraction=0.6),
}


def make(algo, method, **extra):
    cls, env = ALGOS[algo]
    kwargs = {"learning_starts": 64, "batch_size": 32, "seed": 0}
    if algo in ("dqn", "qrdqn"):
        kwargs |= {"train_freq": 1, "target_update_interval": 7}  # several hard copies between updates
    settings = dict(METHODS[method])
    if algo in ("dqn", "qrdqn") and "preset" in settings:  # TowS's settings on DQN: its preset is TD3/SAC's
        settings = PRESETS[settings.pop("preset")] | settings
    policy_kwargs = {"net_arch": [64, 64], **settings, "update_interval": 10, **extra}
    if algo in ("qrdqn", "tqc"):  # quantile outputs: a dense output layer alone exceeds 20% of the weights
        policy_kwargs.setdefault("sparse_output_layer", True)
    return cls("SparseMlpPolicy", env, policy_kwargs=policy_kwargs, **kwargs)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("algo", list(ALGOS))
def test_invariants_every_algorithm_and_method(algo, method):
    model = make(algo, method)
    probe = InvariantProbe(model.policy.sparse_controller)
    model.learn(300, callback=SparseTrainingCallback())
    probe.remove()
    controller = model.policy.sparse_controller
    assert probe.steps >= model._n_updates > 100
    has_target = any(net.target is not None for net in controller.networks.values())
    assert probe.target_forwards > 100 or not has_target
    check_online(controller)
    if method == "static":
        assert controller.n_topology_updates == 0
    else:
        assert controller.n_topology_updates > 0
    if method == "gmp":  # pruning is over at 60% of training: exactly the target sparsity
        assert sb3_sparse.summary(model)["sparsity"] == pytest.approx(0.8, abs=2e-3)
        for net in controller.networks.values():
            assert net.counts == net.final_counts


@pytest.mark.parametrize("algo", ["dqn", "qrdqn"])
def test_dqn_target_rule_holds_between_gradient_steps(algo):
    """Hard target copies happen during rollouts; the rule must hold before every target use."""
    model = make(algo, "set", target_sparsity="magnitude")
    controller = model.policy.sparse_controller
    name = next(iter(controller.networks))
    probe = InvariantProbe(controller)  # checks the target before each of its forwards
    model.learn(200, callback=SparseTrainingCallback())
    probe.remove()
    assert controller.n_topology_updates > 0 and probe.target_forwards > 100
    # One more hard copy after the last topology update, as DQN's _on_step does, then a target use.
    net = controller.networks[name]
    polyak_update(net.online.parameters(), net.target.parameters(), 1.0)
    with torch.no_grad():
        net.target(torch.zeros(1, 4))
    check_target(controller, name)


def test_bias_false_removes_sparse_layer_biases_everywhere():
    model = make("dqn", "rigl", bias=False, sparse_output_layer=False)
    q_net = model.policy.q_net.q_net
    assert q_net[0].bias is None and q_net[2].bias is None and q_net[4].bias is not None
    model.learn(150, callback=SparseTrainingCallback())
    check_online(model.policy.sparse_controller)


@pytest.mark.parametrize("moments", [False, True])  # gradient read before the step / after it
def test_rigl_grows_exactly_where_the_dense_gradient_is_largest(moments):
    config = SparseConfig(
        method="rigl",
        sparsity=0.5,
        update_interval=1,
        drop_fraction=0.25,
        sparse_output_layer=True,
        mask_optimizer_moments=moments,
    )
    net = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False))
    sparsify_(net, config, 0.5)
    layer = net[0]
    with torch.no_grad():
        layer.weight_mask.copy_(torch.tensor([[1.0, 1, 0, 0]] * 4))
        layer.weight.copy_(torch.tensor([[1.0, 2, 0, 0], [3.0, 4, 0, 0], [5.0, 6, 0, 0], [7.0, 8, 0, 0]]))
    controller = SparseController(config, seed=0)
    controller.add_network("net", net, clock=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: only the topology moves
    controller.attach_optimizer("net", optimizer)
    controller.driven = True
    grad = torch.tensor([[0.0, 0, 9, 1], [0.0, 0, 2, 8], [0.0, 0, 3, 4], [0.0, 0, 5, 0.5]])
    layer.weight.grad = grad.clone()
    optimizer.step()
    # drop the 2 smallest |w| (1, 2); grow the 2 absent positions with the largest |grad| (9, 8)
    expected = torch.tensor([[0.0, 0, 1, 0], [1.0, 1, 0, 1], [1.0, 1, 0, 0], [1.0, 1, 0, 0]])
    assert torch.equal(layer.weight_mask, expected)
    assert layer.weight[0, 2] == 0 and layer.weight[1, 3] == 0  # grown at exactly zero


def test_gmp_schedule_values_and_exact_end_point():
    config = SparseConfig(method="gmp", sparsity=0.9, update_interval=1, prune_start_fraction=0.2, prune_end_fraction=0.8)
    net = torch.nn.Sequential(torch.nn.Linear(20, 50), torch.nn.ReLU(), torch.nn.Linear(50, 1))
    sparsify_(net, config, 0.9)
    layer = net[0]
    assert int(layer.weight_mask.sum()) == 1000  # starts dense
    controller = SparseController(config, seed=0)
    controller.add_network("net", net, clock=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    controller.attach_optimizer("net", optimizer)
    controller.driven = True
    final = controller.networks["net"].final_counts[0]
    counts = {}
    for step, progress in enumerate([0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95]):
        controller.sync(step, progress)
        net(torch.randn(8, 20)).sum().backward()
        optimizer.step()
        counts[progress] = int(layer.weight_mask.sum())
        assert torch.all(layer.weight[layer.weight_mask == 0] == 0)
    final_density = final / 1000
    for progress in (0.35, 0.5, 0.65):
        sparsity = (1 - final_density) * (1 - (1 - (progress - 0.2) / 0.6) ** 3)
        assert counts[progress] == round((1 - sparsity) * 1000)
    assert counts[0.1] == counts[0.2] == 1000 and counts[0.8] == counts[0.95] == final


def test_sparse_cnn_dqn_on_atari_smoke():
    env = make_atari_env("ALE/Pong-v5", n_envs=1, seed=0)
    from stable_baselines3.common.vec_env import VecFrameStack

    env = VecFrameStack(env, 4)
    model = DQN("SparseCnnPolicy", env, buffer_size=2000, learning_starts=200, train_freq=4, batch_size=16,
                target_update_interval=100, policy_kwargs=dict(update_interval=25, sparsity=0.9), seed=0)  # fmt: skip
    probe = InvariantProbe(model.policy.sparse_controller)
    model.learn(1200, callback=SparseTrainingCallback())
    probe.remove()
    info = sb3_sparse.summary(model, n_updates=1000)
    convs = {k: v for k, v in info["networks"]["q_net"]["layers"].items() if "cnn" in k}
    assert len(convs) == 3 and all(0 < v["sparsity"] < 1 for v in convs.values())
    assert info["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert convs["features_extractor.cnn.0"]["forward_flops"] == 2 * convs["features_extractor.cnn.0"]["active_weights"] * 400
    assert model.policy.sparse_controller.n_topology_updates > 0 and probe.steps > 200


def test_qrdqn_sparse_cnn_policy_on_atari_observations():
    env = make_atari_env("ALE/Breakout-v5", n_envs=1, seed=0)
    model = QRDQN("SparseCnnPolicy", env, buffer_size=100, policy_kwargs=dict(sparsity=0.9, n_quantiles=10))
    info = sb3_sparse.summary(model)
    layers = info["networks"]["quantile_net"]["layers"]
    assert info["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert model.policy.sparse_controller.config.distribution == "erk"
    assert all(0 < layers[f"features_extractor.cnn.{i}"]["sparsity"] < 1 for i in (0, 2, 4))
