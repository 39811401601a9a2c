"""The truly sparse backend (``backend="sparse"``): no dense weight storage anywhere, the same
learning as masked TowS, and checkpoints that load into either backend."""

import copy

import pytest
import torch
from stable_baselines3 import DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed

from sb3_sparse import SparseTrainingCallback
from sb3_sparse.core import SparseConfig, SparseController, resolve_config
from sb3_sparse.core.layers import MaskedLinear, to_masked
from sb3_sparse.core.sparse_layer import SparseLinear, to_sparse_
from sb3_sparse.core.sparsify import sparsify_

ALGOS = {"td3": TD3, "ddpg": DDPG, "sac": SAC, "dqn": DQN}


def make(algo, seed=0, **policy_kwargs):
    kwargs = {"net_arch": [16, 16], "update_interval": 10, "drop_fraction": 0.3} | policy_kwargs
    env = "CartPole-v1" if algo == "dqn" else "Pendulum-v1"
    extra = {"train_freq": 1, "target_update_interval": 5} if algo == "dqn" else {}
    return ALGOS[algo]("SparseMlpPolicy", env, learning_starts=64, batch_size=32, seed=seed, policy_kwargs=kwargs, **extra)


def drive(model, n_updates, progress=0.5):
    """Gradient updates on the model's buffer, with the batches drawn from a fixed seed."""
    controller = model.policy.sparse_controller
    controller.driven = True
    controller.sync(model._n_updates, progress)
    set_random_seed(1234)
    model.train(gradient_steps=n_updates, batch_size=model.batch_size)


def sparse_modules(model):
    return [m for m in model.policy.modules() if isinstance(m, SparseLinear)]


# -- configuration --------------------------------------------------------------------------------


def test_backend_is_validated():
    with pytest.raises(ValueError, match=r"Unknown backend='csr'; allowed: \['masked', 'sparse'\]"):
        SparseConfig(backend="csr", mask_optimizer_moments=True)
    with pytest.raises(ValueError, match=r"mask_optimizer_moments must be True.*got mask_optimizer_moments=False"):
        resolve_config("ds", "td3", {"backend": "sparse", "mask_optimizer_moments": False})
    # A preset without moment masking gets it: that is what the sparse backend does by construction.
    assert resolve_config("ds", "td3", {"backend": "sparse"}).mask_optimizer_moments
    assert not resolve_config("ds", "td3", {}).mask_optimizer_moments


def test_cnn_policies_need_the_masked_backend():
    network = torch.nn.Sequential(to_masked(torch.nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match=r"'0' is a MaskedConv2d.*backend='masked'"):
        to_sparse_(network)


def test_layer_keeps_the_masked_weights_exactly():
    masked = MaskedLinear(7, 5)
    masked.set_mask_((torch.rand(5, 7) < 0.4).float())
    sparse = SparseLinear.from_masked(masked)
    x = torch.randn(3, 7)
    assert torch.equal(sparse.to_dense_weight(), masked.weight.detach())
    assert torch.equal(sparse.dense_mask(), masked.weight_mask)
    torch.testing.assert_close(sparse(x), masked(x))
    assert sparse.values.shape == (int(masked.weight_mask.sum()),) and sparse.weight_positions.dtype == torch.int32
    with pytest.raises(ValueError, match="positions must be strictly increasing"):
        SparseLinear(7, 5, torch.tensor([3, 1]))
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 35\), got \[0, 35\]"):
        SparseLinear(7, 5, torch.tensor([0, 35]))


# -- training on each algorithm -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "algo, settings",
    [
        ("td3", dict(preset="tows")),
        ("ddpg", dict(preset="tows", target_sparsity="online_mask")),
        ("sac", dict(preset="tows")),
        ("dqn", dict(preset="dqn-rigl")),
    ],
)
def test_learns_with_active_connections_only(algo, settings):
    model = make(algo, backend="sparse", **settings)
    model.learn(300, callback=SparseTrainingCallback())
    controller = model.policy.sparse_controller
    assert controller.n_topology_updates >= 5
    for net in controller.networks.values():
        assert net.counts == net.final_counts == [layer.values.numel() for layer in net.layers]
        for layer in net.layers:
            assert layer.dense_mask().sum() == layer.values.numel()
            state = net.optimizer.state[layer.values]
            assert state["exp_avg"].shape == state["exp_avg_sq"].shape == layer.values.shape
            assert any(p is layer.values for group in net.optimizer.param_groups for p in group["params"])
        for target, online in zip(net.target_layers, net.layers, strict=False):  # SAC's actor has no target
            assert isinstance(target, SparseLinear) and target.n_active() == online.values.numel()
    # No sparse layer keeps a dense weight: the only 2-D parameters are the dense output layers'.
    for name, param in model.policy.named_parameters():
        if name.endswith(".values"):
            assert param.dim() == 1
        elif name.endswith(".weight"):
            assert not isinstance(model.policy.get_submodule(name.rsplit(".", 1)[0]), SparseLinear)


