"""End-to-end cost of sparse agents against dense SB3: ``model.learn`` time, memory, zip size.

    python benchmarks/bench_backend.py                        # timing, TD3 and SAC, 256 and 1024 wide
    python benchmarks/bench_backend.py --steps 500 --repeats 5 --algos td3 --widths 256
    python benchmarks/bench_backend.py --memory --zip         # sizes only (not timing-sensitive)

Variants, on HalfCheetah-v5 with ``net_arch`` ``[width, width]``, batch 256, one gradient
update per environment step: ``dense`` (SB3's ``MlpPolicy``, with TowS's LeakyReLU so that only
sparsity differs), ``masked`` TowS (``preset="tows"``) at 90% and 95%, and the same with
``backend="sparse"``; and ``floor``, SB3's ``MlpPolicy`` without hidden layers (almost no
network: SB3's fixed cost per step, which bounds any speedup). A variant this version cannot
build (e.g. no sparse backend yet) is reported as not available, with the error. All variants
use SB3's Adam and run with denormals flushed (the sparse training callback's default, applied
to dense too).

Timing: every model first learns ``--learning-starts`` + ``--warmup`` steps; then ``--repeats``
rounds each time ``model.learn(--steps)`` of every variant, in an order rotated every round,
so that machine noise hits them alike. Reported per variant: the median seconds per step and
the median and quartiles over rounds of dense's time divided by the variant's in the same round
(the speedup). Topology updates (every 1000 updates) fall inside the timed steps.

``--memory``: bytes of parameters, buffers (masks, indices, the controller's counters) and
optimizer state, online and target networks, after the warm-up (Adam's state exists).
``--zip``: bytes of ``model.save`` before any learning (``fresh``) and after the warm-up
(``trained``: optimizer state included). Results go to ``--out`` as JSON.

``--device cuda`` runs the same on a GPU (the sparse backend takes its dense path there, see
docs/backend.md); ``--threads`` still sets the CPU threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from torch import nn

from sb3_sparse import SparseTrainingCallback
from sb3_sparse.core import fused
from sb3_sparse.core.sparse_layer import SparseLinear

ALGOS = {"td3": TD3, "sac": SAC}
TOWS = {"preset": "tows"}
VARIANTS: dict[str, dict[str, Any] | None] = {
    "dense": None,
    "masked 90%": TOWS | {"sparsity": 0.9},
    "masked 95%": TOWS | {"sparsity": 0.95},
    "sparse 90%": TOWS | {"sparsity": 0.9, "backend": "sparse"},
    "sparse 95%": TOWS | {"sparsity": 0.95, "backend": "sparse"},
    # SB3's own cost per step with almost no network (no hidden layers): no sparse agent of the
    # same algorithm and environment can run faster, so dense / floor bounds any speedup.
    "floor": {"net_arch": []},
}


def build(algo: str, width: int, sparse: dict[str, Any] | None, args: argparse.Namespace) -> BaseAlgorithm:
    """One agent; ``sparse`` is its sparse ``policy_kwargs`` (``None``: dense ``MlpPolicy``)."""
    policy_kwargs: dict[str, Any] = {"net_arch": [width, width], "activation_fn": nn.LeakyReLU} | (sparse or {})
    model = ALGOS[algo](
        "SparseMlpPolicy" if sparse and "sparsity" in sparse else "MlpPolicy",
        args.env,
        batch_size=256,
        learning_starts=args.learning_starts,
        buffer_size=args.learning_starts + args.warmup + args.steps * args.repeats + 1,
        seed=0,
        device=args.device,
        policy_kwargs=policy_kwargs,
    )
    model.set_logger(configure(None, []))
    return model


def learn(model: BaseAlgorithm, steps: int) -> None:
    callback = SparseTrainingCallback() if hasattr(model.policy, "sparse_controller") else None
    model.learn(steps, reset_num_timesteps=False, callback=callback)


def build_all(algo: str, width: int, args: argparse.Namespace) -> tuple[dict[str, BaseAlgorithm], dict[str, str]]:
    """The available variants' models, and why the others are not available."""
    models, unavailable = {}, {}
    for name in args.variants:
        try:
            models[name] = build(algo, width, VARIANTS[name], args)
        except (TypeError, ValueError, NotImplementedError) as error:
            unavailable[name] = f"{type(error).__name__}: {error}"
    if "dense" not in models:
        raise RuntimeError(f"the dense reference did not build: {unavailable.get('dense')}")
    return models, unavailable


