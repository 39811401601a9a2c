"""Reading a sweep's results folder into runs, and the measures the papers report.

Measures (Sokar et al. 2022, Sec. 4): the *final return* of a run is the mean of its last 10
evaluations; the *learning speed* is the area under its learning curve (trapezoids over the
evaluation points) divided by the steps it spans, i.e. the average return over training.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

LAST_EVALUATIONS = 10

# Display names of the packaged files' methods (hyperparams/<method>_<algo>.yml).
_LABELS = {"dense": "{A}", "static": "Static-{A}", "ds": "DS-{A}", "set": "DS-{A}"}
_SPARSITY_LABELS = {"tows": "TowS-{A} {p}%", "ss": "SS-{A} {p}%"}


def label(method: str, algo: str) -> str:
    """The papers' name of a method: ``ds`` on TD3 is DS-TD3, ``tows90`` TowS-TD3 90%; others unchanged.

    A grid's sparsity override stays as a suffix (``ds @0.8`` is ``DS-TD3 @0.8``).
    """
    method, at, sparsity = method.partition(" @")
    return _paper_name(method, algo.upper()) + (f" @{sparsity}" if at else "")


def _paper_name(method: str, algo: str) -> str:
    if method in _LABELS:
        return _LABELS[method].format(A=algo)
    stem = method.rstrip("0123456789")
    if stem in _SPARSITY_LABELS and stem != method:
        return _SPARSITY_LABELS[stem].format(A=algo, p=method[len(stem) :])
    return method


@dataclasses.dataclass
class Run:
    """One finished (or partly finished) job."""

    job: dict[str, Any]
    timesteps: np.ndarray  # evaluation points
    returns: np.ndarray  # mean evaluation return at each point
    n_updates: np.ndarray
    train_seconds: np.ndarray
    done: dict[str, Any] | None
    connectivity_start: list[int] | None

    @property
    def key(self) -> tuple[str, str]:
        return self.job["algo"], self.job["env"]

    @property
    def method(self) -> str:
        sparsity = self.job.get("sparsity")
        return self.job["method"] + (f" @{sparsity:g}" if sparsity is not None else "")

    @property
    def finished(self) -> bool:
        return self.done is not None and self.done["timesteps"] >= self.job["steps"]

    def final_return(self) -> float:
        return float(np.mean(self.returns[-LAST_EVALUATIONS:]))

    def auc_per_step(self) -> float:
        if len(self.timesteps) < 2:
            return float(self.returns[0]) if len(self.returns) else float("nan")
        return float(np.trapezoid(self.returns, self.timesteps) / (self.timesteps[-1] - self.timesteps[0]))

    def seconds_per_1000_updates(self) -> float:
        """Training wall time (environment steps included, evaluations excluded) per 1,000 updates."""
        learning = self.n_updates > 0
        if learning.sum() < 2:
            return float("nan")
        updates = self.n_updates[learning]
        seconds = self.train_seconds[learning]
        return float(1000 * (seconds[-1] - seconds[0]) / (updates[-1] - updates[0]))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_runs(results: str | Path) -> list[Run]:
    """Every job folder of a results folder that has at least one evaluation."""
    runs = []
    for folder in sorted(Path(results).iterdir()):
        if not (folder / "job.json").is_file() or not (folder / "evaluations.csv").is_file():
            continue
        rows = _read_csv(folder / "evaluations.csv")
        if not rows:
            continue
        column = lambda name, kind=float, rows=rows: np.array([kind(row[name]) for row in rows])  # noqa: E731
        done_path, start_path = folder / "done.json", folder / "connectivity_start.json"
        runs.append(Run(
            job=json.loads((folder / "job.json").read_text()),
            timesteps=column("timesteps", int), returns=column("return_mean"), n_updates=column("n_updates", int),
            train_seconds=column("train_seconds"),
            done=json.loads(done_path.read_text()) if done_path.is_file() else None,
            connectivity_start=json.loads(start_path.read_text())["features"] if start_path.is_file() else None,
        ))  # fmt: skip
    return runs


def group(runs: list[Run]) -> dict[tuple[str, str], dict[str, list[Run]]]:
    """Finished runs by (algorithm, environment), then by method, methods in first-seen order."""
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for run in runs:
        if run.finished:
            groups.setdefault(run.key, {}).setdefault(run.method, []).append(run)
    return groups