def test_on_policy_optimizer_built_before_conversion_trains_the_values():
    settings = dict(net_arch=[16, 16], preset="ppo-set", update_interval=3, end_fraction=1.0, backend="sparse")
    model = PPO("SparseMlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0, policy_kwargs=settings)
    values = [
        layer.values.detach().clone() for net in model.policy.sparse_controller.networks.values() for layer in net.layers
    ]
    model.learn(128, callback=SparseTrainingCallback())
    params = [p for group in model.policy.optimizer.param_groups for p in group["params"]]
    assert model.policy.sparse_controller.n_topology_updates > 0
    assert not any(p.dim() == 2 and p.shape[1] > 1 and p.numel() > 64 for p in params)  # no dense hidden weights
    for net in model.policy.sparse_controller.networks.values():
        for layer, before in zip(net.layers, values, strict=False):
            assert any(p is layer.values for p in params) and not torch.equal(layer.values.detach(), before)


def test_pruning_shrinks_the_parameters_and_their_optimizer_state():
    model = make("dqn", backend="sparse", preset="dqn-gmp", prune_start_fraction=0.0, prune_end_fraction=0.6)
    net = model.policy.sparse_controller.networks["q_net"]
    start = list(net.counts)
    model.learn(64 + 5)
    for progress in (0.2, 0.4, 0.7):
        drive(model, 10, progress)
    assert net.counts == net.final_counts and all(f < s for f, s in zip(net.final_counts, start, strict=True))
    params = [p for group in net.optimizer.param_groups for p in group["params"]]
    for layer, target, count in zip(net.layers, net.target_layers, net.counts, strict=True):
        assert layer.values.numel() == target.n_active() == count
        assert any(p is layer.values for p in params)
        assert net.optimizer.state[layer.values]["exp_avg_sq"].shape == (count,)


# -- the same learning as masked TowS -------------------------------------------------------------------


def topology_trace(model):
    """Record each network's masks (online and target) after every topology update."""
    controller = model.policy.sparse_controller
    trace = []
    update = controller._update_topology

    def recorded(net):
        update(net)
        trace.append([layer.dense_mask().clone() for layer in net.layers])

    controller._update_topology = recorded
    return trace


def train_both(algo, n_updates, **settings):
    """The masked and the sparse backend, trained alike; with their topology traces."""
    models, traces = [], []
    for backend in ("masked", "sparse"):  # each built and filled before the next: they share the global RNGs
        models.append(make(algo, backend=backend, **settings))
        traces.append(topology_trace(models[-1]))
        models[-1].learn(64)  # random actions into the buffer, no update yet
    models[1].replay_buffer = copy.deepcopy(models[0].replay_buffer)
    for model in models:
        drive(model, n_updates)
    return models, traces


@pytest.mark.parametrize("algo", ["td3", "sac"])
@pytest.mark.parametrize("rule", ["magnitude", "online_mask"])
def test_same_weights_and_topologies_as_masked_tows(algo, rule):
    models, traces = train_both(algo, 2000, preset="tows", target_sparsity=rule, update_interval=250)
    masked, sparse = (m.policy.sparse_controller for m in models)
    for controller in (masked, sparse):
        controller.refresh_targets()  # the last target update's rule (the masked target shows its update at once)
    assert masked.n_topology_updates == sparse.n_topology_updates == 8
    assert len(traces[0]) == len(traces[1]) >= 8
    for step_masks, step_sparse in zip(*traces, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(step_masks, step_sparse, strict=True))
    for name, net in masked.networks.items():
        other = sparse.networks[name]
        for a, b in zip(net.layers + net.target_layers, other.layers + other.target_layers, strict=True):
            assert torch.equal(a.dense_mask(), b.dense_mask())
            scale = float(a.weight.detach().abs().max())
            torch.testing.assert_close(b.to_dense_weight(), a.weight.detach(), rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize(
    "algo, settings",
    [
        ("dqn", dict(preset="dqn-rigl", mask_optimizer_moments=True, end_fraction=1.0)),
        ("td3", dict(preset="tows", method="rigl")),
    ],
)
def test_rigl_grows_where_the_masked_backend_grows(algo, settings):
    # The sparse layers record the dense gradient on the steps that may be topology updates
    # (TD3's actor steps every other update); a missing one would grow at random instead.
    _, traces = train_both(algo, 400, update_interval=50, **settings)
    assert len(traces[0]) == len(traces[1]) >= 8
    for step_masks, step_sparse in zip(*traces, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(step_masks, step_sparse, strict=True))


# -- checkpoints across backends ---------------------------------------------------------------------------


@pytest.mark.parametrize("source, destination", [("masked", "sparse"), ("sparse", "masked")])
def test_checkpoint_loads_into_the_other_backend(tmp_path, source, destination):
    kwargs = {"net_arch": [16, 16], "update_interval": 10, "drop_fraction": 0.3, "preset": "tows"}
    model = make("td3", backend=source, **{k: v for k, v in kwargs.items() if k != "net_arch"})
    model.learn(150, callback=SparseTrainingCallback())
    model.save(tmp_path / "m")
    policy_kwargs = {**kwargs, "backend": destination}
    loaded = TD3.load(tmp_path / "m", custom_objects={"policy_kwargs": policy_kwargs})
    assert loaded.policy.sparse_config.backend == destination
    loaded.replay_buffer = copy.deepcopy(model.replay_buffer)
    loaded.set_logger(configure(None, []))
    for name, net in model.policy.sparse_controller.networks.items():
        other = loaded.policy.sparse_controller.networks[name]
        assert other.counts == net.counts
        for a, b in zip(net.layers + net.target_layers, other.layers + other.target_layers, strict=True):
            assert torch.equal(a.dense_mask(), b.dense_mask()) and torch.equal(a.to_dense_weight(), b.to_dense_weight())
        for a, b in zip(net.layers, other.layers, strict=True):
            pa = a.values if source == "sparse" else a.weight
            pb = b.values if destination == "sparse" else b.weight
            for key in ("exp_avg", "exp_avg_sq"):
                sa, sb = net.optimizer.state[pa][key], other.optimizer.state[pb][key]
                assert sb.shape == pb.shape
                assert torch.equal(b.in_layout(sa) if sa.shape != sb.shape else sa, sb)
    for m in (model, loaded):
        drive(m, 30)
        m.policy.sparse_controller.refresh_targets()
    for name, net in model.policy.sparse_controller.networks.items():
        other = loaded.policy.sparse_controller.networks[name]
        for a, b in zip(net.layers + net.target_layers, other.layers + other.target_layers, strict=True):
            assert torch.equal(a.dense_mask(), b.dense_mask())
            scale = float(a.to_dense_weight().abs().max())
            torch.testing.assert_close(a.to_dense_weight(), b.to_dense_weight(), rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_topology_update_stops_on_non_finite_values(method):
    config = SparseConfig(method=method, sparsity=0.7, update_interval=5, mask_optimizer_moments=True, backend="sparse")
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
    )
    sparsify_(net, config, config.sparsity)
    to_sparse_(net)
    controller = SparseController(config, seed=0)
    controller.add_network("critic", net, clock=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    controller.attach_optimizer("critic", optimizer)
    controller.driven, controller.training_progress = True, 0.5
    for step in range(5):
        optimizer.zero_grad()
        net(torch.randn(16, 6)).pow(2).mean().backward()
        if step < 4:
            optimizer.step()
            continue
        positions = net[2].weight_positions.clone()
        with torch.no_grad():
            net[2].values[0] = float("nan")  # just before the topology update
        with pytest.raises(FloatingPointError, match=r"critic.*'2'.*update 5"):
            optimizer.step()
        assert controller.n_topology_updates == 0 and torch.equal(positions, net[2].weight_positions)
