"""Per-update time of models late in training, with and without flushing denormals, interleaved.

    python -m sb3_sparse.sweep benchmarks/denormal_grid.yml --results RESULTS --workers 2   # the models
    python benchmarks/bench_denormal.py RESULTS --rounds 20 --chunk 100

For every job folder of RESULTS (TD3 models trained by the sweep, here with denormals kept),
loads its last checkpoint (model, optimizer state, replay buffer) twice: one copy keeps
training with IEEE denormals, the other with ``torch.set_flush_denormal(True)``. Rounds of
``--chunk`` gradient updates alternate between all copies in a rotating order, one torch thread.
Prints where the denormals are (weights, target weights, Adam moments) and the median time
per update of each copy, with the quartiles of the per-round ratio unflushed / flushed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.logger import configure

import sb3_sparse  # noqa: F401 - registers the sparse policies for loading

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32


def denormal_count(tensor: torch.Tensor) -> int:
    return int(((tensor != 0) & (tensor.abs() < TINY)).sum())


def where(model) -> dict[str, tuple[int, int]]:
    """Denormal entries and sizes by group: each network's weights, Adam's first and second moments."""
    groups: dict[str, tuple[int, int]] = {}

    def add(name: str, tensor: torch.Tensor) -> None:
        count, size = groups.get(name, (0, 0))
        groups[name] = (count + denormal_count(tensor), size + tensor.numel())

    for name, param in model.policy.named_parameters():
        add(name.split(".")[0] + " parameters", param.detach())
    for net in ("actor", "critic"):
        for state in getattr(model.policy, net).optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                add(f"{net} Adam {key}", state[key])
    return groups


def load(folder: Path):
    from rl_zoo3.utils import ALGOS

    job = json.loads((folder / "job.json").read_text())
    latest = json.loads((folder / "checkpoints" / "latest.json").read_text())
    checkpoint = folder / "checkpoints" / latest["folder"]
    model = ALGOS[job["algo"]].load(checkpoint / "model.zip", device="cpu")
    model.load_replay_buffer(checkpoint / "replay_buffer.pkl")
    model.set_logger(configure(None, []))
    model._current_progress_remaining = 1.0 - latest["timesteps"] / job["steps"]
    controller = getattr(model.policy, "sparse_controller", None)
    if controller is not None:  # evolve on schedule, as under the callback
        controller.driven = True
        controller.sync(model._n_updates, 1.0 - model._current_progress_remaining)
    return f"{job['method']} seed {job['seed']}", model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(False)
    folders = sorted(p for p in Path(args.results).iterdir() if (p / "checkpoints" / "latest.json").is_file())
    copies = {}
    for folder in folders:
        for flush in (False, True):
            method, model = load(folder)
            copies[(method, flush)] = model
    print("| model | group | denormal entries | of | share |")
    print("|---|---|---|---|---|")
    for (method, flush), model in copies.items():
        if not flush:
            for group, (count, size) in where(model).items():
                print(f"| {method} | {group} | {count:,} | {size:,} | {100 * count / size:.2f} % |")
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in copies}
    keys = list(copies)
    for r in range(args.rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            model = copies[key]
            torch.set_flush_denormal(key[1])
            start = time.perf_counter()
            model.train(gradient_steps=args.chunk, batch_size=model.batch_size)
            times[key].append((time.perf_counter() - start) / args.chunk)
            torch.set_flush_denormal(False)
    print(f"\n{args.rounds} rounds of {args.chunk} updates, batch {copies[keys[0]].batch_size}, one thread")
    print("| model | ms per update, denormals kept | ms per update, flushed | kept / flushed (quartiles) |")
    print("|---|---|---|---|")
    for method in dict.fromkeys(m for m, _ in keys):
        kept, flushed = np.array(times[(method, False)]), np.array(times[(method, True)])
        q1, median, q3 = np.percentile(kept / flushed, [25, 50, 75])
        print(f"| {method} | {1000 * statistics.median(kept):.2f} | {1000 * statistics.median(flushed):.2f} "
              f"| {median:.2f} ({q1:.2f}-{q3:.2f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
