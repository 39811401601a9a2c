"""Final evaluation return of dense vs sparse agents, a few seeds, in parallel worker processes.

    python benchmarks/learning.py --algo td3 --env Pendulum-v1 --steps 10000 --seeds 0 1 --workers 2

Each run trains with SB3's defaults for the algorithm (256-256 networks) and the method's
``policy_kwargs``, then evaluates 10 deterministic episodes. Prints a Markdown table
(mean ± std over seeds of the per-seed mean return, plus training FLOPs vs dense).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

METHODS = {
    "dense": ("MlpPolicy", {}),
    "static 50%": ("SparseMlpPolicy", {"preset": "static", "sparsity": 0.5}),
    "DS (SET) 50%": ("SparseMlpPolicy", {"preset": "set", "sparsity": 0.5}),
    "TowS 90%": ("SparseMlpPolicy", {"preset": "tows", "sparsity": 0.9}),
}


def run(algo: str, env: str, method: str, seed: int, steps: int) -> tuple[str, int, float, float, float]:
    import torch
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.evaluation import evaluate_policy

    import sb3_sparse

    torch.set_num_threads(1)
    policy, kwargs = METHODS[method]
    cls = {"td3": TD3, "sac": SAC}[algo]
    model = cls(policy, env, seed=seed, learning_starts=1000, policy_kwargs={"net_arch": [256, 256], **kwargs})
    callback = sb3_sparse.SparseTrainingCallback() if policy != "MlpPolicy" else None
    start = time.time()
    model.learn(steps, callback=callback)
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=10)
    ratio = 1.0
    if policy != "MlpPolicy":
        info = sb3_sparse.summary(model, n_updates=model._n_updates)
        ratio = info["train_flops"] / info["dense_train_flops"]
    return method, seed, float(mean), ratio, time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="td3", choices=["td3", "sac"])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(args.algo, args.env, m, s, args.steps) for m in METHODS for s in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True)))
    print(f"{args.algo.upper()} on {args.env}, {args.steps} steps, seeds {args.seeds}, 10 evaluation episodes")
    print("| method | return (mean ± std over seeds) | training FLOPs vs dense | minutes per run |")
    print("|---|---|---|---|")
    for method in METHODS:
        rows = [r for r in results if r[0] == method]
        returns = [r[2] for r in rows]
        std = statistics.stdev(returns) if len(returns) > 1 else 0.0
        minutes = statistics.mean(r[4] for r in rows) / 60
        print(f"| {method} | {statistics.mean(returns):.1f} ± {std:.1f} | {rows[0][3]:.2f}x | {minutes:.1f} |")


if __name__ == "__main__":
    main()
