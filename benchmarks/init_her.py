"""Training success of DQN + HER on BitFlipping: dense vs static sparse with init="dense" and init="sparse".

    python benchmarks/init_her.py --steps 3000 --seeds 0 1 2 --sparsities 0.5 0.9 --workers 1

SB3's own HER performance test (``tests/test_her.py::test_performance_her``: DQN,
``BitFlippingEnv(n_bits=10)``, 2 environments, HER with 5 "future" goals, lr 5e-4, batch 32,
target update every 500 steps, SB3's 64-64 network), run for ``--steps`` environment steps as a
new user would: ``"SparseMlpPolicy"`` with ``CombinedExtractor`` and ``method="static"``, the
rest from the DQN default preset (ERK, output layer sparse). ``--steps`` counts environment
steps over both environments, as ``total_timesteps`` does. Besides the two ``init`` settings, a
reference row ``rescaled`` (not a library option) takes init="dense" and multiplies each output
unit's weights by sqrt(fan_in / sparse fan_in), which restores PyTorch's per-unit variance. Prints
a Markdown table of the training success (SB3's ``ep_success_buffer``: the last 100 episodes).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor


def run(init: str | None, sparsity: float, seed: int, steps: int) -> tuple[str | None, float, int, float, float]:
    """Train one agent; ``init=None`` is SB3's dense ``MultiInputPolicy``, ``"rescaled"`` the reference row."""
    import numpy as np
    import torch
    from stable_baselines3 import DQN, HerReplayBuffer
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.envs import BitFlippingEnv
    from stable_baselines3.common.torch_layers import CombinedExtractor

    import sb3_sparse  # noqa: F401  (registers "SparseMlpPolicy")
    from sb3_sparse.core.layers import sparse_layers

    torch.set_num_threads(1)
    env = make_vec_env(lambda: BitFlippingEnv(n_bits=10, continuous=False), n_envs=2)
    if init is None:
        policy, policy_kwargs = "MultiInputPolicy", {}
    else:
        policy = "SparseMlpPolicy"
        layer_init = "dense" if init == "rescaled" else init
        policy_kwargs = dict(features_extractor_class=CombinedExtractor, method="static", sparsity=sparsity, init=layer_init)
    model = DQN(
        policy,
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs=dict(n_sampled_goal=5, goal_selection_strategy="future"),
        learning_rate=5e-4,
        train_freq=1,
        gradient_steps=2,
        learning_starts=100,
        exploration_final_eps=0.02,
        target_update_interval=500,
        seed=seed,
        batch_size=32,
        buffer_size=int(1e5),
        policy_kwargs=policy_kwargs,
    )
    if init == "rescaled":
        with torch.no_grad():
            for _, layer in sparse_layers(model.policy.q_net):
                fan_in = layer.weight_mask.flatten(1).sum(dim=1).clamp(min=1)
                layer.weight.mul_(torch.sqrt(layer.weight[0].numel() / fan_in).view(-1, *[1] * (layer.weight.dim() - 1)))
            model.policy.q_net_target.load_state_dict(model.policy.q_net.state_dict())
    start = time.time()
    model.learn(total_timesteps=steps)
    return init, sparsity, seed, float(np.mean(model.ep_success_buffer)), time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rescaled", type=float, nargs="*", default=[0.5], help="sparsities of the reference row")
    args = parser.parse_args()
    configs = [(None, 0.0)] + [(init, s) for s in args.sparsities for init in ("dense", "sparse")]
    configs += [("rescaled", s) for s in args.rescaled]
    jobs = [(init, s, seed, args.steps) for init, s in configs for seed in args.seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, *zip(*jobs, strict=True)))
    print(f"DQN + HER on BitFlippingEnv(n_bits=10), 2 envs, {args.steps} steps, seeds {args.seeds}")
    print("| network | init | training success per seed | mean | seconds per run |")
    print("|---|---|---|---|---|")
    for init, sparsity in configs:
        rows = [r for r in results if r[0] == init and r[1] == sparsity]
        name = "dense (MultiInputPolicy)" if init is None else f"static sparse {sparsity:.0%}"
        init = "rescaled (reference)" if init == "rescaled" else init
        per_seed = ", ".join(f"{r[3]:.2f}" for r in rows)
        mean = statistics.mean(r[3] for r in rows)
        seconds = statistics.mean(r[4] for r in rows)
        print(f"| {name} | {init or '-'} | {per_seed} | {mean:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
