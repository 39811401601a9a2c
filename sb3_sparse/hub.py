"""Package a trained rl-zoo3 run of a sparse agent as a Hugging Face Hub model repository.

``python -m sb3_sparse.hub --algo td3 --env HalfCheetah-v5 -f logs/ -orga ORGA`` builds the
repository folder (the model zip and its unzipped content, ``config.yml``, ``args.yml``,
``env_kwargs.yml``, ``train_eval_metrics.zip``, ``results.json``, ``sparsity.json``, a
``replay.mp4`` and a model card ``README.md`` with the SB3/zoo metadata and a sparsity
section) and uploads it with ``huggingface_hub``. With ``--local-dir DIR``, or when
``HF_HUB_OFFLINE=1``, it only writes the folder. It stands in for ``rl_zoo3.push_to_hub``,
whose import fails with current ``huggingface_sb3`` releases.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import sys
import zipfile
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .model_card import model_card, public_train_command, sparsity_report


class RunNotFound(Exception):
    """The run to package cannot be found: reported as one line on stderr, exit status 2."""


def _locate_run(algo: str, folder: str, env_name: Any, exp_id: int, best: bool, checkpoint: int | None, last: bool):
    """rl-zoo3's model and log paths of the run, or :class:`RunNotFound` naming the options to fix."""
    from rl_zoo3.utils import ALGOS, get_model_path

    if algo not in ALGOS:
        raise RunNotFound(f"--algo {algo!r} is not an rl-zoo3 algorithm; allowed: {sorted(ALGOS)}")
    try:
        return get_model_path(exp_id, folder, algo, env_name, best, checkpoint, last)
    except (AssertionError, ValueError) as error:  # rl-zoo3 asserts the folder, raises for the model file
        raise RunNotFound(f"no run to package: {error} (-f/--folder, --algo, --env, --exp-id: 0 is the latest run)") from None


@dataclass
class Packaged:
    """What :func:`package` wrote.

    :param folder: the repository folder.
    :param repo_id: the Hub repository id the card refers to.
    :param mean_reward: mean evaluation return.
    :param std_reward: its standard deviation over the episodes.
    :param video: path of ``replay.mp4``, or ``None``.
    :param video_error: why no video was made (``None`` when one was).
    """

    folder: Path
    repo_id: str
    mean_reward: float
    std_reward: float
    video: Path | None
    video_error: str | None


def record_video(model: Any, env: Any, path: Path, length: int, deterministic: bool) -> None:
    """Write ``length`` steps of the agent acting in ``env`` (rendering ``rgb_array``) to an MP4 file.

    :param model: the agent.
    :param env: a ``VecEnv`` whose environments render ``rgb_array`` frames.
    :param path: the MP4 file to write.
    :param length: number of steps.
    :param deterministic: deterministic actions.
    :raises RuntimeError: when the environment renders no frames.
    """
    import imageio.v2 as imageio

    fps = int(env.get_attr("metadata", 0)[0].get("render_fps") or 30)
    obs = env.reset()
    frames = []
    state, episode_start = None, np.ones((env.num_envs,), dtype=bool)
    for _ in range(length):
        frame = env.render()
        if frame is None:
            raise RuntimeError("the environment rendered no frame (render_mode rgb_array unsupported?)")
        frames.append(np.asarray(frame))
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        obs, _, episode_start, _ = env.step(action)
    imageio.mimwrite(path, frames, fps=fps, codec="libx264", macro_block_size=2, quality=7)


def _export_plain(model: Any, model_path: str, path: Path, load_kwargs: dict[str, Any]) -> str | None:
    """Write the agent with SB3's own policy class (loads without sb3-sparse); return its file name.

    The model was loaded for evaluation with ``load_kwargs`` (a one-transition buffer): the copy gets the
    saved values back, so that it trains on like the original.
    """
    from stable_baselines3.common.save_util import load_from_zip_file

    from .exporter import export

    if not hasattr(model.policy, "sparse_controller"):
        return None  # a dense baseline already loads without the plugin
    data, _, _ = load_from_zip_file(model_path, load_data=True, device="cpu")
    saved = {key: (getattr(model, key), data[key]) for key in load_kwargs if key in data}
    try:
        for key, (_, value) in saved.items():
            setattr(model, key, value)
        return export(model, path, format="sb3").name
    finally:
        for key, (value, _) in saved.items():
            setattr(model, key, value)


