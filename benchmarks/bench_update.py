"""Time one gradient update of dense SB3 TD3 against each sparse method, interleaved in one process.

    python benchmarks/bench_update.py --env HalfCheetah-v5 --updates 3000

Every variant trains on a copy of the same replay buffer. Rounds of ``--chunk`` updates
alternate between variants, in a rotating order, so that machine noise hits them alike. The
report gives each variant's median time per update and, as the main figure, the median over
rounds of its time divided by stock SB3 TD3's time in the same round (Adam, as SB3 builds it),
with the quartiles of that ratio: on a shared VM the spread is part of the result. Topology
updates (every 1000 updates, as in the papers) and target pruning fall inside the timed
updates. With ``--fused`` each variant also runs with PyTorch's fused Adam. With
``--breakdown`` the controller's hooks are timed too (the timers add a little overhead).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from stable_baselines3 import TD3
from stable_baselines3.common.logger import configure

import sb3_sparse  # noqa: F401  (registers "SparseMlpPolicy")
from sb3_sparse.core import controller as ctl
from sb3_sparse.core import topology

VARIANTS = {
    "dense": ("MlpPolicy", {}),
    "static": ("SparseMlpPolicy", {"preset": "static", "lambdas": (7, 64)}),
    "ds-td3 (SET)": ("SparseMlpPolicy", {"preset": "ds-td3", "lambdas": (7, 64)}),
    "ds-td3, online_mask": ("SparseMlpPolicy", {"preset": "ds-td3", "lambdas": (7, 64), "target_sparsity": "online_mask"}),
    "tows 90%": ("SparseMlpPolicy", {"preset": "tows", "sparsity": 0.9, "activation_fn": torch.nn.ReLU}),
    "tows 90%, online_mask": (
        "SparseMlpPolicy",
        {"preset": "tows", "sparsity": 0.9, "activation_fn": torch.nn.ReLU, "target_sparsity": "online_mask"},
    ),
}


def build(env_id: str, policy: str, kwargs: dict, fused: bool, buffer) -> TD3:
    policy_kwargs = {"net_arch": [256, 256], **kwargs}
    if fused:
        policy_kwargs["optimizer_kwargs"] = {"fused": True}
    model = TD3(policy, env_id, batch_size=100, learning_rate=1e-3, seed=0, policy_kwargs=policy_kwargs)
    model.set_logger(configure(None, []))
    model.replay_buffer = copy.deepcopy(buffer)
    controller = getattr(model.policy, "sparse_controller", None)
    if controller is not None:
        controller.driven = True  # what SparseTrainingCallback does at training start
    return model


def time_hooks(current: list[str]) -> dict[str, dict[str, float]]:
    """Wrap the controller's hooks and the target pruning with timers, per running variant."""
    spent: dict[str, dict[str, float]] = {}

    def timed(function, part):
        def wrapper(*args):
            start = time.perf_counter()
            function(*args)
            by_part = spent.setdefault(current[0], {})
            by_part[part] = by_part.get(part, 0.0) + time.perf_counter() - start

        return wrapper

    hooks = {"pre-step hook": "_before_step", "post-step hook": "_after_step", "target rule": "_refresh_target"}
    for part, name in hooks.items():
        setattr(ctl.SparseController, name, timed(getattr(ctl.SparseController, name), part))
    topology.prune_to_count_ = timed(topology.prune_to_count_, "  of which magnitude pruning")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--updates", type=int, default=3000, help="timed updates per variant")
    parser.add_argument("--chunk", type=int, default=250, help="updates per interleaved round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fused", action="store_true", help="also time every variant with fused Adam")
    parser.add_argument("--breakdown", action="store_true", help="also time the controller's hooks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    seed_model = TD3("MlpPolicy", args.env, learning_starts=5000, seed=0)
    seed_model.learn(5000)  # uniform random actions fill the buffer
    variants = {name: (policy, kwargs, False) for name, (policy, kwargs) in VARIANTS.items()}
    if args.fused:
        variants |= {f"{name} +fused": (policy, kwargs, True) for name, (policy, kwargs) in VARIANTS.items()}
    models = {name: build(args.env, p, k, f, seed_model.replay_buffer) for name, (p, k, f) in variants.items()}
    for model in models.values():
        model.train(gradient_steps=20, batch_size=100)  # warm-up
    current = [""]
    spent = time_hooks(current) if args.breakdown else {}
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for round_ in range(args.updates // args.chunk):
        # Rotate the order every round so that no variant always runs first (or after the same one).
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            model, current[0] = models[name], name
            start = time.perf_counter()
            model.train(gradient_steps=args.chunk, batch_size=100)
            times[name].append((time.perf_counter() - start) / args.chunk)
    print(
        f"{args.env}, batch 100, net 256-256, {args.updates} updates/variant in rounds of {args.chunk}, "
        f"{args.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    header = f"{'variant':<32}{'ms/update':>10}{'vs dense':>10}{'quartiles':>15}{'vs dense, same Adam':>21}"
    print(f"{header}{'topology updates':>18}")

    def paired(name: str, reference: str) -> list[float]:
        return statistics.quantiles([t / d for t, d in zip(times[name], times[reference], strict=True)], n=4)

    for name, model in models.items():
        q1, median, q3 = paired(name, "dense")
        same_adam = paired(name, "dense +fused" if name.endswith("+fused") else "dense")[1]
        controller = getattr(model.policy, "sparse_controller", None)
        n_topo = controller.n_topology_updates if controller is not None else "-"
        print(
            f"{name:<32}{statistics.median(times[name]) * 1e3:>10.3f}{median:>10.3f}"
            f"{f'{q1:.3f}-{q3:.3f}':>15}{same_adam:>21.3f}{n_topo!s:>18}"
        )

    if spent:
        print("\nus per update spent in the controller's hooks")
        for name, by_part in spent.items():
            print(f"{name:<32}" + ", ".join(f"{part.strip()} {t / args.updates * 1e6:.0f}" for part, t in by_part.items()))


if __name__ == "__main__":
    main()
