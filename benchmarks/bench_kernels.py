"""Time one sparse linear layer (sb3_sparse.core.sparse_ops) against a dense nn.Linear, interleaved.

    python benchmarks/bench_kernels.py                    # widths 256 and 1024, the plot
    python benchmarks/bench_kernels.py --break-even       # densities x layer shapes of SB3 MLPs
    python benchmarks/bench_kernels.py --crossover        # which forward kernel from how many rows

One process, one torch thread. Each round times the dense layer and the sparse one back to back,
in an order that alternates between rounds, so that machine noise hits both alike; a sample is
the mean of enough calls to last about ``--sample-ms``. The report gives, per case, the median
time of each and, as the main figure, the median over rounds of dense time / sparse time (the
speedup) with its quartiles, and the ratio of the fastest samples (``speedup_of_fastest``): on a
loaded machine the better estimate of what each costs when it has a core. Two measures: forward
+ backward (gradients for x, weight, bias) at batch 256, and forward without autograd at batch 1
(SB3's ``predict``), each layer with the layout of its inputs and gradients inside a network
of its kind (row-major for ``nn.Linear``, feature-major for the sparse layer). Two sparse
paths: ``kernel`` forces the sparse kernels at every density; ``auto`` is what
``sparse_linear`` chooses (see ``SparseIndex``: dense where ``sparse_kernels_pay`` says no; one
row without autograd: the matrix-vector product). The kernels are the compiled ones where they
build (``sb3_sparse.core.native``), else PyTorch's; the output says which.

The default run writes ``kernels.json`` and ``kernels.png`` (speedup vs sparsity, one line per
width) to ``--out``; ``--break-even`` writes ``kernels_break_even.json``, ``--crossover``
``kernels_crossover.json``; ``--replot`` redraws ``kernels.png`` from ``kernels.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sb3_sparse.core import sparse_ops
from sb3_sparse.core.sparse_ops import SparseIndex, sparse_linear

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
WIDTHS = (256, 1024)
# Layer shapes (out, in) of SB3 MLPs: HalfCheetah's actor input (17) and critic input (17 + 6),
# hidden layers, the action (6) and Q-value (1) outputs, wide networks, and sizes in between.
BREAK_EVEN_SHAPES = ((256, 17), (256, 23), (256, 256), (6, 256), (1, 256), (1024, 1024), (1024, 17), (256, 64), (256, 128))
BREAK_EVEN_DENSITIES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
CROSSOVER_ROWS = (1, 8, 16, 32, 64, 128, 256)


def calls_per_sample(fn: Callable[[], None], sample_s: float) -> int:
    """How many calls of ``fn`` last about ``sample_s``."""
    fn()
    start = time.perf_counter()
    fn()
    return max(1, math.ceil(sample_s / max(time.perf_counter() - start, 1e-7)))


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, sample_s: float) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per round, the order alternating by round."""
    reps = {name: calls_per_sample(fn, sample_s) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, n = fns[name], reps[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - start) / n)
    return times


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    q1, med, q3 = statistics.quantiles(samples, n=4)
    return q1, med, q3