def _train_command(path: Path) -> str | None:
    """The zoo's ``command.txt`` as the card shows it (:func:`sb3_sparse.model_card.public_train_command`)."""
    return public_train_command(path.read_text()) if path.is_file() else None


def _evaluate(model: Any, env: Any, n_episodes: int, deterministic: bool, folder: Path) -> tuple[float, float]:
    from stable_baselines3.common.evaluation import evaluate_policy

    mean, std = evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=deterministic)
    results = {
        "mean_reward": float(mean),
        "std_reward": float(std),
        "is_deterministic": deterministic,
        "n_eval_episodes": n_episodes,
        "eval_datetime": datetime.datetime.now().isoformat(),
    }
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return float(mean), float(std)


def package(
    *,
    algo: str,
    env_id: str,
    folder: str,
    organization: str,
    out_dir: Path,
    exp_id: int = 0,
    repo_name: str | None = None,
    load_best: bool = False,
    load_checkpoint: int | None = None,
    load_last_checkpoint: bool = False,
    n_eval_episodes: int = 10,
    video_length: int = 1000,
    video: bool = True,
    deterministic: bool | None = None,
    seed: int = 0,
    device: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    install: str | None = None,
) -> Packaged:
    """Write a Hub model repository folder for a trained zoo run.

    :param algo: the zoo's algorithm name (``"td3"``, ``"sac"``, ``"dqn"``, ...).
    :param env_id: the environment id.
    :param folder: the zoo's log folder (``-f``).
    :param organization: the Hub organization or user.
    :param out_dir: the repository folder to write (created; existing files are overwritten).
    :param exp_id: the run id (0: the latest).
    :param repo_name: the repository name (default: the zoo's ``{algo}-{env}``).
    :param load_best: package ``best_model.zip`` instead of the final model.
    :param load_checkpoint: package the checkpoint of this many steps.
    :param load_last_checkpoint: package the last checkpoint.
    :param n_eval_episodes: evaluation episodes for the card's mean reward.
    :param video_length: steps in ``replay.mp4``.
    :param video: make ``replay.mp4``.
    :param deterministic: deterministic actions (default: yes, except on Atari and MiniGrid).
    :param seed: seed of the evaluation and video environments.
    :param device: torch device to load the model on.
    :param env_kwargs: extra environment keyword arguments.
    :param install: the pip requirement shown in the card (default: this version of sb3-sparse).
    :return: what was written.
    :raises RunNotFound: no such algorithm, run folder or model file.
    """
    from huggingface_sb3 import EnvironmentName, ModelName
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS, create_test_env, get_saved_hyperparams

    import sb3_sparse

    env_name = EnvironmentName(env_id)
    _, model_path, log_path = _locate_run(algo, folder, env_name, exp_id, load_best, load_checkpoint, load_last_checkpoint)
    print(f"Packaging {model_path}")
    stats_path = os.path.join(log_path, env_name)
    hyperparams, maybe_stats_path = get_saved_hyperparams(stats_path, test_mode=True)
    saved_env_kwargs: dict[str, Any] = {}
    args_path = Path(stats_path) / "args.yml"
    if args_path.is_file():
        saved_args = yaml.load(args_path.read_text(), Loader=yaml.UnsafeLoader)
        saved_env_kwargs = saved_args.get("env_kwargs") or {}
    saved_env_kwargs.update(env_kwargs or {})
    if deterministic is None:
        deterministic = not (ExperimentManager.is_atari(env_id) or ExperimentManager.is_minigrid(env_id))

    def make_env(render: bool) -> Any:
        kwargs = dict(saved_env_kwargs, **({"render_mode": "rgb_array"} if render else {}))
        return create_test_env(
            env_name.gym_id,
            n_envs=1,
            stats_path=maybe_stats_path,
            seed=seed,
            log_dir=None,
            should_render=False,
            hyperparams=deepcopy(hyperparams),
            env_kwargs=kwargs,
        )

    eval_env = make_env(render=False)
    load_kwargs: dict[str, Any] = {"buffer_size": 1}
    if "optimize_memory_usage" in hyperparams:
        load_kwargs["optimize_memory_usage"] = False
    algo_class = ALGOS[algo]
    model = algo_class.load(model_path, env=eval_env, device=device, **load_kwargs)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_name = ModelName(algo, env_name)
    repo_id = f"{organization}/{repo_name or model_name}"
    # The zoo's files, so that `rl_zoo3.load_from_hub` restores a run folder from the repository.
    shutil.copy(model_path, out_dir / model_name.filename)  # the saved model as trained (full settings)
    with zipfile.ZipFile(model_path) as archive:
        archive.extractall(out_dir / model_name)
    shutil.copy(Path(stats_path) / "config.yml", out_dir / "config.yml")
    if args_path.is_file():
        shutil.copy(args_path, out_dir / "args.yml")
    (out_dir / "env_kwargs.yml").write_text(yaml.dump(saved_env_kwargs))
    normalize = Path(stats_path) / "vecnormalize.pkl"
    if normalize.is_file():
        shutil.copy(normalize, out_dir / "vec_normalize.pkl")
    with zipfile.ZipFile(out_dir / "train_eval_metrics.zip", "w") as archive:
        if os.path.isfile(os.path.join(log_path, "evaluations.npz")):
            archive.write(os.path.join(log_path, "evaluations.npz"), arcname="evaluations.npz")
        for monitor_file in glob.glob(os.path.join(log_path, "*.csv")):
            archive.write(monitor_file, arcname=os.path.basename(monitor_file))
    gitattributes = out_dir / ".gitattributes"
    if "*.mp4" not in (gitattributes.read_text() if gitattributes.is_file() else ""):
        with gitattributes.open("a") as f:
            f.write("*.mp4 filter=lfs diff=lfs merge=lfs -text\n")

    plain_filename = _export_plain(model, model_path, out_dir / f"{model_name}-plain-sb3.zip", load_kwargs)
    mean_reward, std_reward = _evaluate(model, eval_env, n_eval_episodes, deterministic, out_dir)
    print(f"Mean reward: {mean_reward:.2f} +/- {std_reward:.2f} over {n_eval_episodes} episodes")
    report = sparsity_report(model)
    (out_dir / "sparsity.json").write_text(json.dumps(report, indent=2, default=str) + "\n")

    video_path: Path | None = None
    video_error: str | None = "not requested (--no-render)"
    if video:
        video_path = out_dir / "replay.mp4"
        try:
            video_env = make_env(render=True)
            try:
                record_video(model, video_env, video_path, video_length, deterministic)
            finally:
                video_env.close()
            video_error = None
        except Exception as error:  # rendering needs a display-less backend (MUJOCO_GL=egl/osmesa), pygame, ffmpeg
            video_error = f"{type(error).__name__}: {error}"
            video_path.unlink(missing_ok=True)
            video_path = None
            print(f"No replay video: {video_error}. The repository folder is written without it.")

    command_file = Path(stats_path) / "command.txt"
    card = model_card(
        algo=algo,
        algo_class_name=algo_class.__name__,
        env_id=env_name.gym_id,
        repo_id=repo_id,
        model_filename=model_name.filename,
        mean_reward=mean_reward,
        std_reward=std_reward,
        report=report,
        hyperparams=hyperparams,
        env_kwargs=saved_env_kwargs,
        install=install or f"sb3-sparse=={sb3_sparse.__version__}",
        train_command=_train_command(command_file),
        repo_name_is_default=repo_name is None or repo_name == str(model_name),
        plain_filename=plain_filename,
        algo_module=algo_class.__module__.split(".")[0],
    )
    card.save(out_dir / "README.md")
    eval_env.close()
    return Packaged(out_dir, repo_id, mean_reward, std_reward, video_path, video_error)


