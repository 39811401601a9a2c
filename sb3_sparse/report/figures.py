"""The report's figures: learning curves, final return vs sparsity, evolved input connectivity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .results import Run, label

BOOTSTRAP_REPS = 2000


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, ax, path: Path) -> None:
    """Grid, legend, tight layout, write the PNG and free the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mean_ci(curves: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and its 95% percentile-bootstrap interval at each point."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(curves), size=(BOOTSTRAP_REPS, len(curves)))
    means = curves[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return curves.mean(axis=0), low, high


def learning_curves(algo: str, env: str, by_method: dict[str, list[Run]], path: Path) -> None:
    """Mean evaluation return per method with its 95% bootstrap band over runs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, runs in by_method.items():
        points = min(len(r.timesteps) for r in runs)
        curves = np.stack([r.returns[:points] for r in runs])
        mean, low, high = mean_ci(curves)
        steps = runs[0].timesteps[:points]
        ax.plot(steps, mean, label=f"{label(method, algo)} ({len(runs)} runs)")
        ax.fill_between(steps, low, high, alpha=0.2)
    ax.set(xlabel="environment steps", ylabel="evaluation return", title=f"{algo.upper()} on {env}: mean and 95% bootstrap CI")
    _save(plt, fig, ax, path)


def return_vs_sparsity(algo: str, env: str, by_method: dict[str, list[Run]], path: Path) -> None:
    """Final return (mean ± std over runs) against the realised sparsity of each method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, runs in by_method.items():
        finals = [r.final_return() for r in runs]
        sparsity = float(np.mean([r.done["sparsity"] for r in runs]))
        ax.errorbar([100 * sparsity], [np.mean(finals)], yerr=[np.std(finals)], fmt="o", capsize=4,
                    label=label(method, algo))  # fmt: skip
    ax.set(xlabel="sparsity of actor + critics (%)", ylabel="final return (last 10 evaluations)",
           title=f"{algo.upper()} on {env}: final return vs sparsity")  # fmt: skip
    _save(plt, fig, ax, path)


def input_connectivity(algo: str, env: str, by_method: dict[str, list[Run]], path: Path) -> bool:
    """Active connections per observation feature in the actor's first layer, start vs end of training.

    One panel per sparse method whose first layer is sparse (mean over runs). Returns ``False``
    (and draws nothing) when no method has a sparse first layer.
    """
    panels = {}
    for method, runs in by_method.items():
        with_start = [r for r in runs if r.connectivity_start is not None]
        if not with_start:
            continue
        start = np.mean([r.connectivity_start for r in with_start], axis=0)
        end = np.mean([r.done["connectivity_end"] for r in with_start], axis=0)
        if len(set(start)) > 1 or not np.array_equal(start, end):  # a dense first layer has nothing to show
            panels[method] = (start, end)
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for ax, (method, (start, end)) in zip(axes[:, 0], panels.items(), strict=True):
        features = np.arange(len(start))
        ax.bar(features - 0.2, start, width=0.4, label="start")
        ax.bar(features + 0.2, end, width=0.4, label="end")
        ax.set(title=f"{label(method, algo)}: actor input layer", ylabel="active connections")
        ax.set_xticks(features)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("observation feature")
    fig.suptitle(f"{algo.upper()} on {env}: connections per input feature (mean over runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