def layer_case(shape: tuple[int, int], density: float, seed: int = 0) -> dict[str, Callable[[], None]]:
    """The timed calls of one layer: dense nn.Linear and the sparse layer on both paths, both measures."""
    out, inp = shape
    gen = torch.Generator().manual_seed(seed)
    nnz = max(1, round(out * inp * density))
    positions = torch.randperm(out * inp, generator=gen)[:nnz].sort().values.to(torch.int32)
    dense = torch.nn.Linear(inp, out)
    values = torch.nn.Parameter(torch.randn(nnz, generator=gen) / math.sqrt(inp * density))
    bias = torch.nn.Parameter(torch.zeros(out))
    indices = {"kernel": SparseIndex(positions, shape, path="sparse"), "auto": SparseIndex(positions, shape)}
    # Each layer gets the layout it sees inside its own kind of network: a dense network's
    # activations and gradients are row-major (batch, features); a sparse network's are
    # feature-major, the transposed views of (features, batch) tensors (see sparse_ops.as_output).
    x = torch.randn(256, inp, generator=gen, requires_grad=True)
    x_t = x.detach().T.contiguous().T.requires_grad_()
    grad_y = torch.randn(256, out, generator=gen)
    grad_y_t = grad_y.T.contiguous().T
    x1 = torch.randn(1, inp, generator=gen)

    def train_step(forward: Callable[[torch.Tensor], torch.Tensor], params: list[torch.Tensor]) -> Callable[[], None]:
        if params[0] is dense.weight:
            return lambda: torch.autograd.grad(forward(x), [x, *params], grad_y)
        return lambda: torch.autograd.grad(forward(x_t), [x_t, *params], grad_y_t)

    def act(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad():
                forward(x1)

        return call

    calls = {"train/dense": train_step(dense, [dense.weight, dense.bias]), "act/dense": act(dense)}
    for path, index in indices.items():
        layer = lambda inputs, index=index: sparse_linear(inputs, values, index, bias)  # noqa: E731
        calls[f"train/{path}"] = train_step(layer, [values, bias])
        calls[f"act/{path}"] = act(layer)
    return calls


def summarise(times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Each ``group/variant`` against its group's first variant (the reference): times and speedups."""
    result: dict[str, dict[str, float]] = {}
    references: dict[str, list[float]] = {}
    for name, samples in times.items():
        group = name.split("/")[0]
        if group not in references:
            references[group] = samples
            continue
        reference = references[group]
        q1, med, q3 = quartiles([r / s for r, s in zip(reference, samples, strict=True)])
        result[name] = {
            "reference_us": statistics.median(reference) * 1e6,
            "us": statistics.median(samples) * 1e6,
            "speedup": med,
            "speedup_q1": q1,
            "speedup_q3": q3,
            "speedup_of_fastest": min(reference) / min(samples),
        }
    return result


def crossover_case(shape: tuple[int, int], density: float, rows: int) -> dict[str, Callable[[], None]]:
    """The forward product ``W @ x.T`` with MKL's kernel (the reference) and PyTorch's vectorised one."""
    out, inp = shape
    nnz = max(1, round(out * inp * density))
    positions = torch.randperm(out * inp, generator=torch.Generator().manual_seed(0))[:nnz].sort().values
    csr = SparseIndex(positions.to(torch.int32), shape, path="sparse").csr(torch.randn(nnz))
    x_t = torch.randn(inp, rows)
    return {"forward/mkl": lambda: torch.sparse.mm(csr, x_t), "forward/vectorised": lambda: torch.sparse.mm(csr, x_t, "sum")}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    titles = {"train": "forward + backward, batch 256", "act": "forward, batch 1 (predict)"}
    for ax, measure_name in zip(axes, ("train", "act"), strict=True):
        for width, color in zip(WIDTHS, ("tab:blue", "tab:orange"), strict=True):
            rows = [r for r in results if r["width"] == width]
            xs = [100 * r["sparsity"] for r in rows]
            # One row without autograd takes the CSR matrix-vector product on both paths.
            variants = (("kernel", "-o"), ("auto", ":s")) if measure_name == "train" else (("kernel", "-o"),)
            for variant, style in variants:
                stats = [r[f"{measure_name}/{variant}"] for r in rows]
                ys = [s["speedup"] for s in stats]
                err = [[y - s["speedup_q1"] for y, s in zip(ys, stats, strict=True)]]
                err.append([s["speedup_q3"] - y for y, s in zip(ys, stats, strict=True)])
                labels = {"kernel": "sparse kernels", "auto": "auto (as sparse_linear chooses)"}
                label = f"{width}x{width}, {labels[variant]}"
                ax.errorbar(xs, ys, yerr=err, fmt=style, color=color, label=label, capsize=2, markersize=4)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("sparsity (%)")
        ax.set_title(titles[measure_name])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("speedup vs dense nn.Linear (median, quartiles)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> dict[str, object]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout
    return {
        "commit": commit.strip(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "kernels": sparse_ops.kernel_set(),
        "cost_model": sparse_ops.COST_MODELS[sparse_ops.kernel_set()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernels"))
    parser.add_argument("--rounds", type=int, default=30, help="interleaved samples per case (default 30)")
    parser.add_argument("--sample-ms", type=float, default=2.0, help="duration of one sample (default 2 ms)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--break-even", action="store_true", help="densities x SB3 layer shapes instead of the plot grid")
    mode.add_argument("--crossover", action="store_true", help="MKL's vs the vectorised forward product by batch size")
    mode.add_argument("--replot", action="store_true", help="only redraw kernels.png from --out/kernels.json")
    args = parser.parse_args()
    if args.rounds < 4:
        parser.error(f"--rounds must be at least 4 (quartiles), got {args.rounds}")
    if args.replot:
        plot(json.loads((args.out / "kernels.json").read_text())["results"], args.out / "kernels.png")
        return
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.crossover:
        cases = [((w, w), 0.1, rows) for w in WIDTHS for rows in CROSSOVER_ROWS]
        name = "kernels_crossover.json"
    elif args.break_even:
        cases = [(shape, d, 256) for shape in BREAK_EVEN_SHAPES for d in BREAK_EVEN_DENSITIES]
        name = "kernels_break_even.json"
    else:
        cases = [((w, w), round(1 - s, 4), 256) for w in WIDTHS for s in SPARSITIES]
        name = "kernels.json"
    print(
        f"{'shape':>10} {'sparsity':>8} {'rows':>4} | {'measure':>18} {'ref us':>9} {'us':>9} {'speedup':>7} (q1-q3) fastest"
    )
    results = []
    for shape, density, rows in cases:
        calls = crossover_case(shape, density, rows) if args.crossover else layer_case(shape, density)
        stats = summarise(interleaved(calls, args.rounds, args.sample_ms / 1e3))
        for key, s in stats.items():
            quart = f"({s['speedup_q1']:.2f}-{s['speedup_q3']:.2f})"
            case = f"{shape[0]}x{shape[1]:<5} {1 - density:8.2f} {rows:4d}"
            speedups = f"{s['speedup']:7.2f} {quart} {s['speedup_of_fastest']:.2f}"
            print(f"{case:>10} | {key:>18} {s['reference_us']:9.1f} {s['us']:9.1f} {speedups}", flush=True)
        results.append({"shape": list(shape), "width": shape[0], "sparsity": round(1 - density, 4), "rows": rows, **stats})
    report = {
        "command": "python benchmarks/bench_kernels.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "results": results,
    }
    (args.out / name).write_text(json.dumps(report, indent=1))
    if name == "kernels.json":
        plot(results, args.out / "kernels.png")
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
