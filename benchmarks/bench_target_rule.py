"""Per-update bookkeeping of each backend: the target rule and the optimizer-step hooks, interleaved.

    python benchmarks/bench_target_rule.py --width 256 --sparsity 0.9 --rounds 10 --chunk 100

Builds TowS-TD3 (magnitude targets) on Pendulum-v1 with two hidden layers of ``--width`` for
each backend from the same seed, fills the buffer, and trains past a first topology update
(update 1000) so the targets are out of sync with the online networks, as they are for much of
each topology interval. Then rounds of ``--chunk`` gradient updates alternate between the models
(one torch thread), and the time inside the plugin's per-update work (the target rule with the
target's ``parameters()``, and the controller's step hooks) is summed per round. Prints the
median time per update of each part and model, with quartiles over rounds. The kernels' time
(forward/backward) is not included: see the kernel and end-to-end benchmarks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from stable_baselines3 import TD3
from stable_baselines3.common.utils import set_random_seed

from sb3_sparse.core.controller import SparseController

PARTS = ("target rule", "step hooks")


class Timer:
    """Wraps a controller's methods and sums the time spent in them, by part."""

    def __init__(self, controller: SparseController) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self._wrap(controller, "_refresh_target", "target rule")
        self._wrap(controller, "_after_step", "step hooks")
        for net in controller.networks.values():  # the target's parameters(), as SB3's update calls it
            if net.target is not None:
                target_parameters = net.target.parameters
                net.target.parameters = self._timed(lambda recurse=True, f=target_parameters: list(f(recurse)), "target rule")

    def _wrap(self, owner: Any, name: str, part: str) -> None:
        setattr(owner, name, self._timed(getattr(owner, name), part))

    def _timed(self, function: Callable, part: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return timed


def build(backend: str, width: int, sparsity: float) -> TD3:
    set_random_seed(0)
    settings = dict(preset="tows", sparsity=sparsity, net_arch=[width, width], backend=backend)
    model = TD3("SparseMlpPolicy", "Pendulum-v1", learning_starts=256, batch_size=256, seed=0, policy_kwargs=settings)
    model.learn(256)
    controller = model.policy.sparse_controller
    controller.driven = True
    controller.sync(model._n_updates, 0.5)
    model.train(gradient_steps=1100, batch_size=256)  # past the topology update at 1000
    assert controller.n_topology_updates == 1
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {backend: build(backend, args.width, args.sparsity) for backend in ("masked", "sparse")}
    timers = {backend: Timer(model.policy.sparse_controller) for backend, model in models.items()}
    per_round: dict[str, dict[str, list[float]]] = {b: {p: [] for p in PARTS} for b in models}
    for round_index in range(args.rounds):
        order = list(models) if round_index % 2 == 0 else list(reversed(models))
        for backend in order:
            timer = timers[backend]
            before = dict(timer.seconds)
            models[backend].train(gradient_steps=args.chunk, batch_size=256)
            for part in PARTS:
                per_round[backend][part].append((timer.seconds[part] - before[part]) / args.chunk * 1e3)
    print(f"TD3 TowS magnitude targets, {args.width}-{args.width}, sparsity {args.sparsity}, one thread; ms per update")
    for backend, parts in per_round.items():
        for part, values in parts.items():
            q1, median, q3 = statistics.quantiles(values, n=4)
            print(f"  {backend:6s} {part:11s} median {median:.3f}  quartiles {q1:.3f}-{q3:.3f}")
    synced = [
        [net._synced(i) for i in range(len(net.target_layers))]
        for net in models["sparse"].policy.sparse_controller.networks.values()
    ]
    print(f"  sparse target layers in sync with their online layers at the end: {synced}")


if __name__ == "__main__":
    main()
