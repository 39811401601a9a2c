"""Save -> load restores the whole sparse state; fed the same batches, the loaded model and the
original stay bit-identical through topology updates."""

import copy
import subprocess
import sys

import pytest
import torch
from invariants import check_online, check_target
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed

from sb3_sparse import SparseTrainingCallback
from sb3_sparse.core.layers import sparse_layers, trained_parameter

ALGOS = {"td3": TD3, "sac": SAC, "dqn": DQN}


def make(algo, **policy_kwargs):
    kwargs = {"net_arch": [64, 64], "update_interval": 10, "drop_fraction": 0.3} | policy_kwargs
    env = "CartPole-v1" if algo == "dqn" else "Pendulum-v1"
    extra = {"train_freq": 1, "target_update_interval": 5} if algo == "dqn" else {}
    return ALGOS[algo]("SparseMlpPolicy", env, learning_starts=64, batch_size=32, seed=0, policy_kwargs=kwargs, **extra)


def drive(model, n_updates):
    """Run gradient updates directly, as SparseTrainingCallback would have the policy do."""
    controller = model.policy.sparse_controller
    controller.driven = True
    controller.sync(model._n_updates, 0.5)
    set_random_seed(1234)
    model.train(gradient_steps=n_updates, batch_size=model.batch_size)


def full_state(model):
    state = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items()}
    for name, net in model.policy.sparse_controller.networks.items():
        opt = net.optimizer.state_dict()
        for i, s in opt["state"].items():
            for k, v in s.items():
                state[f"{name}.opt.{i}.{k}"] = v.clone() if torch.is_tensor(v) else v
    return state


def assert_identical(a, b):
    assert_identical_states(full_state(a), full_state(b))


def assert_identical_states(sa, sb):
    assert sa.keys() == sb.keys()
    for key in sa:
        va, vb = sa[key], sb[key]
        assert torch.equal(va, vb) if torch.is_tensor(va) else va == vb, key


@pytest.mark.parametrize(
    "algo, settings",
    [
        ("td3", dict(preset="set")),
        ("td3", dict(preset="tows")),
        ("sac", dict(preset="set")),
        ("sac", dict(preset="tows")),
        ("dqn", dict(preset="dqn-rigl", mask_optimizer_moments=True, end_fraction=1.0)),
        ("dqn", dict(preset="dqn-gmp", sparse_output_layer=False, prune_start_fraction=0.0, prune_end_fraction=1.0)),
        ("td3", dict(preset="tows", backend="sparse")),
        ("sac", dict(preset="tows", backend="sparse", target_sparsity="online_mask")),
        ("dqn", dict(preset="dqn-rigl", backend="sparse", end_fraction=1.0)),
        ("dqn", dict(preset="dqn-gmp", backend="sparse", prune_start_fraction=0.0, prune_end_fraction=1.0)),
    ],
)
def test_loaded_model_continues_bit_identically(tmp_path, algo, settings):
    model = make(algo, **settings)
    model.learn(150, callback=SparseTrainingCallback())
    assert model.policy.sparse_controller.n_topology_updates > 0
    model.save(tmp_path / "m")
    loaded = ALGOS[algo].load(tmp_path / "m")
    loaded.replay_buffer = copy.deepcopy(model.replay_buffer)
    loaded.set_logger(configure(None, []))
    assert_identical(model, loaded)
    before = model.policy.sparse_controller.n_topology_updates
    drive(model, 35)
    drive(loaded, 35)
    assert model.policy.sparse_controller.n_topology_updates >= before + 3
    assert_identical(model, loaded)
    for m in (model, loaded):
        check_online(m.policy.sparse_controller)
        check_target(m.policy.sparse_controller, "q_net" if algo == "dqn" else "critic")


@pytest.mark.parametrize("algo, settings", [("td3", dict(preset="tows")), ("sac", dict(preset="tows", backend="sparse"))])
def test_a_deep_copy_trains_on_its_own(algo, settings):
    """``copy.deepcopy`` of a model (e.g. a snapshot of the best one): the copy's hooks and target
    rule drive the copy's networks, never the original's, and the two stay bit-identical."""
    model = make(algo, **settings)
    model.learn(150, callback=SparseTrainingCallback())
    model.set_logger(configure(None, []))
    copied = copy.deepcopy(model)
    before = full_state(model)
    drive(copied, 35)  # through topology updates and target updates
    assert_identical_states(before, full_state(model))  # the original is untouched
    drive(model, 35)
    assert_identical(model, copied)
    for m in (model, copied):
        check_online(m.policy.sparse_controller)
        check_target(m.policy.sparse_controller, "critic")


def test_resumed_learn_keeps_schedule(tmp_path):
    model = make("td3", preset="set")
    model.learn(200, callback=SparseTrainingCallback())
    model.save(tmp_path / "m")
    loaded = TD3.load(tmp_path / "m", env=model.get_env())
    c = loaded.policy.sparse_controller
    assert c.clock == loaded._n_updates == model._n_updates
    assert c.n_topology_updates == model.policy.sparse_controller.n_topology_updates
    assert c.config == model.policy.sparse_controller.config
    loaded.learn(100, callback=SparseTrainingCallback(), reset_num_timesteps=False)
    assert c.n_topology_updates == loaded._n_updates // 10
    check_online(c)


def test_loading_without_the_plugin_fails_clearly(tmp_path):
    model = make("td3", preset="set")
    model.save(tmp_path / "m")
    code = (
        f"import sys; sys.modules['sb3_sparse'] = None\nfrom stable_baselines3 import TD3\nTD3.load({str(tmp_path / 'm')!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "sb3_sparse" in result.stderr + result.stdout


@pytest.mark.parametrize(
    "algo, network, settings",
    [
        ("dqn", "q_net", {}),
        ("dqn", "q_net", dict(bias=False)),
        ("td3", "actor", {}),
        ("sac", "actor", {}),
        ("dqn", "q_net", dict(backend="sparse")),
        ("td3", "actor", dict(backend="sparse", bias=False)),
    ],
)
def test_a_network_saved_alone_loads_back(tmp_path, algo, network, settings):
    # (SB3's critics cannot be saved alone: they do not record their constructor arguments.)
    model = make(algo, preset="tows" if algo != "dqn" else "dqn-rigl", **settings)
    net = getattr(model.policy, network)
    with torch.no_grad():  # weights that differ from a fresh network's
        for _, layer in sparse_layers(net):
            weight = trained_parameter(layer)
            weight.add_(1.0).mul_(layer.in_layout(layer.dense_mask()))
    net.save(tmp_path / "net.pt")
    loaded = type(net).load(tmp_path / "net.pt", device="cpu")
    assert isinstance(loaded, type(net).__mro__[1])  # the SB3 network class
    state, loaded_state = net.state_dict(), loaded.state_dict()
    topology = "weight_positions" if settings.get("backend") == "sparse" else "weight_mask_bits"
    assert state.keys() == loaded_state.keys() and any(key.endswith(topology) for key in state)
    assert all(torch.equal(state[key], loaded_state[key]) for key in state)
