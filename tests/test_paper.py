"""Paper setups: the presets' networks, paper_setup read from the shipped YAML, the files in the wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise

import sb3_sparse
from sb3_sparse import paper
from sb3_sparse.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", ["static", "ds-td3", "tows", "set", "ds"])
def test_named_presets_build_the_papers_256_256_network(preset):
    model = TD3("SparseMlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(preset=preset))
    assert model.policy.net_arch == [256, 256]
    assert [m.out_features for m in model.actor.mu if hasattr(m, "out_features")] == [256, 256, 1]


def test_preset_network_yields_to_net_arch_and_stays_off_other_networks():
    kwargs = dict(policy_kwargs=dict(preset="ds-td3", net_arch=[32, 32]), buffer_size=10)
    assert TD3("SparseMlpPolicy", "Pendulum-v1", **kwargs).policy.net_arch == [32, 32]
    assert TD3("SparseMlpPolicy", "Pendulum-v1", buffer_size=10).policy.net_arch == [400, 300]  # no preset: SB3's
    assert SAC("SparseMlpPolicy", "Pendulum-v1", buffer_size=10, policy_kwargs=dict(preset="ds-sac")).policy.net_arch == [
        256,
        256,
    ]
    dqn = DQN("SparseMlpPolicy", "CartPole-v1", buffer_size=10, policy_kwargs=dict(preset="static", sparsity=0.5))
    assert dqn.policy.net_arch == [64, 64]  # DQN keeps SB3's network


def test_paper_setup_builds_the_ds_td3_paper_network():
    model = TD3(**sb3_sparse.paper_setup("ds-td3", "HalfCheetah-v5", buffer_size=10))
    report = sb3_sparse.summary(model)
    assert (report["active_weights"], report["dense_weights"]) == (106_169, 214_784)
    assert (model.batch_size, model.learning_starts, model.learning_rate) == (100, 25_000, 1e-3)
    assert model.actor.optimizer.param_groups[0]["weight_decay"] == 2e-4
    assert isinstance(model.action_noise, NormalActionNoise)
    np.testing.assert_allclose(model.action_noise._sigma, np.full(6, 0.1))
    protocol = sb3_sparse.paper_protocol("ds-td3", "HalfCheetah-v5")
    assert protocol.algo is TD3 and protocol.n_timesteps == 1_000_000
    assert (protocol.eval_freq, protocol.n_eval_episodes, protocol.final_evaluations) == (5000, 10, 10)
    assert [type(c).__name__ for c in protocol.callbacks()] == ["SparseTrainingCallback"]


def _entries():
    for name in sb3_sparse.hyperparams_names():
        with open(sb3_sparse.hyperparams_file(name)) as f:
            for env_id, values in yaml.safe_load(f).items():
                yield name, env_id, values


@pytest.mark.parametrize("name, env_id, values", list(_entries()), ids=lambda v: v if isinstance(v, str) else "")
def test_paper_setup_is_every_yaml_value(name, env_id, values):
    env_id = "PongNoFrameskip-v4" if env_id == "atari" else env_id
    kwargs = sb3_sparse.paper_setup(name, env_id, env="unused")
    protocol = sb3_sparse.paper_protocol(name, env_id)
    for key, value in values.items():
        if key == "policy" and "." in value:
            assert kwargs["policy"] is paper._import(value)
        elif key == "policy_kwargs":
            assert kwargs[key] == (eval(value, dict(paper._EVAL_NAMESPACE)) if isinstance(value, str) else value)
        elif key == "noise_std":
            np.testing.assert_allclose(kwargs["action_noise"]._sigma, value)
        elif key == "n_timesteps":
            assert protocol.n_timesteps == value
        elif key == "callback":
            assert list(protocol.callback) == (value if isinstance(value, list) else [value])
        elif key in paper._ENV_KEYS:
            assert protocol.env_options[key] == value
        elif key == "learning_rate" and isinstance(value, str):
            assert kwargs[key](1.0) == float(value.split("_")[1]) and kwargs[key](0.0) == 0.0
        elif key != "noise_type":
            assert kwargs[key] == value, key
    assert set(kwargs) - set(values) <= {"env", "action_noise"}


def test_paper_setup_reads_the_file_not_a_copy(tmp_path, monkeypatch):
    shutil.copy(sb3_sparse.hyperparams_file("ds_td3"), tmp_path / "ds_td3.yml")
    text = (tmp_path / "ds_td3.yml").read_text().replace("batch_size: 100", "batch_size: 64", 1)
    (tmp_path / "ds_td3.yml").write_text(text)
    monkeypatch.setattr(paper, "HYPERPARAMS_DIR", tmp_path)
    assert sb3_sparse.paper_setup("ds-td3", "HalfCheetah-v5")["batch_size"] == 64
    overridden = sb3_sparse.paper_setup("ds-td3", "HalfCheetah-v5", batch_size=32, policy_kwargs=dict(lambdas=(5, 60)))
    assert overridden["batch_size"] == 32
    assert overridden["policy_kwargs"]["lambdas"] == (5, 60) and overridden["policy_kwargs"]["net_arch"] == [256, 256]


def test_hyperparams_file_finds_installed_files_and_suggests(capsys):
    path = sb3_sparse.hyperparams_file("ds_td3")
    assert path.is_file() and path.parent == Path(sb3_sparse.__file__).parent / "hyperparams"
    assert sb3_sparse.hyperparams_file("ds-td3") == path == sb3_sparse.hyperparams_file("ds_td3.yml")
    with pytest.raises(ValueError, match="Did you mean 'ds_td3'"):
        sb3_sparse.hyperparams_file("ds_td4")
    with pytest.raises(ValueError, match="has no entry for 'CartPole-v1'"):
        sb3_sparse.paper_protocol("ds-td3", "CartPole-v1")
    main(["hyperparams", "ds_td3"])
    assert capsys.readouterr().out.strip() == str(path)
    main(["hyperparams"])
    assert len(capsys.readouterr().out.split()) == len(sb3_sparse.hyperparams_names())


def test_wheel_ships_the_hyperparameter_files(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "sb3_sparse", source / "sb3_sparse", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    subprocess.run(command, cwd=source, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sb3_sparse-*.whl")
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("sb3_sparse/hyperparams/")}
    assert shipped == {f"{name}.yml" for name in sb3_sparse.hyperparams_names()}
    assert "sb3_sparse/paper.py" in zipfile.ZipFile(wheel).namelist()


# The files for DDPG, TQC, QR-DQN and CrossQ, with their quick CPU entries.
NEW_FILES = [
    ("ds_ddpg", "Pendulum-v1"),
    ("ds_tqc", "Pendulum-v1"),
    ("rigl_qrdqn", "CartPole-v1"),
    ("ds_crossq", "Pendulum-v1"),
]


@pytest.mark.parametrize("name, env_id", NEW_FILES)
def test_contrib_and_ddpg_files_train(name, env_id):
    protocol = sb3_sparse.paper_protocol(name, env_id)
    small = dict(learning_starts=20, buffer_size=100, batch_size=16, seed=0, policy_kwargs=dict(net_arch=[32, 32]))
    model = protocol.algo(**sb3_sparse.paper_setup(name, env_id, **small))
    assert type(model.policy).__name__.startswith("Sparse")
    model.learn(40, callback=protocol.callbacks())
    assert sb3_sparse.summary(model)["sparsity"] == pytest.approx(0.9 if name == "rigl_qrdqn" else 0.5, abs=0.01)


@pytest.mark.parametrize("name, env_id", [*NEW_FILES[:1], ("ds_tqc", "Hopper-v5"), *NEW_FILES[2:]])
def test_new_files_build_in_rl_zoo3_like_paper_setup(name, env_id, tmp_path, monkeypatch):
    import argparse

    from rl_zoo3.exp_manager import ExperimentManager

    monkeypatch.chdir(tmp_path)
    algo = name.rsplit("_", 1)[1]
    manager = ExperimentManager(
        argparse.Namespace(), algo, env_id, str(tmp_path), n_timesteps=100, hyperparams={"buffer_size": 100},
        config=str(sb3_sparse.hyperparams_file(name)), eval_freq=-1, seed=0, verbose=0,
    )  # fmt: skip
    zoo_model, _ = manager.setup_experiment()
    model = sb3_sparse.paper_protocol(name, env_id).algo(**sb3_sparse.paper_setup(name, env_id, buffer_size=100, seed=0))
    assert type(zoo_model) is type(model) and type(zoo_model.policy) is type(model.policy)
    assert zoo_model.policy.sparse_config == model.policy.sparse_config
    assert sb3_sparse.summary(zoo_model)["active_weights"] == sb3_sparse.summary(model)["active_weights"]


def test_atari_entries_get_the_zoo_wrappers():
    pytest.importorskip("ale_py")
    model = DQN(**sb3_sparse.paper_setup("dqn-rigl", "PongNoFrameskip-v4", buffer_size=10, seed=0))
    assert type(model.policy).__name__ == "SparseDQNCnnPolicy"
    assert model.observation_space.shape == (4, 84, 84)  # AtariWrapper + 4 stacked frames, channels first
    assert sb3_sparse.paper_protocol("dqn-rigl", "PongNoFrameskip-v4").entry == "atari"