def upload(folder: Path, repo_id: str, commit_message: str, private: bool = False) -> str:
    """Create the Hub repository if needed and upload the folder (token from ``hf auth login`` / ``HF_TOKEN``).

    :param folder: the repository folder.
    :param repo_id: ``"organization/name"``.
    :param commit_message: the commit message.
    :param private: create the repository as private.
    :return: the repository's URL.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return str(url)


class _StoreDict(argparse.Action):
    """``key:value`` pairs, values evaluated as Python (as rl-zoo3's ``--env-kwargs``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string=None):
        setattr(namespace, self.dest, {v.split(":", 1)[0]: eval(v.split(":", 1)[1]) for v in values})


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``python -m sb3_sparse.hub --help``).

    :param argv: arguments (default: ``sys.argv[1:]``).
    :return: the exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m sb3_sparse.hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", required=True, help="RL algorithm (the zoo's name: td3, sac, dqn, ...)")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("-f", "--folder", required=True, help="the zoo's log folder")
    parser.add_argument("--exp-id", type=int, default=0, help="experiment id (default: 0, the latest)")
    parser.add_argument("-orga", "--organization", required=True, help="Hugging Face Hub organization or user")
    parser.add_argument("-name", "--repo-name", help="repository name (default: the zoo's '{algo}-{env}')")
    parser.add_argument("--local-dir", type=Path, help="write the repository folder here and upload nothing")
    parser.add_argument("-m", "--commit-message", default="Upload sparse agent (sb3-sparse)", help="commit message")
    parser.add_argument("-n", "--n-timesteps", type=int, default=1000, help="steps in the replay video")
    parser.add_argument("--n-eval-episodes", type=int, default=10, help="evaluation episodes for the card's mean reward")
    parser.add_argument("--no-render", action="store_true", help="make no replay video")
    parser.add_argument("--deterministic", action="store_true", help="deterministic actions (default except Atari)")
    parser.add_argument("--stochastic", action="store_true", help="stochastic actions")
    parser.add_argument("--load-best", action="store_true", help="package best_model.zip instead of the final model")
    parser.add_argument("--load-checkpoint", type=int, help="package the checkpoint of this many steps")
    parser.add_argument("--load-last-checkpoint", action="store_true", help="package the last checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation and video environments")
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--num-threads", type=int, default=-1, help="torch threads (-1: default)")
    parser.add_argument("--env-kwargs", nargs="+", action=_StoreDict, help="extra environment arguments, key:value")
    parser.add_argument("--install", help="pip requirement of the plugin shown in the card (default: sb3-sparse==VERSION)")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)

    import torch

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    deterministic = True if args.deterministic else (False if args.stochastic else None)
    repo_name = args.repo_name or f"{args.algo}-{args.env.replace('/', '-')}"
    out_dir = args.local_dir if args.local_dir is not None else Path("hub") / repo_name
    try:
        result = _package(args, out_dir, deterministic)
    except RunNotFound as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return _publish(args, result)


