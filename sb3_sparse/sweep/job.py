"""One sweep job: train with the packaged zoo file, evaluate on schedule, checkpoint, resume.

The same function runs in a local worker process and in a Ray task. Everything a job writes
lives in its own folder ``RESULTS/<job name>/``:

- ``job.json`` (the job), ``config.yml`` (the zoo hyperparameters as trained),
- ``evaluations.csv`` (every ``eval_freq`` steps: return of ``eval_episodes`` deterministic
  episodes, gradient updates and training seconds so far),
- ``logs/<start step>/progress.csv`` and TensorBoard files (SB3's logger, ``sparse/...`` keys),
  one folder per (re)start,
- ``connectivity_start.json`` and ``done.json`` (final counts, FLOPs, input-layer connectivity),
- ``checkpoints/`` (resumable state) and ``final_model.zip``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from torch import nn

from ..core.layers import SparseLayer
from ..core.sparsify import LINEAR
from ..denormal import DenormalScope, flush_denormal
from ..paper import read_policy_kwargs
from ..summary import network_summary
from ..zoo import merge_policy_kwargs
from .checkpoint import Checkpoints, Evaluations, read_json, write_atomic, write_json
from .grid import Job

# Files of a job folder small enough to commit and sufficient to rebuild the report.
COMPACT = ("job.json", "config.yml", "evaluations.csv", "done.json", "connectivity_start.json", "logs/*/progress.csv")
STATUS_EVERY = 1000  # environment steps between two status writes (the sweep's progress bar reads them)


def compact_files(folder: Path) -> dict[str, bytes]:
    """The job's compact result files by path relative to its folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for pattern in COMPACT for p in sorted(folder.glob(pattern))}


def _zoo_overrides(job: Job) -> dict[str, Any]:
    """The zoo hyperparameters to override: the job's own, merged sparse policy_kwargs, a right-sized buffer."""
    import yaml

    raw = yaml.safe_load(job.config_path.read_text())
    if job.env not in raw:
        raise ValueError(f"{job.file} has no entry for {job.env}; entries: {sorted(raw)}")
    entry = {**raw[job.env], **job.hyperparams}
    overrides = dict(job.hyperparams)
    if job.policy_kwargs or job.sparsity is not None:
        base = read_policy_kwargs(entry.get("policy_kwargs"))
        sampled = {**job.policy_kwargs, **({"sparsity": job.sparsity} if job.sparsity is not None else {})}
        overrides["policy_kwargs"] = merge_policy_kwargs(base, sampled)
    if "buffer_size" in entry:  # a buffer larger than the budget never fills: same samples, less memory
        overrides["buffer_size"] = min(int(entry["buffer_size"]), job.steps)
    return overrides


def _networks(model: Any) -> dict[str, nn.Module]:
    policy = model.policy
    names = ("actor", "critic", "q_net", "quantile_net")
    return {name: getattr(policy, name) for name in names if isinstance(getattr(policy, name, None), nn.Module)}


def input_connectivity(model: Any) -> list[int]:
    """Active connections per observation feature in the first layer of the acting network."""
    net = next(iter(_networks(model).values()))
    layer = next(m for m in net.modules() if isinstance(m, LINEAR))
    active = (layer.dense_mask() if isinstance(layer, SparseLayer) else torch.ones_like(layer.weight)) != 0
    return [int(n) for n in active.sum(dim=0)]


def final_summary(model: Any) -> dict[str, Any]:
    """Weights and training FLOPs of the trained model (dense models: every weight active)."""
    if hasattr(model.policy, "sparse_controller"):
        from .. import summary

        info = summary(model, n_updates=model._n_updates)
        flops = info["train_flops"] / info["dense_train_flops"] if info.get("dense_train_flops") else 1.0
        return {"active_weights": info["active_weights"], "dense_weights": info["dense_weights"],
                "sparsity": info["sparsity"], "train_flops_vs_dense": flops}  # fmt: skip
    nets = [network_summary(net) for net in _networks(model).values()]
    dense = sum(n["dense_weights"] for n in nets)
    return {"active_weights": dense, "dense_weights": dense, "sparsity": 0.0, "train_flops_vs_dense": 1.0}


