"""rl-zoo3 integration: the hyperparams/ files, and every zoo command run end-to-end through its real CLI.

Each CLI run is a subprocess with a tiny budget (a few hundred steps); the shared TD3 run is
trained once per module and then watched, filmed, plotted, inspected and continued.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn

import sb3_sparse
from sb3_sparse.__main__ import info
from sb3_sparse.core.layers import sparse_layers
from sb3_sparse.targets import GlobalTargetUpdateInterval
from sb3_sparse.zoo import merge_policy_kwargs

ROOT = Path(__file__).resolve().parents[1]
HYPERPARAMS = ROOT / "hyperparams"
CONTINUOUS_FILES = sorted(p for p in HYPERPARAMS.glob("*.yml") if p.stem.endswith(("_td3", "_sac")))
DQN_FILES = sorted(HYPERPARAMS.glob("*_dqn.yml"))
MUJOCO = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5")
QUICK = ("Pendulum-v1", "LunarLanderContinuous-v3")
# The papers' values, restated here independently of the files.
TD3_LAMBDAS = {
    "HalfCheetah-v5": (7, 64),
    "Hopper-v5": (7, 64),
    "Walker2d-v5": (7, 64),
    "Ant-v5": (40, 64),
    "Humanoid-v5": (61, 64),
}
SAC_LAMBDAS = {
    "HalfCheetah-v5": (12, 80),
    "Hopper-v5": (7, 20),
    "Walker2d-v5": (12, 80),
    "Ant-v5": (30, 64),
    "Humanoid-v5": (61, 64),
}
TD3_PAPER = dict(
    learning_rate=1e-3, batch_size=100, buffer_size=1_000_000, learning_starts=25_000, tau=0.005, gamma=0.99, policy_delay=2,
    target_policy_noise=0.2, target_noise_clip=0.5, noise_type="normal", noise_std=0.1, train_freq=1, gradient_steps=1,
    n_timesteps=1e6,
)  # fmt: skip
# rl-zoo3's DQN Atari settings with Graesser et al.'s Adam learning rate.
DQN_ATARI = dict(
    learning_rate=2.5e-4, batch_size=32, buffer_size=100_000, learning_starts=100_000, target_update_interval=1000,
    train_freq=4, gradient_steps=1, exploration_fraction=0.1, exploration_final_eps=0.01, frame_stack=4, n_timesteps=1e7,
)  # fmt: skip
SAC_PAPER = dict(
    learning_rate=3e-4, batch_size=256, buffer_size=1_000_000, ent_coef=0.2, tau=1.0, target_update_interval=1000,
    train_freq=1, gradient_steps=1, gamma=0.99, n_timesteps=1e6,
)  # fmt: skip


def zoo_env() -> dict[str, str]:
    return dict(
        os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", HF_HUB_OFFLINE="1", SDL_AUDIODRIVER="dummy"
    )


def run(args: list[str], cwd: Path, timeout: int = 240) -> str:
    """Run ``python -m <args>`` in ``cwd``; fail with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=zoo_env(), capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"python -m {' '.join(args)} failed:\n{output[-6000:]}"
    return output


def train(cwd: Path, algo: str, env: str, conf: Path | str, *extra: str, seed: int = 0) -> str:
    args = ["rl_zoo3.train", "--algo", algo, "--env", env, "-conf", str(conf), "--num-threads", "1", "--seed", str(seed)]
    return run([*args, *extra], cwd)


def load(path: Path, algo: type = TD3):
    return algo.load(path, device="cpu")


def online_masks(model) -> dict[str, torch.Tensor]:
    """Masks of the trained networks (a target's support follows its own weights' magnitudes)."""
    masks = {name: layer.weight_mask.clone() for name, layer in sparse_layers(model.policy) if "_target" not in name}
    assert masks, "no sparse layer"
    return masks


# -- the files ---------------------------------------------------------------------------------


def build(path: Path, env_id: str, tmp_path: Path, algo: str):
    """Build the model and callbacks for one environment of a file exactly as ``rl_zoo3.train`` does."""
    manager = ExperimentManager(
        argparse.Namespace(), algo, env_id, str(tmp_path), n_timesteps=1000, hyperparams={"buffer_size": 1000},
        config=str(path), eval_freq=-1, seed=0, verbose=0,
    )  # fmt: skip
    model, _ = manager.setup_experiment()
    return model, manager.callbacks


