"""Hub packaging (python -m sb3_sparse.hub): offline folder, model card metadata, loading the agent back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from isolation import run_without
from stable_baselines3 import TD3
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import sb3_sparse
from sb3_sparse import hub

ROOT = Path(__file__).resolve().parents[1]


def cli(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", SDL_AUDIODRIVER="dummy")
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"python -m {' '.join(args)} failed:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory) -> Path:
    """A small TowS-TD3 (80% sparse would do; the file's 90%) Pendulum run trained by rl-zoo3."""
    cwd = tmp_path_factory.mktemp("hub")
    cli(
        ["rl_zoo3.train", "--algo", "td3", "--env", "Pendulum-v1", "-conf", str(ROOT / "hyperparams" / "tows90_td3.yml"),
         "-n", "400", "--eval-freq", "200", "--eval-episodes", "1", "--num-threads", "1", "--seed", "0", "-f", "logs",
         "--hyperparams", "learning_starts:100", "batch_size:32"],
        cwd,
    )  # fmt: skip
    return cwd


@pytest.fixture(scope="module")
def repo(zoo_run) -> tuple[Path, str]:
    """The repository folder written by the real command, offline, with --local-dir."""
    out = cli(
        ["sb3_sparse.hub", "--algo", "td3", "--env", "Pendulum-v1", "-f", "logs", "-orga", "sparse-org", "--exp-id", "1",
         "--local-dir", "repo", "-n", "60", "--n-eval-episodes", "2", "--num-threads", "1"],
        zoo_run,
    )  # fmt: skip
    return zoo_run / "repo", out


def test_the_folder_has_what_the_zoo_packages(repo):
    folder, out = repo
    assert "nothing uploaded" in out
    for name in (
        "td3-Pendulum-v1.zip",
        "config.yml",
        "args.yml",
        "env_kwargs.yml",
        "results.json",
        "sparsity.json",
        "README.md",
    ):
        assert (folder / name).is_file(), name
    assert {"data", "policy.pth", "actor.optimizer.pth"} <= {p.name for p in (folder / "td3-Pendulum-v1").iterdir()}
    with zipfile.ZipFile(folder / "train_eval_metrics.zip") as archive:
        assert {"evaluations.npz", "0.monitor.csv"} <= set(archive.namelist())
    video = (folder / "replay.mp4").read_bytes()
    assert len(video) > 1000 and video[4:8] == b"ftyp"
    assert "*.mp4 filter=lfs" in (folder / ".gitattributes").read_text()
    assert "sb3_sparse.SparseTD3Policy" in (folder / "config.yml").read_text()


def test_model_card_metadata_parses(repo):
    folder, _ = repo
    card = ModelCard.load(folder / "README.md")
    results = json.loads((folder / "results.json").read_text())
    data = card.data
    assert data.library_name == "stable-baselines3"
    assert {
        "Pendulum-v1",
        "reinforcement-learning",
        "stable-baselines3",
        "sb3-sparse",
        "sparse-training",
        "set",
        "tows",
    } <= set(data.tags)
    (result,) = data.eval_results
    assert (result.task_type, result.dataset_type, result.metric_type) == (
        "reinforcement-learning",
        "Pendulum-v1",
        "mean_reward",
    )
    assert result.metric_value == f"{results['mean_reward']:.2f} +/- {results['std_reward']:.2f}"
    assert results["n_eval_episodes"] == 2 and results["is_deterministic"] is True
    assert metadata_load(folder / "README.md")["model-index"][0]["results"][0]["metrics"][0]["type"] == "mean_reward"


def test_model_card_sparsity_section(repo):
    folder, _ = repo
    text = (folder / "README.md").read_text()
    report = json.loads((folder / "sparsity.json").read_text())
    assert report["sparsity"] == pytest.approx(0.9, abs=0.005) and report["method"] == "set" and report["preset"] == "tows"
    assert report["settings"]["mask_optimizer_moments"] is True
    assert f"| global sparsity (weights, biases excluded) | {report['sparsity']:.4f} |" in text
    assert f"| active / dense weights | {report['active_weights']:,} / {report['dense_weights']:,} |" in text
    for network in ("actor", "critic"):
        for layer, entry in report["networks"][network]["layers"].items():
            assert f"| {network} | `{layer}` | {entry['sparsity']:.4f} |" in text
    assert "inference FLOPs per action" in text and "training FLOPs (300 gradient updates)" in text
    assert "| `mask_optimizer_moments` | `True` |" in text and "| topology age |" in text
    assert 'pip install "sb3-sparse==' in text and "import sb3_sparse" in text
    assert 'load_from_hub(repo_id="sparse-org/td3-Pendulum-v1", filename="td3-Pendulum-v1.zip")' in text
    assert "python -m rl_zoo3.load_from_hub --algo td3 --env Pendulum-v1 -orga sparse-org -f from_hub/" in text
    assert "python -m rl_zoo3.train --algo td3 --env Pendulum-v1 -conf" in text  # the command that trained it


def test_the_agent_loads_back_from_the_folder_and_plays(repo, tmp_path):
    folder, _ = repo
    model = TD3.load(folder / "td3-Pendulum-v1.zip", device="cpu")
    assert isinstance(model.policy, sb3_sparse.SparseTD3Policy)
    report = json.loads((folder / "sparsity.json").read_text())
    assert sb3_sparse.summary(model)["active_weights"] == report["active_weights"]
    mean, _ = evaluate_policy(model, Monitor(gym.make("Pendulum-v1")), n_eval_episodes=1)
    assert np.isfinite(mean)
    # The zoo's own downloader restores a run folder from the repository (download served from the folder).
    from rl_zoo3 import load_from_hub as zoo_download

    def from_folder(repo_id: str, filename: str) -> str:
        assert repo_id == "sparse-org/td3-Pendulum-v1"
        if not (folder / filename).is_file():
            raise zoo_download.HTTPError(filename)
        return str(folder / filename)

    original = zoo_download.load_from_hub
    zoo_download.load_from_hub = from_folder
    try:
        zoo_download.download_from_hub("td3", zoo_download.EnvironmentName("Pendulum-v1"), 0, str(tmp_path), "sparse-org")
    finally:
        zoo_download.load_from_hub = original
    restored = TD3.load(tmp_path / "td3" / "Pendulum-v1_1" / "Pendulum-v1.zip", device="cpu")
    assert sb3_sparse.summary(restored)["active_weights"] == report["active_weights"]
    assert yaml.load((tmp_path / "td3" / "Pendulum-v1_1" / "Pendulum-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader)


def test_the_folder_has_a_copy_that_loads_without_sb3_sparse(repo):
    folder, _ = repo
    original = TD3.load(folder / "td3-Pendulum-v1.zip", device="cpu")
    plain = TD3.load(folder / "td3-Pendulum-v1-plain-sb3.zip", device="cpu")
    assert type(plain.policy).__module__.startswith("stable_baselines3.")
    assert plain.buffer_size == original.buffer_size  # the saved value, not the evaluation's one-transition buffer
    obs = np.stack([original.observation_space.sample() for _ in range(8)])
    np.save(folder.parent / "obs.npy", obs)
    np.save(folder.parent / "actions.npy", original.predict(obs, deterministic=True)[0])
    code = """
import numpy as np
from stable_baselines3 import TD3
model = TD3.load("repo/td3-Pendulum-v1-plain-sb3.zip", device="cpu")
np.testing.assert_array_equal(model.predict(np.load("obs.npy"), deterministic=True)[0], np.load("actions.npy"))
print("ok")
"""
    assert "ok" in run_without(["sb3_sparse"], code, folder.parent)
    text = (folder / "README.md").read_text()
    assert "from stable_baselines3 import TD3" in text and 'filename="td3-Pendulum-v1-plain-sb3.zip"' in text
    # The training command names the shipped file so that it works after `pip install sb3-sparse[zoo]`.
    assert "-conf $(python -m sb3_sparse hyperparams tows90_td3)" in text


class FakeApi:
    calls: ClassVar[list] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def create_repo(self, repo_id: str, private: bool, exist_ok: bool) -> str:
        FakeApi.calls.append(("create_repo", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id: str, folder_path: Path, commit_message: str) -> None:
        FakeApi.calls.append(("upload_folder", repo_id, Path(folder_path).resolve(), commit_message))


def test_upload_and_offline_modes(zoo_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import constants

    shutil.copytree(zoo_run / "logs", tmp_path / "logs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    args = ["--algo", "td3", "--env", "Pendulum-v1", "-f", "logs", "-orga", "me", "--n-eval-episodes", "1", "--no-render"]

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.main([*args, "-name", "offline-repo"]) == 0
    assert FakeApi.calls == [] and (tmp_path / "hub" / "offline-repo" / "README.md").is_file()
    assert "HF_HUB_OFFLINE is set: nothing uploaded" in capsys.readouterr().out

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.main([*args, "-name", "sparse-td3", "-m", "first upload"]) == 0
    folder = (tmp_path / "hub" / "sparse-td3").resolve()
    assert FakeApi.calls == [
        ("create_repo", "me/sparse-td3", False),
        ("upload_folder", "me/sparse-td3", folder, "first upload"),
    ]
    assert not (folder / "replay.mp4").exists()  # --no-render
    assert "-orga me -name sparse-td3 -f from_hub/" in (folder / "README.md").read_text()


def test_the_folder_is_written_when_no_video_can_be_made(zoo_run, tmp_path, monkeypatch, capsys):
    def no_display(*args, **kwargs):
        raise RuntimeError("no OpenGL context")

    monkeypatch.setattr(hub, "record_video", no_display)
    monkeypatch.chdir(zoo_run)
    args = ["--algo", "td3", "--env", "Pendulum-v1", "-f", "logs", "-orga", "me", "--n-eval-episodes", "1"]
    assert hub.main([*args, "--local-dir", str(tmp_path / "repo")]) == 0
    assert "No replay video: RuntimeError: no OpenGL context" in capsys.readouterr().out
    assert (tmp_path / "repo" / "README.md").is_file() and not (tmp_path / "repo" / "replay.mp4").exists()


@pytest.mark.parametrize("name", ["TD3", "DDPG", "SAC", "DQN", "QRDQN", "TQC", "CrossQ", "PPO", "A2C"])
def test_algorithm_of_a_saved_sparse_model(name, tmp_path):
    """`python -m sb3_sparse info` and the Hub packaging find the algorithm from the saved policy class."""
    import sb3_contrib
    import stable_baselines3
    from stable_baselines3.common.save_util import load_from_zip_file

    from sb3_sparse.hub_utils import algorithm_of, zoo_name

    algo = getattr(stable_baselines3, name, None) or getattr(sb3_contrib, name)
    env = "CartPole-v1" if name in ("DQN", "QRDQN") else "Pendulum-v1"
    sizes = dict(n_steps=8) if name in ("PPO", "A2C") else dict(buffer_size=10)  # PPO and A2C share one policy class
    algo("SparseMlpPolicy", env, policy_kwargs=dict(net_arch=[32, 32]), **sizes).save(tmp_path / "model")
    data, _, _ = load_from_zip_file(tmp_path / "model.zip")
    assert algorithm_of(data) is algo and zoo_name(algo) == name.lower()


@pytest.mark.parametrize("name", ["PPO", "A2C"])
def test_on_policy_model_card(name):
    """The card of a sparse PPO/A2C agent: both networks' layers, the on-policy method, the usage lines."""
    import stable_baselines3

    from sb3_sparse.model_card import model_card, sparsity_report

    algo = getattr(stable_baselines3, name)
    model = algo("SparseMlpPolicy", "CartPole-v1", n_steps=32, policy_kwargs=dict(sparsity=0.8, net_arch=[32, 32]), seed=0)
    model.learn(64, callback=sb3_sparse.SparseTrainingCallback())
    report = sparsity_report(model)
    assert set(report["networks"]) == {"actor", "critic"} and report["sparsity"] == pytest.approx(0.8, abs=0.01)
    card = model_card(
        algo=name.lower(),
        algo_class_name=name,
        env_id="CartPole-v1",
        repo_id=f"sparse-org/{name.lower()}-CartPole-v1",
        model_filename=f"{name.lower()}-CartPole-v1.zip",
        mean_reward=100.0,
        std_reward=5.0,
        report=report,
        hyperparams={},
        env_kwargs={},
        install="sb3-sparse",
    )
    text = str(card)
    assert f"# **{name}** agent" in text and "80.00% sparse" in text
    for network in ("actor", "critic"):
        for layer, entry in report["networks"][network]["layers"].items():
            assert f"| {network} | `{layer}` | {entry['sparsity']:.4f} |" in text
    assert f"--algo {name.lower()} --env CartPole-v1" in text
