"""Paper-style tables: final return, learning speed, rliable intervals, costs, published numbers."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .results import Run, label

BOOTSTRAP_REPS = 2000
SEED = 0  # bootstrap random state: the report is reproducible

# Published final returns (mean of the last 10 evaluations), each with its source and budget.
# Sokar et al. 2022, Table 1: MuJoCo -v3, 1M steps, 5 runs (mean ± std).
_SOKAR = "Sokar et al. 2022, Table 1 (-v3, 1M steps, 5 runs)"
# Grooten et al., TowS poster, main table: returns only; budget and number of runs not stated in the poster.
_TOWS = "Grooten et al., TowS poster table (budget and runs not stated)"
PUBLISHED: dict[tuple[str, str, str], list[tuple[float, float | None, str]]] = {}
for _env, _dense, _static, _ds in [
    ("HalfCheetah", (11153.48, 473.29), (10583.84, 307.03), (11459.88, 482.55)),
    ("Walker2d", (4042.36, 576.57), (3951.01, 443.78), (4870.57, 525.33)),
    ("Hopper", (2184.7, 1224.14), (3570.88, 43.71), (3587.17, 70.62)),
    ("Ant", (4287.69, 1080.88), (4132.18, 966.91), (4714.79, 691.02)),
    ("Humanoid", (3515.72, 1369.65), (5173.90, 24.90), (5230.45, 166.66)),
]:
    for _method, (_mean, _std) in (("dense", _dense), ("static", _static), ("ds", _ds)):
        PUBLISHED.setdefault(("td3", _env, _method), []).append((_mean, _std, _SOKAR))
_TOWS_ENVS = ("Humanoid", "HalfCheetah", "Walker2d", "Ant", "Hopper")
for _algo, _method, _returns in [
    ("sac", "tows90", (5582.7, 8553.8, 3017.3, 3913.2, 3216.4)),
    ("td3", "tows90", (5083.2, 7813.7, 3091.3, 4421.2, 2648.0)),
    ("sac", "ss90", (4854.2, 7706.4, 2450.3, 3353.6, 3075.0)),
    ("td3", "ss90", (2221.2, 6378.3, 1648.4, 2526.0, 1857.6)),
    ("sac", "tows70", (5449.0, 10321.7, 3731.9, 5156.6, 3428.9)),
    ("td3", "tows70", (5011.0, 10037.0, 3562.8, 4313.3, 3129.3)),
    ("sac", "ss70", (5231.5, 8971.4, 3753.7, 4770.5, 3272.7)),
    ("td3", "ss70", (4650.8, 8098.2, 3389.0, 4704.7, 3200.4)),
    ("sac", "dense", (4587.8, 11719.6, 4596.2, 4535.3, 3338.5)),
    ("td3", "dense", (4381.6, 10404.2, 4826.6, 4064.9, 2984.2)),
]:
    for _env, _value in zip(_TOWS_ENVS, _returns, strict=True):
        PUBLISHED.setdefault((_algo, _env, _method), []).append((_value, None, _TOWS))
SOURCES = {_SOKAR: "S", _TOWS: "G"}


def published(algo: str, env: str, method: str) -> str:
    """The published numbers for a method, e.g. ``11153.5 ± 473.3 [S]; 10404.2 [G]`` ("-" if none)."""
    entries = PUBLISHED.get((algo, env.split("-v")[0], method.split(" @")[0]), [])
    cells = [f"{mean:.1f}" + (f" ± {std:.1f}" if std else "") + f" [{SOURCES[src]}]" for mean, std, src in entries]
    return "; ".join(cells) or "-"


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:.1f}"


def rliable_estimates(by_method: dict[str, list[Run]], baseline: str | None) -> dict[str, dict[str, Any]]:
    """IQM of final returns with 95% stratified bootstrap CIs and P(method > baseline) with its CI."""
    from rliable import library as rly
    from rliable import metrics

    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
    scores = {m: np.array([[r.final_return()] for r in runs]) for m, runs in by_method.items()}
    state = np.random.RandomState(SEED)  # rliable (through arch) takes a RandomState
    iqm, iqm_ci = rly.get_interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]),
                                             reps=BOOTSTRAP_REPS, random_state=state)  # fmt: skip
    out = {m: {"iqm": float(iqm[m][0]), "iqm_ci": iqm_ci[m][:, 0].tolist()} for m in scores}
    if baseline in scores:
        pairs = {m: [scores[m], scores[baseline]] for m in scores if m != baseline}
        poi, poi_ci = rly.get_interval_estimates(pairs, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
                                                 reps=BOOTSTRAP_REPS, random_state=state)  # fmt: skip
        for m in pairs:
            out[m]["poi"], out[m]["poi_ci"] = float(poi[m][0]), poi_ci[m][:, 0].tolist()
    return out


def baseline_of(by_method: dict[str, list[Run]]) -> str | None:
    """The dense method of a group (the file ``dense_<algo>.yml``), if it ran."""
    return next((m for m, runs in by_method.items() if runs[0].job["file"].startswith("dense_")), None)


def results_table(algo: str, env: str, by_method: dict[str, list[Run]]) -> str:
    """The Markdown table of one algorithm and environment."""
    baseline = baseline_of(by_method)
    stats = rliable_estimates(by_method, baseline)
    header = ("| method | runs | sparsity | active weights | final return (mean ± std) | AUC / steps | IQM [95% CI] "
              "| P(> dense) [95% CI] | train FLOPs vs dense | s per 1,000 updates | published [source] |")  # fmt: skip
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for method, runs in by_method.items():
        done = runs[0].done or {}
        s = stats[method]
        poi = f"{s['poi']:.2f} [{s['poi_ci'][0]:.2f}, {s['poi_ci'][1]:.2f}]" if "poi" in s else "-"
        lines.append(
            f"| {label(method, algo)} | {len(runs)} "
            f"| {np.mean([r.done['sparsity'] for r in runs]):.4f} "
            f"| {done.get('active_weights', 0):,} of {done.get('dense_weights', 0):,} "
            f"| {_mean_std([r.final_return() for r in runs])} | {_mean_std([r.auc_per_step() for r in runs])} "
            f"| {s['iqm']:.1f} [{s['iqm_ci'][0]:.1f}, {s['iqm_ci'][1]:.1f}] | {poi} "
            f"| {np.mean([r.done['train_flops_vs_dense'] for r in runs]):.3f}x "
            f"| {np.median([r.seconds_per_1000_updates() for r in runs]):.1f} | {published(algo, env, method)} |"
        )  # fmt: skip
    return "\n".join(lines)