def _package(args: argparse.Namespace, out_dir: Path, deterministic: bool | None) -> Packaged:
    return package(
        algo=args.algo,
        env_id=args.env,
        folder=args.folder,
        organization=args.organization,
        out_dir=out_dir,
        exp_id=args.exp_id,
        repo_name=args.repo_name,
        load_best=args.load_best,
        load_checkpoint=args.load_checkpoint,
        load_last_checkpoint=args.load_last_checkpoint,
        n_eval_episodes=args.n_eval_episodes,
        video_length=args.n_timesteps,
        video=not args.no_render,
        deterministic=deterministic,
        seed=args.seed,
        device=args.device,
        env_kwargs=args.env_kwargs,
        install=args.install,
    )


def _publish(args: argparse.Namespace, result: Packaged) -> int:
    """Upload the folder unless ``--local-dir`` or ``HF_HUB_OFFLINE``; return the exit status."""
    from huggingface_hub import constants

    print(f"Wrote the repository folder {result.folder} for {result.repo_id}")
    if args.local_dir is not None:
        print("--local-dir given: nothing uploaded")
        return 0
    if constants.HF_HUB_OFFLINE:
        print("HF_HUB_OFFLINE is set: nothing uploaded")
        return 0
    try:
        url = upload(result.folder, result.repo_id, args.commit_message, private=args.private)
    except Exception as error:  # network, authentication, permissions
        print(f"Upload to {result.repo_id} failed ({type(error).__name__}: {error}); the folder is kept at {result.folder}")
        return 1
    print(f"Uploaded: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