def time_learn(models: dict[str, BaseAlgorithm], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per step of each model, one value per round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            learn(models[name], args.steps)
            times[name].append((time.perf_counter() - start) / args.steps)
    return times


def time_predict(models: dict[str, BaseAlgorithm], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per batch-1 ``model.predict`` (deterministic, one observation) of each model, one value per round."""
    obs = next(iter(models.values())).observation_space.sample()
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            predict = models[name].predict
            start = time.perf_counter()
            for _ in range(args.steps):
                predict(obs, deterministic=True)
            times[name].append((time.perf_counter() - start) / args.steps)
    return times


def timing_summary(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Median seconds per step; median and quartiles of the per-round speedup over dense."""
    summary = {}
    for name, values in times.items():
        speedups = [d / t for d, t in zip(times["dense"], values, strict=True)]
        q1, median, q3 = statistics.quantiles(speedups, n=4) if len(speedups) > 1 else speedups * 3
        summary[name] = {
            "ms_per_step": statistics.median(values) * 1e3,
            "speedup": median,
            "speedup_q1": q1,
            "speedup_q3": q3,
            "s_per_step_by_round": values,
        }
    return summary


def tensor_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of distinct storages among ``tensors`` (a tensor shared by two modules counts once).

    A storage counts up to the end of the furthest view of it among ``tensors``: the sparse
    kernels' zero pattern values are views of one storage shared by every layer of the process,
    sized for the largest layer built so far (here, possibly another variant's).
    """
    seen: dict[int, int] = {}
    for tensor in tensors:
        end = (tensor.storage_offset() + tensor.numel()) * tensor.element_size()
        key = tensor.untyped_storage().data_ptr()
        seen[key] = max(seen.get(key, 0), end)
    return sum(seen.values())


def memory_bytes(model: BaseAlgorithm) -> dict[str, int]:
    """Bytes held by the policy's parameters, its buffers and its optimizers' state."""
    policy = model.policy
    optimizers = [getattr(policy, name).optimizer for name in ("actor", "critic")]
    state = [v for opt in optimizers for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    parameters, buffers = list(policy.parameters()), list(policy.buffers())
    sizes = {
        "parameters": tensor_bytes(parameters),
        "buffers": tensor_bytes(buffers),
        "optimizer_state": tensor_bytes(state),
    }
    # The sparse kernels' index arrays (CSR column indices, the transpose where a layer
    # backpropagates, ...): what they add beyond the tensors already counted.
    every = parameters + buffers + state + index_tensors(policy)
    sizes["kernel_index"] = tensor_bytes(every) - sum(sizes.values())
    return sizes | {"total": sum(sizes.values())}


def index_tensors(policy: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors held by the kernel indexes (``SparseIndex``) of the sparse layers and of the dense heads that
    fused stacks run on the kernels (one index per head shape, shared), without building any."""
    indexes = []
    for module in policy.modules():
        indexes.append(getattr(module, "_index", None))
        plan = module.__dict__.get("_fused_plan", (None, None))[1] if isinstance(module, fused.FusedSequential) else None
        heads = [layer for layer, _ in plan or () if not isinstance(layer, SparseLinear)]
        indexes += [fused._full_index(*head.weight.shape) for head in heads]
    tensors = []
    for index in filter(None, indexes):
        tensors += [t for t in vars(index).values() if torch.is_tensor(t)]
        tensors += list(index._compressed or ()) + list(index._transpose or ())
        tensors += [zeros.values() for zeros in index._zeros.values()]
    return tensors


def zip_bytes(model: BaseAlgorithm) -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.zip"
        model.save(path)
        return path.stat().st_size


def with_ratios(sizes: dict[str, dict[str, int]], key: str) -> dict[str, dict[str, float]]:
    """Each variant's ``sizes`` plus ``<key>_vs_dense``."""
    return {name: values | {f"{key}_vs_dense": values[key] / sizes["dense"][key]} for name, values in sizes.items()}


def run(algo: str, width: int, args: argparse.Namespace) -> dict[str, Any]:
    models, unavailable = build_all(algo, width, args)
    result: dict[str, Any] = {"unavailable": unavailable}
    if args.zip:
        fresh = {name: zip_bytes(model) for name, model in models.items()}
    for model in models.values():
        learn(model, args.learning_starts + args.warmup)
    if args.zip:
        sizes = {name: {"fresh": fresh[name], "trained": zip_bytes(model)} for name, model in models.items()}
        result["zip_bytes"] = with_ratios(with_ratios(sizes, "fresh"), "trained")
    if args.memory:
        result["memory_bytes"] = with_ratios({name: memory_bytes(model) for name, model in models.items()}, "total")
    if args.timing:
        result["timing"] = timing_summary(time_learn(models, args))
    if args.predict:
        result["predict"] = timing_summary(time_predict(models, args))
    return result


def print_result(label: str, result: dict[str, Any]) -> None:
    print(f"\n{label}")
    for name, reason in result["unavailable"].items():
        print(f"  {name:<12} not available: {reason}")
    for kind in ("timing", "predict"):
        for name, row in result.get(kind, {}).items():
            print(
                f"  {name:<12} {kind:<7} {row['ms_per_step']:8.3f} ms/call  speedup {row['speedup']:.3f} "
                f"(quartiles {row['speedup_q1']:.3f}-{row['speedup_q3']:.3f})"
            )
    for name, row in result.get("memory_bytes", {}).items():
        print(f"  {name:<12} memory {row['total']:>11,} bytes ({row['total_vs_dense']:.3f}x dense)")
    for name, row in result.get("zip_bytes", {}).items():
        print(
            f"  {name:<12} zip fresh {row['fresh']:>11,} ({row['fresh_vs_dense']:.3f}x), "
            f"trained {row['trained']:>11,} ({row['trained_vs_dense']:.3f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--algos", nargs="+", choices=list(ALGOS), default=list(ALGOS))
    parser.add_argument("--widths", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=500, help="timed steps per variant per round")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200, help="untimed steps after learning_starts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="torch device of the models, e.g. cuda (the env stays on the CPU)")
    parser.add_argument("--timing", action="store_true", help="time model.learn (the default without --memory/--zip)")
    parser.add_argument("--memory", action="store_true", help="parameter, buffer and optimizer-state bytes")
    parser.add_argument("--zip", action="store_true", help="bytes of the saved zip")
    parser.add_argument("--predict", action="store_true", help="time batch-1 model.predict (--steps calls per round)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backend"))
    args = parser.parse_args()
    for name in ("steps", "repeats", "learning_starts", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if "dense" not in args.variants:
        parser.error("--variants must include 'dense' (the reference)")
    args.timing = args.timing or not (args.memory or args.zip or args.predict)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    results = {}
    for algo in args.algos:
        for width in args.widths:
            label = f"{algo} {args.env} {width}-{width}"
            results[label] = run(algo, width, args)
            print_result(label, results[label])

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "gpu": torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else None,
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
    }
    kinds = [kind for kind in ("timing", "predict", "memory", "zip") if getattr(args, kind)]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{'_'.join(kinds)}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
