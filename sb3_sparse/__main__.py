"""Command line: ``python -m sb3_sparse demo``, ``info model.zip`` and ``hyperparams [NAME]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


class BadInput(Exception):
    """An input the command cannot use: reported as one line on stderr, exit status 2."""


def _format_summary(info: dict) -> str:
    lines = [
        f"method: {info['method']}",
        f"sparsity: {info['sparsity']:.4f}  active weights: {info['active_weights']:,} of {info['dense_weights']:,} dense",
        f"topology updates: {info['topology_updates']}  updates since the last one: {info['updates_since_topology_change']}",
    ]
    for name, net in info["networks"].items():
        active, dense = net["active_weights"], net["dense_weights"]
        lines.append(f"  {name}: sparsity {net['sparsity']:.4f}, {active:,} / {dense:,} weights")
        for layer_name, layer in net["layers"].items():
            counts = f"{layer['active_weights']:>7,} / {layer['dense_weights']:>7,}"
            lines.append(f"    {layer_name:<12} sparsity {layer['sparsity']:.4f}  {counts}")
    if info.get("dense_train_flops"):  # none before the first gradient update
        ratio = info["train_flops"] / info["dense_train_flops"]
        lines.append(
            f"training FLOPs for {info['n_updates']:,} updates: {info['train_flops']:.3e} "
            f"({ratio:.3f}x dense {info['dense_train_flops']:.3e})"
        )
    actor = info["networks"].get("actor") or next(iter(info["networks"].values()))
    ratio = actor["forward_flops"] / actor["dense_forward_flops"]
    lines.append(f"inference FLOPs per action: {actor['forward_flops']:,} ({ratio:.3f}x dense)")
    return "\n".join(lines)


def _load_data(path: str) -> dict:
    """The saved model's data, or :class:`BadInput` naming the path and what is wrong with it."""
    from stable_baselines3.common.save_util import load_from_zip_file

    if not Path(path).is_file():  # SB3 would also try PATH.zip and name that in its error
        raise BadInput(f"{path}: no such file; PATH must be a model .zip saved by Stable-Baselines3")
    try:
        data, _, _ = load_from_zip_file(path, load_data=True)
    except Exception as error:  # a corrupt or foreign zip fails in many ways (BadZipFile, KeyError, JSON, pickle)
        reason = str(error).removeprefix("Error: ")
        raise BadInput(f"{path}: not a model saved by Stable-Baselines3 ({reason})") from None
    if not data or "policy_class" not in data:
        raise BadInput(f"{path}: not a model saved by Stable-Baselines3 (no policy class in its data)")
    return data


def info(path: str) -> None:
    """Print what a saved sparse agent is made of.

    :param path: the model's zip file.
    :raises BadInput: a missing, corrupt or dense model file.
    """
    import sb3_sparse
    from sb3_sparse.hub_utils import algorithm_of
    from sb3_sparse.summary import gradient_updates

    data = _load_data(path)
    try:
        algo = algorithm_of(data)
    except TypeError as error:
        raise BadInput(f"{path}: {error}; info describes models trained with 'SparseMlpPolicy'") from None
    # A one-transition replay buffer: inspecting needs none (an Atari buffer would take gigabytes).
    overrides = {"buffer_size": 1} if "buffer_size" in data else {}
    if data.get("optimize_memory_usage"):
        overrides["optimize_memory_usage"] = False
    model = algo.load(path, device="cpu", **overrides)
    n_updates = gradient_updates(model)  # PPO's _n_updates counts epochs
    summary = sb3_sparse.summary(model, n_updates=n_updates)
    summary["n_updates"] = n_updates
    print(f"{path}: {algo.__name__} with {type(model.policy).__name__}, {n_updates:,} gradient updates")
    print(_format_summary(summary))


def demo(steps: int, out: str, seed: int, flush_denormal: bool = True) -> None:
    """Train a sparse TD3 agent on Pendulum-v1 and report what it cost and how it does."""
    import torch
    from stable_baselines3 import TD3
    from stable_baselines3.common.evaluation import evaluate_policy

    import sb3_sparse

    torch.set_num_threads(1)
    model = TD3(
        "SparseMlpPolicy",
        "Pendulum-v1",
        learning_starts=1000,
        seed=seed,
        policy_kwargs=dict(preset="tows", sparsity=0.8, net_arch=[256, 256]),
    )
    before, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=5)
    start = time.time()
    callback = sb3_sparse.SparseTrainingCallback(flush_denormal=flush_denormal)
    model.learn(steps, callback=callback, progress_bar=sys.stdout.isatty())
    elapsed = time.time() - start
    mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10)
    out = out if out.endswith(".zip") else f"{out}.zip"  # the name SB3's save writes
    model.save(out)
    summary = sb3_sparse.summary(model, n_updates=model._n_updates)
    summary["n_updates"] = model._n_updates
    print(_format_summary(summary))
    print(f"trained {steps:,} steps in {elapsed:.0f} s; evaluation return {mean:.1f} +/- {std:.1f} (untrained: {before:.1f})")
    print(f"saved to {out} (inspect with: python -m sb3_sparse info {out})")
    if not np.isfinite(mean):
        raise SystemExit(1)


def hyperparams(name: str | None) -> None:
    """Print the installed path of a hyperparameter file (for ``rl_zoo3.train -conf``), or of all of them."""
    from sb3_sparse.paper import hyperparams_file, hyperparams_names

    try:
        names = [name] if name else hyperparams_names()
        print("\n".join(str(hyperparams_file(n)) for n in names))
    except ValueError as error:
        raise SystemExit(str(error)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_sparse")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="describe a saved sparse agent")
    p_info.add_argument("path")
    p_demo = sub.add_parser("demo", help="train a sparse TD3 agent on Pendulum-v1")
    p_demo.add_argument("--steps", type=int, default=15_000)
    p_demo.add_argument("--out", default="sparse_td3_pendulum")
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument(
        "--flush-denormal", action=argparse.BooleanOptionalAction, default=True,
        help="flush denormal floats to zero while training (default: on; see docs/benchmarks.md)",
    )  # fmt: skip
    p_hyper = sub.add_parser("hyperparams", help="print the path of a shipped hyperparameter file (all without NAME)")
    p_hyper.add_argument("name", nargs="?", help="a file name (ds_td3) or a preset (ds-td3)")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            info(args.path)
        elif args.command == "hyperparams":
            hyperparams(args.name)
        else:
            demo(args.steps, args.out, args.seed, args.flush_denormal)
    except BadInput as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