@pytest.mark.parametrize("path", CONTINUOUS_FILES, ids=lambda p: p.stem)
def test_every_file_carries_the_papers_settings(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its log file to the working directory
    name, algo = path.stem.rsplit("_", 1)
    method = name.rstrip("0123456789")
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {*MUJOCO, *QUICK}
    paper, lambdas = (TD3_PAPER, TD3_LAMBDAS) if algo == "td3" else (SAC_PAPER, SAC_LAMBDAS)
    for env_id in raw:
        model, callbacks = build(path, env_id, tmp_path, algo)
        callback_types = {type(c) for c in callbacks}
        if env_id in MUJOCO:
            assert {k: raw[env_id][k] for k in paper} == paper, env_id
            assert model.policy.net_arch == [256, 256]
        if algo == "td3":
            for net in (model.policy.actor, model.policy.critic):
                assert net.optimizer.param_groups[0]["weight_decay"] == pytest.approx(2e-4)
        if algo == "sac" and env_id in MUJOCO:
            assert model.ent_coef_optimizer is None and float(model.ent_coef_tensor) == pytest.approx(0.2)
            assert GlobalTargetUpdateInterval in callback_types
        if method == "dense":
            assert not hasattr(model.policy, "sparse_controller")
            assert type(model.policy).__module__.startswith("stable_baselines3")
            assert sb3_sparse.FlushDenormalCallback in callback_types
            continue
        assert sb3_sparse.SparseTrainingCallback in callback_types
        config = model.policy.sparse_config
        report = sb3_sparse.summary(model)
        assert config.update_interval == 1000 and config.drop_fraction == pytest.approx(0.05 if algo == "td3" else 0.1)
        assert config.method == ("static" if method in ("static", "ss") else "set")
        if method in ("tows", "ss"):
            target = int(name[-2:]) / 100
            for net in report["networks"].values():
                assert net["sparsity"] == pytest.approx(target, abs=0.005)
            assert config.mask_optimizer_moments is (method == "tows")
            assert model.policy.activation_fn is nn.LeakyReLU
        elif env_id in MUJOCO:
            assert config.lambdas == lambdas[env_id]
        else:
            assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
        if method in ("ds", "static") and algo == "td3" and env_id == "HalfCheetah-v5":
            # Sokar et al., Table 2: 106,169 of 214,784 weights for lambda = (7, 64).
            assert (report["active_weights"], report["dense_weights"]) == (106_169, 214_784)
        model.env.close()


@pytest.mark.parametrize("path", DQN_FILES, ids=lambda p: p.stem)
def test_every_dqn_file_carries_the_papers_settings(path, tmp_path):
    method = path.stem.removesuffix("_dqn")
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"atari", "CartPole-v1"}
    assert {k: raw["atari"][k] for k in DQN_ATARI} == DQN_ATARI
    for env_id in ("BreakoutNoFrameskip-v4", "CartPole-v1"):  # "atari" serves every Atari game
        model, callbacks = build(path, env_id, tmp_path, "dqn")
        if method == "dense":
            assert not hasattr(model.policy, "sparse_controller")
            assert {type(c) for c in callbacks} == {sb3_sparse.FlushDenormalCallback}
            continue
        cnn = env_id != "CartPole-v1"
        assert type(model.policy) is (sb3_sparse.SparseDQNCnnPolicy if cnn else sb3_sparse.SparseDQNPolicy)
        assert sb3_sparse.SparseTrainingCallback in {type(c) for c in callbacks}
        config = model.policy.sparse_config
        assert (config.method, config.distribution, config.sparse_output_layer) == (method.split("_")[0], "erk", True)
        layers = [m for m in model.policy.q_net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        assert len(layers) == (5 if cnn else 3)
        assert all(m.bias is None for m in layers) is (method == "rigl_nobias")
        assert config.init == ("dense" if method in ("static", "gmp") else "sparse")  # Graesser et al.'s configs
        sparsity = sb3_sparse.summary(model)["sparsity"]
        if method == "gmp":  # dense at the start, pruned to 95% between 20% and 80% of training every 5000 updates
            assert sparsity == 0.0 and config.sparsity == 0.95 and config.update_interval == 5000
            assert (config.initial_sparsity, config.prune_start_fraction, config.prune_end_fraction) == (0.0, 0.2, 0.8)
            continue
        assert sparsity == pytest.approx(0.9, abs=0.001)
        if method != "static":
            assert (config.update_interval, config.drop_fraction, config.drop_schedule) == (5000, 0.3, "cosine")
            assert config.end_fraction == 0.8
        model.env.close()


def test_merge_keeps_the_files_policy_kwargs():
    base = dict(preset="ds-td3", lambdas=(7, 64), net_arch=[256, 256], optimizer_kwargs=dict(weight_decay=2e-4))
    merged = merge_policy_kwargs(base, dict(net_arch=[64, 64], sparsity=0.8, method="rigl"))
    assert merged == dict(
        preset="ds-td3", net_arch=[64, 64], optimizer_kwargs=dict(weight_decay=2e-4), sparsity=0.8, method="rigl"
    )
    assert base["lambdas"] == (7, 64)  # untouched
    assert merge_policy_kwargs(base, dict(net_arch=[64, 64]))["lambdas"] == (7, 64)


# -- SAC's hard target update every N gradient updates ----------------------------------------------


class TargetWatcher(BaseCallback):
    """After each train(): whether the critic's target changed in that call, and whether it equals the critic."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, bool, bool]] = []
        self.before: list[torch.Tensor] = []

    def _on_training_start(self) -> None:
        self.before = [p.clone() for p in self.model.critic_target.parameters()]

    def _on_rollout_start(self) -> None:
        if self.model._n_updates:
            target = list(self.model.critic_target.parameters())
            changed = any(not torch.equal(a, b) for a, b in zip(self.before, target, strict=True))
            same = all(torch.equal(a, b) for a, b in zip(self.model.critic.parameters(), target, strict=True))
            self.calls.append((self.model._n_updates, changed, same))
            self.before = [p.clone() for p in target]

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("gradient_steps", [1, 2])
def test_global_target_update_interval_counts_updates_over_training(gradient_steps):
    model = SAC(
        "MlpPolicy", "Pendulum-v1", learning_starts=20, batch_size=16, tau=1.0, target_update_interval=6,
        train_freq=gradient_steps, gradient_steps=gradient_steps, ent_coef=0.2, seed=0, policy_kwargs=dict(net_arch=[16]),
    )  # fmt: skip
    watcher = TargetWatcher()
    model.learn(80, callback=[GlobalTargetUpdateInterval(), watcher])
    # Copied after updates 1, 7, 13, ... (0-based index % 6 == 0), i.e. in the calls whose first update is one;
    # with one update per call the target then equals the critic.
    expected = [(n, (n - gradient_steps) % 6 == 0, gradient_steps == 1 and (n - 1) % 6 == 0) for n, _, _ in watcher.calls]
    assert watcher.calls == expected
    assert sum(changed for _, changed, _ in expected) >= 5
    assert (model.tau, model.target_update_interval) == (1.0, 6)  # restored: a saved model keeps its settings


def test_global_target_update_interval_rejects_what_it_cannot_schedule():
    td3 = TD3("MlpPolicy", "Pendulum-v1", learning_starts=10, policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(TypeError, match="SAC"):
        td3.learn(20, callback=GlobalTargetUpdateInterval())
    sac = SAC(
        "MlpPolicy", "Pendulum-v1", target_update_interval=10, train_freq=3, gradient_steps=3, policy_kwargs=dict(net_arch=[8])
    )
    with pytest.raises(ValueError, match="gradient_steps"):
        sac.learn(20, callback=GlobalTargetUpdateInterval())


# -- the zoo's commands, end-to-end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory) -> Path:
    """Two DS-TD3 Pendulum runs from hyperparams/ds_td3.yml (policy by dotted path, callback from the file):
    run 1 trains 1100 updates (one topology update at e = 1000), run 2 continues it with ``-i``."""
    cwd = tmp_path_factory.mktemp("zoo")
    small = ["--hyperparams", "learning_starts:100", "batch_size:32", "-f", "logs", "--eval-episodes", "2"]
    train(cwd, "td3", "Pendulum-v1", HYPERPARAMS / "ds_td3.yml", "-n", "1200", "--eval-freq", "500", *small)
    zip_1 = "logs/td3/Pendulum-v1_1/Pendulum-v1.zip"
    train(cwd, "td3", "Pendulum-v1", HYPERPARAMS / "ds_td3.yml", "-n", "300", "--eval-freq", "150", "-i", zip_1, *small)
    return cwd


def test_train_with_the_dotted_policy_path(td3_run):
    run_dir = td3_run / "logs" / "td3" / "Pendulum-v1_1"
    for name in ("Pendulum-v1.zip", "best_model.zip", "evaluations.npz", "0.monitor.csv", "Pendulum-v1/config.yml"):
        assert (run_dir / name).is_file(), name
    model = load(run_dir / "Pendulum-v1.zip")
    assert isinstance(model.policy, sb3_sparse.SparseTD3Policy)
    assert model.policy._sparse_kwargs["preset"] == "ds-td3"
    report = sb3_sparse.summary(model)
    for net in report["networks"].values():
        assert net["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert model.policy.critic.optimizer.param_groups[0]["weight_decay"] == pytest.approx(2e-4)
    assert model._n_updates == 1100
    assert report["topology_updates"] == 1  # the YAML's callback drove the evolution (e = 1000)
    assert np.load(run_dir / "evaluations.npz")["results"].shape == (2, 2)


def test_continue_training_keeps_the_sparse_state(td3_run):
    first = load(td3_run / "logs" / "td3" / "Pendulum-v1_1" / "Pendulum-v1.zip")
    second = load(td3_run / "logs" / "td3" / "Pendulum-v1_2" / "Pendulum-v1.zip")
    assert second._n_updates == first._n_updates + 200  # the update counter (and the schedule) continues
    assert sb3_sparse.summary(second)["topology_updates"] == 1
    assert second.policy.critic.optimizer.param_groups[0]["weight_decay"] == pytest.approx(2e-4)
    # No topology update is due before update 2000: the continued run kept the saved topology exactly.
    assert all(torch.equal(a, b) for a, b in zip(online_masks(first).values(), online_masks(second).values(), strict=True))


def test_enjoy(td3_run):
    out = run("rl_zoo3.enjoy --algo td3 --env Pendulum-v1 -f logs --exp-id 1 -n 210 --no-render".split(), td3_run)
    assert "Episode Reward" in out and "Mean reward" in out


def test_record_video_writes_an_mp4(td3_run):
    run("rl_zoo3.record_video --algo td3 --env Pendulum-v1 -f logs --exp-id 1 -n 50 -o videos".split(), td3_run)
    videos = list((td3_run / "videos").glob("*.mp4"))
    assert len(videos) == 1
    data = videos[0].read_bytes()
    assert len(data) > 1000 and data[4:8] == b"ftyp"


def test_plots(td3_run):
    run("rl_zoo3.plots.all_plots -a td3 -e Pendulum -f logs -o results --no-display".split(), td3_run)
    with open(td3_run / "results.pkl", "rb") as f:
        results = pickle.load(f)
    assert results.get("Pendulum")
    run("rl_zoo3.plots.plot_from_file -i results.pkl -o curves.png --format png".split(), td3_run)
    assert (td3_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_on_a_zoo_model(td3_run):
    out = run("sb3_sparse info logs/td3/Pendulum-v1_1/Pendulum-v1.zip".split(), td3_run)
    assert "method: set" in out and "topology updates: 1  updates since the last one: 100" in out
    for layer in ("qf0.2", "qf1.2", "mu.2"):
        assert any(line.strip().startswith(layer) and "sparsity" in line for line in out.splitlines()), layer
    assert "inference FLOPs per action" in out and "training FLOPs" in out


def test_sac_with_the_alias_and_hard_target_updates(tmp_path):
    """SAC on Hopper from hyperparams/ds_sac.yml with the alias and --gym-packages; both callbacks from the file."""
    config = yaml.safe_load((HYPERPARAMS / "ds_sac.yml").read_text())
    (tmp_path / "alias.yml").write_text(yaml.safe_dump({"Hopper-v5": config["Hopper-v5"] | {"policy": "SparseMlpPolicy"}}))
    train(
        tmp_path, "sac", "Hopper-v5", "alias.yml", "--gym-packages", "sb3_sparse", "-n", "261", "--eval-freq", "-1",
        "-f", "logs", "--hyperparams", "learning_starts:100", "batch_size:16", "target_update_interval:80",
    )  # fmt: skip
    model = load(tmp_path / "logs" / "sac" / "Hopper-v5_1" / "Hopper-v5.zip", SAC)
    assert isinstance(model.policy, sb3_sparse.SparseSACPolicy) and model.policy.sparse_config.lambdas == (7, 20)
    assert sb3_sparse.summary(model)["sparsity"] == pytest.approx(0.8155, abs=0.001)
    # The file's tau = 1 and interval (here 80) are what the model keeps, not the callback's temporary values.
    assert (model.tau, model.target_update_interval, model._n_updates) == (1.0, 80, 161)
    # Copies after updates 1, 81 and 161 (0-based index % 80 == 0): the last update was one.
    online = dict(model.critic.named_parameters())
    assert all(torch.equal(online[k], v) for k, v in model.critic_target.named_parameters())


def test_dqn_rigl_on_cartpole(tmp_path, capsys):
    out = train(
        tmp_path, "dqn", "CartPole-v1", HYPERPARAMS / "rigl_dqn.yml", "-n", "1300", "--eval-freq", "-1", "-f", "logs",
        "--hyperparams", "learning_starts:200",
    )  # fmt: skip
    model = load(tmp_path / "logs" / "dqn" / "CartPole-v1_1" / "CartPole-v1.zip", DQN)
    assert isinstance(model.policy, sb3_sparse.SparseDQNPolicy) and model.policy.sparse_config.method == "rigl"
    # train() after each of the file's 256-step rollouts (the sixth overshoots -n 1300), 128 gradient steps each
    assert model._n_updates == 6 * 128
    assert sb3_sparse.summary(model)["sparsity"] == pytest.approx(0.9, abs=0.001)
    assert "| sparse/" in out and "q_net/sparsity" in out  # the file's SparseTrainingCallback logged
    info(str(tmp_path / "logs" / "dqn" / "CartPole-v1_1" / "CartPole-v1.zip"))
    printed = capsys.readouterr().out
    assert "DQN with SparseDQNPolicy, 768 gradient updates" in printed and "method: rigl" in printed


# -- hyperparameter optimization ----------------------------------------------------------------------


def optimize(cwd: Path, storage: str, study: str, trials: int, log_path: str, seed: int) -> str:
    return train(
        cwd, "td3", "Pendulum-v1", HYPERPARAMS / "ds_td3.yml", "--gym-packages", "sb3_sparse.zoo", "-optimize",
        "--n-trials", str(trials), "--n-jobs", "1", "-n", "300", "--eval-episodes", "1", "--n-evaluations", "1",
        "--storage", storage, "--study-name", study, "--sampler", "random", "--pruner", "none", "--no-optim-plots",
        "--optimization-log-path", log_path, "--hyperparams", "learning_starts:100", seed=seed,
    )  # fmt: skip


def test_optimize_samples_sparse_settings_and_workers_share_a_journal(tmp_path):
    optimize(tmp_path, "study.log", "sparse", 2, "trials_a", seed=1)
    optimize(tmp_path, "study.log", "sparse", 2, "trials_b", seed=2)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    trials = optuna.load_study(study_name="sparse", storage=storage).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all({"sparsity", "sparse_method", "learning_rate", "net_arch"} <= set(t.params) for t in trials)
    for number, folder in ((0, "trials_a"), (3, "trials_b")):  # one trial of each worker
        model = load(tmp_path / folder / f"trial_{number}" / "best_model.zip")
        params = trials[number].params
        config = model.policy.sparse_config
        assert (config.sparsity, config.method) == (params["sparsity"], params["sparse_method"])
        assert config.lambdas is None  # the sampled sparsity replaced the file's lambdas
        # The file's other policy settings are kept; the zoo's sampled net_arch is applied.
        assert model.policy_kwargs["preset"] == "ds-td3"
        assert model.policy.critic.optimizer.param_groups[0]["weight_decay"] == pytest.approx(2e-4)
        assert model.policy.net_arch == {"small": [64, 64], "medium": [256, 256], "big": [400, 300]}[params["net_arch"]]

    # Train with a stored trial's settings (--trial-id): merged into the file's policy_kwargs too.
    train(
        tmp_path, "td3", "Pendulum-v1", HYPERPARAMS / "ds_td3.yml", "--gym-packages", "sb3_sparse.zoo", "--storage",
        "study.log", "--study-name", "sparse", "--trial-id", "2", "-n", "200", "--eval-freq", "-1", "-f", "trained",
        "--hyperparams", "learning_starts:100",
    )  # fmt: skip
    model = load(tmp_path / "trained" / "td3" / "Pendulum-v1_1" / "Pendulum-v1.zip")
    assert model.policy.sparse_config.sparsity == trials[2].params["sparsity"]
    assert model.policy_kwargs["optimizer_kwargs"] == {"weight_decay": 2e-4}
    assert model.lr_schedule(1.0) == pytest.approx(trials[2].params["learning_rate"])


def test_optimize_with_an_rdb_storage(tmp_path):
    optimize(tmp_path, "sqlite:///study.db", "rdb", 2, "trials", seed=3)
    study = optuna.load_study(study_name="rdb", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 2 and all("sparsity" in t.params for t in study.trials)


def test_a_dense_file_keeps_its_policy_kwargs_under_optimize():
    """The merging sampler also fixes dense files: their optimizer_kwargs survive; nothing sparse is sampled."""
    from rl_zoo3 import hyperparams_opt

    from sb3_sparse import zoo

    trial = optuna.create_study().ask()
    token = zoo._TRIAL_BASE.set((dict(optimizer_kwargs=dict(weight_decay=2e-4)), False))
    try:
        sampled = hyperparams_opt.HYPERPARAMS_SAMPLER["sac"](trial, 1, 1, {"using_her_replay_buffer": False})
    finally:
        zoo._TRIAL_BASE.reset(token)
    assert sampled["policy_kwargs"]["optimizer_kwargs"] == dict(weight_decay=2e-4)
    assert "sparsity" not in trial.params and "net_arch" in sampled["policy_kwargs"]
    assert sampled["target_update_interval"] == 1  # the zoo's sampled tau is a soft update after every step


def test_optimize_without_the_zoo_module_still_samples_the_sparse_settings(tmp_path):
    """The file names sb3_sparse.SparseTD3Policy: importing it patches the zoo, no --gym-packages needed."""
    train(
        tmp_path, "td3", "Pendulum-v1", HYPERPARAMS / "ds_td3.yml", "-optimize", "--n-trials", "1", "--n-jobs", "1",
        "-n", "200", "--eval-episodes", "1", "--n-evaluations", "1", "--storage", "study.log", "--study-name", "plain",
        "--sampler", "random", "--pruner", "none", "--no-optim-plots", "--optimization-log-path", "trials",
        "--hyperparams", "learning_starts:100",
    )  # fmt: skip
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    (trial,) = optuna.load_study(study_name="plain", storage=storage).trials
    assert {"sparsity", "sparse_method"} <= set(trial.params)
    model = load(tmp_path / "trials" / "trial_0" / "best_model.zip")
    assert model.policy.sparse_config.sparsity == trial.params["sparsity"]
    assert model.policy_kwargs["preset"] == "ds-td3"  # the file's sparse settings survive
    assert model.policy.critic.optimizer.param_groups[0]["weight_decay"] == pytest.approx(2e-4)


def test_a_search_trial_sampled_without_the_sparse_sampler_fails_with_the_fix(monkeypatch):
    """sb3_sparse imported before rl_zoo3: the policy patches the zoo and refuses the trial sampled unpatched."""
    for name in ("objective", "read_hyperparameters"):  # as rl-zoo3 defines them (restored afterwards)
        monkeypatch.setattr(ExperimentManager, name, getattr(ExperimentManager, name).__wrapped__)
    manager = object.__new__(ExperimentManager)
    manager.optimize_hyperparameters = True

    def objective(self):  # stands in for the zoo's objective: the manager is a calling frame's self
        return TD3("SparseMlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8]))

    with pytest.raises(RuntimeError, match=r"pass --gym-packages sb3_sparse\.zoo"):
        objective(manager)
    assert ExperimentManager.objective._sb3_sparse  # patched for the trials to come
    objective(manager)
