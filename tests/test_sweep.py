"""The sweep: grid files, a tiny grid on the local pool and on a real local Ray cluster, resume after a kill."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from sb3_sparse.sweep import expand, load, run

GRID = {
    "algos": ["td3"],
    "envs": ["Pendulum-v1"],
    "methods": ["dense", "tows90"],
    "seeds": [0, 1],
    "steps": 400,
    "eval_freq": 200,
    "eval_episodes": 2,
    "checkpoint_freq": 200,
    "hyperparams": {"learning_starts": 100, "batch_size": 32},
}
NAMES = [f"td3-Pendulum-v1-{m}-seed{s}" for s in (0, 1) for m in ("dense", "tows90")]


def sweep_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sb3_sparse.sweep", *args, "--no-progress"], capture_output=True,
                          text=True, timeout=600, **kwargs)  # fmt: skip


def write_grid(folder: Path, **changes) -> Path:
    path = folder / "grid.yml"
    path.write_text(yaml.safe_dump({**GRID, **changes}))
    return path


def evaluations(folder: Path) -> list[dict[str, str]]:
    with open(folder / "evaluations.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_finished(results: Path, name: str, steps: int = 400, every: int = 200) -> dict:
    folder = results / name
    done = json.loads((folder / "done.json").read_text())
    assert done["timesteps"] == steps and done["n_updates"] == steps - 100  # one update per step after learning_starts
    rows = evaluations(folder)
    assert [int(r["timesteps"]) for r in rows] == list(range(every, steps + 1, every))
    assert all(len(r["returns"].split()) == 2 for r in rows)
    assert (folder / "final_model.zip").is_file() and (folder / "config.yml").is_file()
    with open(next((folder / "logs").glob("*/progress.csv")), newline="") as f:
        logged = list(csv.DictReader(f))
    assert len(logged) >= len(rows) // 2 and "eval/mean_reward" in logged[0]
    assert ("sparse/sparsity" in logged[0]) is ("tows" in name)
    if "tows" in name:
        assert done["sparsity"] == pytest.approx(0.9, abs=0.005) and done["train_flops_vs_dense"] < 0.2
    return done


def test_grid_expands_every_combination_in_a_stable_order():
    jobs = expand({**GRID, "methods": ["dense", "ds", {"name": "ds-sparse-init", "file": "ds", "policy_kwargs": {"x": 1}}],
                   "sparsities": [0.8, 0.9]})  # fmt: skip
    names = [job.name for job in jobs]
    assert names[:5] == [
        "td3-Pendulum-v1-dense-seed0", "td3-Pendulum-v1-ds-sp0.8-seed0", "td3-Pendulum-v1-ds-sp0.9-seed0",
        "td3-Pendulum-v1-ds-sparse-init-sp0.8-seed0", "td3-Pendulum-v1-ds-sparse-init-sp0.9-seed0",
    ]  # fmt: skip
    assert len(jobs) == 10 and jobs[3].file == "ds_td3.yml" and jobs[3].policy_kwargs == {"x": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "'steps' must be a positive integer, got 0"),
        ({"methods": ["nope"]}, "no file nope_td3.yml; available: \\['dense_td3.yml'"),
        ({"sparsities": [1.5]}, "must be in \\[0, 1\\), got 1.5"),
        ({"typo": 1}, "unknown keys \\['typo'\\]"),
    ],
)
def test_bad_grid_files_fail_early_naming_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        expand({**GRID, **change})


def test_cli_rejects_a_bad_grid_with_one_line(tmp_path):
    result = sweep_cli(str(write_grid(tmp_path, steps=-1)))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "'steps'" in result.stderr


def test_tiny_grid_on_the_local_pool_then_rerun_skips(tmp_path):
    results = tmp_path / "results"
    progress = run(load(write_grid(tmp_path)), results, workers=2)
    assert sorted(progress.done) == sorted(NAMES) and not progress.failed
    for name in NAMES:
        check_finished(results, name)
    copy = sweep_cli(str(write_grid(tmp_path)), "--results", str(results), "--collect", str(tmp_path / "compact"))
    assert copy.returncode == 0 and "copied 4 of 4" in copy.stdout
    compact = tmp_path / "compact" / NAMES[1]
    copied = sorted(str(p.relative_to(compact)) for p in compact.rglob("*.*"))
    assert copied == ["config.yml", "connectivity_start.json", "done.json", "evaluations.csv", "job.json",
                      "logs/0000000000/progress.csv"]  # fmt: skip
    stamps = {name: (results / name / "done.json").stat().st_mtime_ns for name in NAMES}
    again = run(load(write_grid(tmp_path)), results, workers=2)
    assert sorted(again.done) == sorted(NAMES)
    assert stamps == {name: (results / name / "done.json").stat().st_mtime_ns for name in NAMES}  # nothing retrained


def test_a_larger_budget_continues_finished_jobs(tmp_path):
    results = tmp_path / "results"
    grid = dict(methods=["tows90"], seeds=[0])
    run(load(write_grid(tmp_path, **grid)), results)
    run(load(write_grid(tmp_path, steps=600, **grid)), results)
    check_finished(results, "td3-Pendulum-v1-tows90-seed0", steps=600)
    from stable_baselines3 import TD3

    model = TD3.load(results / "td3-Pendulum-v1-tows90-seed0" / "checkpoints" / "0000000600" / "model.zip")
    assert model.buffer_size == 600 and model.num_timesteps == 600


@pytest.mark.parametrize("flush", [True, False])
def test_the_jobs_denormal_setting_reaches_the_files_callbacks(tmp_path, monkeypatch, flush):
    """dense_td3.yml carries FlushDenormalCallback, the sparse files SparseTrainingCallback: both obey the grid."""
    from sb3_sparse.sweep import job as job_module

    seen = []
    learn = job_module.BaseCallback.on_training_start

    def record(self, *args):
        if hasattr(self, "denormal"):
            seen.append((type(self).__name__, self.denormal.enabled))
        return learn(self, *args)

    monkeypatch.setattr(job_module.BaseCallback, "on_training_start", record)
    jobs = expand({**GRID, "steps": 200, "flush_denormal": flush, "seeds": [0]})
    for job in jobs:
        job_module.run_job(job.to_dict(), str(tmp_path))
    assert sorted(seen) == [("FlushDenormalCallback", flush), ("SparseTrainingCallback", flush)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_listens_on_loopback_only() -> bool:
    """Every listening socket of Ray's head processes is on 127.0.0.1 (or ::1)."""
    import psutil

    addresses = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        if "ray" in " ".join(process.info["cmdline"] or []):
            try:
                listening = [c for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN]
                addresses |= {c.laddr.ip.removeprefix("::ffff:") for c in listening}  # IPv4-mapped IPv6
            except psutil.Error:
                continue
    return bool(addresses) and addresses <= {"127.0.0.1", "::1"}


