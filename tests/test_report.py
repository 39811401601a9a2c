"""The report: measures computed by hand on synthetic results, tables, published numbers, figures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sb3_sparse.report import label, load_runs, write_report
from sb3_sparse.report.tables import published
from sb3_sparse.sweep.checkpoint import Evaluations, write_json
from sb3_sparse.sweep.grid import expand

GRID = {"algos": ["td3"], "envs": ["HalfCheetah-v5"], "methods": ["dense", "ds", "tows90"], "seeds": [0, 1, 2],
        "steps": 60_000, "eval_freq": 5000}  # fmt: skip
LEVEL = {"dense": 1000.0, "ds": 1200.0, "tows90": 800.0}


def fake_results(root, finish_all=True):
    """Results folders as the sweep writes them, with returns = level + 10 * seed + step / 1000."""
    for job in expand(GRID):
        folder = root / job.name
        folder.mkdir(parents=True)
        write_json(folder / "job.json", job.to_dict())
        evaluations = Evaluations(folder / "evaluations.csv", until=0)
        for t in range(5000, job.steps + 1, 5000):
            updates = max(0, t - 25_000)
            value = LEVEL[job.method] + 10 * job.seed + t / 1000
            evaluations.add(t, updates, 0.01 * updates, [value - 1, value + 1])
        sparse = job.method != "dense"
        write_json(folder / "connectivity_start.json", {"features": [5, 9, 7] if sparse else [256] * 3})
        if finish_all or job.seed < 2:
            write_json(folder / "done.json", {
                "timesteps": job.steps, "n_updates": job.steps - 25_000, "train_seconds": 1.0,
                "active_weights": 20_000 if sparse else 200_000, "dense_weights": 200_000,
                "sparsity": 0.9 if sparse else 0.0, "train_flops_vs_dense": 0.1 if sparse else 1.0,
                "connectivity_end": [3, 12, 6] if sparse else [256] * 3,
            })  # fmt: skip


def test_measures_match_their_definitions(tmp_path):
    fake_results(tmp_path)
    run = next(r for r in load_runs(tmp_path) if r.job["method"] == "ds" and r.job["seed"] == 1)
    last10 = [1200 + 10 + t / 1000 for t in range(15_000, 60_001, 5000)]
    assert run.final_return() == pytest.approx(np.mean(last10))
    # linear in steps: the area divided by the span is the value at the middle of the span
    assert run.auc_per_step() == pytest.approx(1210 + (5 + 60) / 2)
    assert run.seconds_per_1000_updates() == pytest.approx(10.0)


def test_report_tables_and_figures(tmp_path):
    fake_results(tmp_path / "results")
    readme = write_report(tmp_path / "results", tmp_path / "report", preamble="Ran on a test.").read_text()
    assert "Ran on a test." in readme and "## TD3 on HalfCheetah-v5 (60,000 steps per run)" in readme
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"TD3", "DS-TD3", "TowS-TD3 90%"}
    ds = [cell.strip() for cell in rows["DS-TD3"].split("|")[1:-1]]
    assert ds[1] == "3" and ds[2] == "0.9000" and ds[3] == "20,000 of 200,000"
    assert ds[4] == f"{1200 + 10 + np.mean(range(15, 61, 5)):.1f} ± 10.0"  # mean over seeds of last-10 means; std over seeds
    assert ds[7].startswith("1.00 [")  # every DS run beats every dense run
    assert rows["TowS-TD3 90%"].split("|")[8].strip().startswith("0.00 [")
    assert "11459.9 ± 482.6 [S]" in ds[10] and "[G]" in rows["TowS-TD3 90%"].split("|")[11]
    for name in ("curves", "sparsity", "connectivity"):
        assert (tmp_path / "report" / f"{name}_td3_HalfCheetah-v5.png").stat().st_size > 10_000


def test_unfinished_runs_are_left_out_and_named(tmp_path):
    fake_results(tmp_path / "results", finish_all=False)
    readme = write_report(tmp_path / "results", tmp_path / "report").read_text()
    assert "| DS-TD3 | 2 |" in readme and "Not finished (left out): dense seed 2, ds seed 2, tows90 seed 2" in readme


def test_labels_and_published_numbers():
    assert [label(m, "td3") for m in ("dense", "static", "ds", "tows90", "ss70", "ds @0.8", "mine")] == [
        "TD3", "Static-TD3", "DS-TD3", "TowS-TD3 90%", "SS-TD3 70%", "DS-TD3 @0.8", "mine"]  # fmt: skip
    assert published("td3", "HalfCheetah-v5", "dense") == "11153.5 ± 473.3 [S]; 10404.2 [G]"
    assert published("sac", "Humanoid-v5", "tows90") == "5582.7 [G]"
    assert published("td3", "Pendulum-v1", "dense") == "-"


def test_cli_writes_the_report_and_rejects_a_missing_folder(tmp_path):
    fake_results(tmp_path / "results")
    command = [sys.executable, "-m", "sb3_sparse.report"]
    ok = subprocess.run([*command, str(tmp_path / "results"), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert ok.returncode == 0 and (tmp_path / "out" / "README.md").is_file()
    bad = subprocess.run([*command, str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == f"sb3_sparse.report: no results folder {tmp_path / 'nope'}"
    assert json.loads((tmp_path / "results" / "td3-HalfCheetah-v5-ds-seed0" / "job.json").read_text())["method"] == "ds"
