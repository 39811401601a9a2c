"""export(): plain SB3 zips that load without sb3-sparse, compact files that run on NumPy alone."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from isolation import run_without
from sb3_contrib import QRDQN, TQC, CrossQ
from stable_baselines3 import DQN, SAC, TD3

import sb3_sparse
from sb3_sparse import SparseTrainingCallback

CASES = {
    "TD3": (TD3, "Pendulum-v1", dict(preset="tows", sparsity=0.8)),
    "SAC": (SAC, "Pendulum-v1", dict(preset="ds-sac", sparsity=0.8, bias=False)),  # no biases: exported as zeros
    "DQN": (DQN, "CartPole-v1", dict(sparsity=0.8)),
    "TD3-sparse": (TD3, "Pendulum-v1", dict(preset="tows", sparsity=0.8, backend="sparse")),
    "DQN-sparse": (DQN, "CartPole-v1", dict(sparsity=0.8, backend="sparse")),  # a sparse output layer too
}
CONTRIB = {
    "QRDQN": (QRDQN, "CartPole-v1", dict(sparsity=0.8, sparse_output_layer=True)),
    "TQC": (TQC, "Pendulum-v1", dict(sparsity=0.8, sparse_output_layer=True)),
    "CrossQ": (CrossQ, "Pendulum-v1", dict(sparsity=0.8)),
}


def trained(algo, env, policy_kwargs):
    """A sparse model after a few topology updates (weights and masks have moved)."""
    model = algo(
        "SparseMlpPolicy",
        env,
        learning_starts=16,
        batch_size=16,
        buffer_size=200,
        seed=0,
        policy_kwargs=dict(net_arch=[32, 32], update_interval=4, **policy_kwargs),
    )
    model.learn(32, callback=SparseTrainingCallback())
    return model


def observations(model, n=16):
    model.observation_space.seed(1)
    return np.stack([model.observation_space.sample() for _ in range(n)])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    expected = {}
    for name, case in CASES.items():
        model = trained(*case)
        obs = observations(model)
        expected[name] = (obs, model.predict(obs, deterministic=True)[0])
        assert sb3_sparse.export(model, folder / name).name == f"{name}.zip"
        assert sb3_sparse.export(model, folder / name, format="compact").name == f"{name}.npz"
        assert type(model.policy).__name__.startswith("Sparse") and model.policy_class is type(model.policy)  # untouched
    arrays = {f"{n}.obs": obs for n, (obs, _) in expected.items()} | {n: actions for n, (_, actions) in expected.items()}
    np.savez(folder / "expected.npz", **arrays)
    return folder, expected


def test_sb3_zip_loads_and_acts_identically_without_sb3_sparse(exported):
    folder, _ = exported
    code = f"""
import importlib, json, numpy as np
try:
    import sb3_sparse
    raise SystemExit("sb3_sparse was importable")
except ImportError:
    pass
from stable_baselines3 import DQN, SAC, TD3
expected = np.load("expected.npz")
out = {{}}
for name in {list(CASES)!r}:
    model = {{"TD3": TD3, "SAC": SAC, "DQN": DQN}}[name.split("-")[0]].load(name + ".zip", device="cpu")
    actions, _ = model.predict(expected[name + ".obs"], deterministic=True)
    if name.endswith("-sparse"):  # the sparse kernels sum in another order than a dense product
        np.testing.assert_allclose(actions, expected[name], rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(actions, expected[name])
    out[name] = type(model.policy).__module__
print(json.dumps(out))
"""
    modules = json.loads(run_without(["sb3_sparse"], code, folder).strip().splitlines()[-1])
    assert all(m.startswith("stable_baselines3.") for m in modules.values()), modules


def test_compact_file_acts_like_the_model_with_numpy_alone(exported):
    folder, _ = exported
    code = f"""
import numpy as np
from compact_loader import load_compact
expected = np.load("expected.npz")
for name in {list(CASES)!r}:
    policy = load_compact(name + ".npz")
    np.testing.assert_allclose(policy.predict(expected[name + ".obs"]), expected[name], rtol=1e-5, atol=1e-5)
    assert np.shape(policy.predict(expected[name + ".obs"][0])) == np.shape(expected[name][0])
print("ok")
"""
    assert "ok" in run_without(["sb3_sparse", "torch", "stable_baselines3", "gymnasium"], code, folder)
    with np.load(folder / "TD3.npz") as data:  # only the active weights are stored
        model_active = sum(data[k].size for k in data.files if k.endswith(".values"))
        assert all(data[k].dtype == np.int32 for k in data.files if k.endswith(".indices"))
    assert model_active < 0.5 * (3 * 32 + 32 * 32 + 32 * 1)


@pytest.mark.parametrize("name", list(CONTRIB))
def test_contrib_models_export_to_their_own_policy_class(tmp_path, name):
    algo, env, policy_kwargs = CONTRIB[name]
    model = trained(algo, env, policy_kwargs)
    with torch.no_grad():  # CrossQ: running statistics and affine terms far from their initial values
        for module in model.policy.modules():
            for name in ("ra_mean", "ra_var", "scale", "bias") if hasattr(module, "ra_mean") else ():
                getattr(module, name).copy_(torch.rand_like(getattr(module, name)) + 0.5)
    obs = observations(model)
    loaded = algo.load(sb3_sparse.export(model, tmp_path / name), device="cpu")
    assert type(loaded.policy).__module__.startswith("sb3_contrib.")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    path = sb3_sparse.export(model, tmp_path / name, format="compact")  # CrossQ: BatchRenorm folded into an affine map
    spec = importlib.util.spec_from_file_location("compact_loader_copy", tmp_path / "compact_loader.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    actions = loader.load_compact(path).predict(obs)
    np.testing.assert_allclose(actions, model.predict(obs, deterministic=True)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["TD3", "TD3-sparse"])
def test_exported_zip_keeps_training_state_and_rejects_unknown_formats(tmp_path, case):
    model = trained(*CASES[case])
    loaded = TD3.load(sb3_sparse.export(model, tmp_path / "td3"), device="cpu")
    assert loaded._n_updates == model._n_updates
    moments = model.actor.optimizer.state_dict()["state"][0]["exp_avg"]
    exported = loaded.actor.optimizer.state_dict()["state"][0]["exp_avg"]
    assert exported.shape == loaded.actor.mu[0].weight.shape  # dense, as SB3's own policy trains it
    first = model.actor.mu[0]  # the sparse backend's state is per active connection: compare there
    assert np.array_equal(first.in_layout(exported).numpy(), moments.numpy())
    with pytest.raises(ValueError, match="Unknown format='onnx'"):
        sb3_sparse.export(model, tmp_path / "td3", format="onnx")