def test_tiny_grid_on_a_real_local_ray_cluster(tmp_path):
    ray = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    # Ray turns 127.0.0.1 into the machine's network address unless told this is a one-machine cluster.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    head = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
            "--include-dashboard", "false", "--temp-dir", temp, "--disable-usage-stats"]  # fmt: skip
    subprocess.run(head, check=True, capture_output=True, timeout=120, env=env)
    try:
        assert ray_listens_on_loopback_only()
        results = tmp_path / "results"
        out = sweep_cli(str(write_grid(tmp_path)), "--results", str(results), "--ray-address", f"127.0.0.1:{port}", env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        for name in NAMES:
            check_finished(results, name)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_a_killed_job_resumes_and_finishes_like_an_uninterrupted_one(tmp_path):
    steps = 3000
    grid = write_grid(tmp_path, methods=["tows90"], seeds=[0], steps=steps, checkpoint_freq=500, eval_freq=500)
    results = tmp_path / "results"
    name = "td3-Pendulum-v1-tows90-seed0"
    pointer = results / name / "checkpoints" / "latest.json"
    command = [sys.executable, "-m", "sb3_sparse.sweep", str(grid), "--results", str(results), "--no-progress"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not pointer.is_file() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its worker, mid-run
    driver.wait()
    killed_at = json.loads(pointer.read_text())["timesteps"]
    assert 0 < killed_at < steps and not (results / name / "done.json").exists()
    assert sweep_cli(str(grid), "--results", str(results)).returncode == 0
    done = check_finished(results, name, steps, every=500)
    assert len(list((results / name / "logs").iterdir())) == 2  # one log folder per start
    uninterrupted = tmp_path / "uninterrupted"
    assert sweep_cli(str(grid), "--results", str(uninterrupted)).returncode == 0
    assert done["n_updates"] == json.loads((uninterrupted / name / "done.json").read_text())["n_updates"]


def test_grow_buffer_keeps_the_transitions_in_order_and_fills_on():
    import numpy as np
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    from sb3_sparse.sweep.checkpoint import grow_buffer

    box = spaces.Box(-1, 1, (2,))
    buffer = ReplayBuffer(5, box, box)
    for i in range(5):
        buffer.add(np.full(2, i), np.full(2, i + 1), np.zeros(2), np.array([i]), np.array([False]), [{}])
    assert buffer.full and buffer.pos == 0
    grow_buffer(buffer, 8)
    assert (buffer.buffer_size, buffer.pos, buffer.full, buffer.size()) == (8, 5, False, 5)
    assert buffer.observations[:5, 0, 0].tolist() == [0, 1, 2, 3, 4] and buffer.rewards[:5, 0].tolist() == [0, 1, 2, 3, 4]
    for i in range(3):
        buffer.add(np.full(2, 5 + i), np.zeros(2), np.zeros(2), np.array([5 + i]), np.array([False]), [{}])
    assert buffer.full and buffer.rewards[:, 0].tolist() == list(range(8))
    buffer.add(np.zeros(2), np.zeros(2), np.zeros(2), np.array([9]), np.array([False]), [{}])
    with pytest.raises(ValueError, match="wrapped around"):
        grow_buffer(buffer, 10)
