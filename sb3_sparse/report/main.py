"""Writes ``DIR/README.md`` (tables) and PNG figures for every algorithm and environment of a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from .figures import input_connectivity, learning_curves, return_vs_sparsity
from .results import group, load_runs
from .tables import SOURCES, results_table

COLUMNS = """Columns: *final return* is the mean of a run's last 10 evaluations, mean ± std over runs, as in
Sokar et al.'s Table 1; *AUC / steps* is the area under the learning curve divided by the steps it spans
(the average evaluation return over training); *IQM* is the interquartile mean of the runs' final returns
and *P(> dense)* the probability that a run of the method beats a dense run (rliable, 95% stratified
bootstrap intervals); *sparsity* and *active weights* count the actor and critics' weight matrices;
*train FLOPs vs dense* follows Sokar et al. (3x forward per update); *s per 1,000 updates* is training
wall time (environment steps included, evaluations excluded) from the first to the last evaluation of
the learning phase, median over runs."""


def write_report(results: str | Path, out: str | Path, preamble: str = "") -> Path:
    """Write the report of a results folder.

    :param results: the sweep's results folder (or a copy of its compact files).
    :param out: the report folder (created).
    :param preamble: Markdown placed under the title (what was run, where, at what budget).
    :return: the path of the written ``README.md``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(results)
    groups = group(runs)
    unfinished = sorted(r.job["method"] + f" seed {r.job['seed']}" for r in runs if not r.finished)
    lines = ["# Results", ""]
    if preamble:
        lines += [preamble.strip(), ""]
    for (algo, env), by_method in groups.items():
        stem = f"{algo}_{env}"
        steps = {r.job["steps"] for runs_ in by_method.values() for r in runs_}
        lines += [f"## {algo.upper()} on {env} ({', '.join(f'{s:,}' for s in sorted(steps))} steps per run)", ""]
        lines += [results_table(algo, env, by_method), ""]
        learning_curves(algo, env, by_method, out / f"curves_{stem}.png")
        return_vs_sparsity(algo, env, by_method, out / f"sparsity_{stem}.png")
        lines += [f"![learning curves](curves_{stem}.png)", "", f"![final return vs sparsity](sparsity_{stem}.png)", ""]
        if input_connectivity(algo, env, by_method, out / f"connectivity_{stem}.png"):
            lines += [f"![input-layer connectivity](connectivity_{stem}.png)", ""]
    if not groups:
        lines += ["No finished runs yet.", ""]
    if unfinished:
        lines += [f"Not finished (left out): {', '.join(unfinished)}.", ""]
    sources = "; ".join(f"[{key}] {source}" for source, key in SOURCES.items())
    lines += [
        COLUMNS,
        "",
        f"Published numbers: {sources}. Their budget differs from ours unless the heading says 1,000,000 steps.",
        "",
    ]
    readme = out / "README.md"
    readme.write_text("\n".join(lines))
    return readme


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_sparse.report", description=__doc__)
    parser.add_argument("results", help="a sweep's results folder")
    parser.add_argument("--out", required=True, help="folder for README.md and the figures")
    parser.add_argument("--preamble", default=None, help="a Markdown file placed under the title")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        parser.exit(2, f"sb3_sparse.report: no results folder {args.results}\n")
    preamble = Path(args.preamble).read_text() if args.preamble else ""
    print(write_report(args.results, args.out, preamble))