class SweepCallback(BaseCallback):
    """Evaluates, checkpoints and reports progress at rollout boundaries (after the last ``train()``).

    Checkpoints are taken at the start of a rollout, when every update for the steps so far has
    run and the replay buffer holds them all, so a resumed job does exactly the same number of
    gradient updates as an uninterrupted one.
    """

    def __init__(self, job: Job, folder: Path, eval_env: Any, evaluations: Evaluations, state: dict[str, Any]) -> None:
        super().__init__()
        self.job, self.folder, self.eval_env, self.evaluations = job, folder, eval_env, evaluations
        self.checkpoints = Checkpoints(folder / "checkpoints")
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.last_checkpoint = int(state.get("timesteps", 0))
        self._since = time.perf_counter()

    def _on_training_start(self) -> None:
        self._since = time.perf_counter()
        self._status()

    def _on_step(self) -> bool:
        if self.num_timesteps % STATUS_EVERY == 0:
            self._status()
        return True

    def _on_rollout_start(self) -> None:
        self._boundary(final=False)

    def _on_training_end(self) -> None:
        self._boundary(final=True)

    def _boundary(self, final: bool) -> None:
        t, job = self.num_timesteps, self.job
        due_eval = t // job.eval_freq > self.evaluations.last_timesteps // job.eval_freq
        due_checkpoint = t // job.checkpoint_freq > self.last_checkpoint // job.checkpoint_freq
        if not (due_eval or due_checkpoint or final):
            return
        now = time.perf_counter()
        self.train_seconds += now - self._since
        if due_eval or (final and self.evaluations.last_timesteps < t):
            returns, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=job.eval_episodes,
                                         deterministic=True, return_episode_rewards=True)  # fmt: skip
            self.evaluations.add(t, self.model._n_updates, self.train_seconds, [float(r) for r in returns])
            self.logger.record("eval/mean_reward", float(np.mean(returns)))
            self.logger.record("eval/std_reward", float(np.std(returns)))
            self.logger.dump(t)  # a row per evaluation, with the sparse metrics recorded since the last train()
        if due_checkpoint or final:
            self.checkpoints.save(self.model, {"timesteps": t, "train_seconds": self.train_seconds})
            self.last_checkpoint = t
        self._status()
        self._since = time.perf_counter()

    def _status(self) -> None:
        write_json(self.folder / "status.json", {"timesteps": self.num_timesteps, "time": time.time()})


def _claim(folder: Path, job: Job) -> None:
    """Record the job in its folder, or check that the folder holds this same job (budget may grow)."""
    known = read_json(folder / "job.json")
    if known is not None and Job.from_dict(known).identity() != job.identity():
        raise ValueError(f"{folder} holds a different job ({known}); use another results folder")
    write_json(folder / "job.json", job.to_dict())


def _train(job: Job, folder: Path) -> dict[str, Any]:
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS

    overrides = _zoo_overrides(job)
    manager = ExperimentManager(
        argparse.Namespace(), job.algo, job.env, str(folder / "zoo"), n_timesteps=job.steps,
        hyperparams=overrides, config=str(job.config_path), eval_freq=-1, seed=job.seed,
        verbose=0, device=job.device,
    )  # fmt: skip
    model, _ = manager.setup_experiment()
    if not (folder / "config.yml").is_file():
        shutil.copy(Path(manager.params_path) / "config.yml", folder / "config.yml")
    checkpoints = Checkpoints(folder / "checkpoints")
    state: dict[str, Any] = {}
    if checkpoints.latest() is not None:
        model, state = checkpoints.restore(ALGOS[job.algo], model.get_env(), job.device, overrides.get("buffer_size"))
    elif not (folder / "connectivity_start.json").is_file():
        write_json(folder / "connectivity_start.json", {"features": input_connectivity(model)})
    start = model.num_timesteps
    model.set_logger(configure(str(folder / "logs" / f"{start:010d}"), ["csv", "tensorboard"]))
    for callback in manager.callbacks:  # the file's callbacks follow the job's denormal setting
        if isinstance(getattr(callback, "denormal", None), DenormalScope):
            callback.denormal.enabled = job.flush_denormal
    evaluations = Evaluations(folder / "evaluations.csv", until=start)
    sweep = SweepCallback(job, folder, manager.create_envs(1, eval_env=True, no_log=True), evaluations, state)
    if job.steps > start:
        model.learn(job.steps - start, callback=[*manager.callbacks, sweep], reset_num_timesteps=start == 0)
    model.save(folder / "final_model.zip")
    done = {
        "timesteps": model.num_timesteps,
        "n_updates": int(model._n_updates),
        "train_seconds": sweep.train_seconds,
        "connectivity_end": input_connectivity(model),
        **final_summary(model),
    }
    write_json(folder / "done.json", done)
    model.get_env().close()
    return done


def run_job(job_data: dict[str, Any], results: str) -> dict[str, Any]:
    """Run (or resume, or skip) one job; return its compact result files for the driver.

    :param job_data: the job as :meth:`Job.to_dict`.
    :param results: the sweep's results folder.
    :return: ``{"name": ..., "done": done.json, "files": {relative path: bytes}}``.
    """
    job = Job.from_dict(job_data)
    folder = Path(results) / job.name
    folder.mkdir(parents=True, exist_ok=True)
    _claim(folder, job)
    done = read_json(folder / "done.json")
    if done is None or done["timesteps"] < job.steps:
        torch.set_num_threads(1)  # parallel jobs: one thread each (two collapse under contention)
        with open(folder / "job.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            with flush_denormal(job.flush_denormal):
                done = _train(job, folder)
    return {"name": job.name, "done": done, "files": compact_files(folder)}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write a job's returned compact files into its folder (a driver without a shared filesystem)."""
    for relative, data in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            write_atomic(path, data)
