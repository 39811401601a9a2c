"""Command line of the sweep: ``python -m sb3_sparse.sweep GRID.yml [--results DIR] [--workers N | --ray-address A]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import read_json
from .grid import Job, load
from .job import compact_files, write_files
from .runners import Progress, run_local, run_ray


def run(
    jobs: list[Job],
    results: str | Path,
    workers: int = 1,
    ray_address: str | None = None,
    cpus_per_job: float = 1.0,
    gpus_per_job: float = 0.0,
    progress_bar: bool = False,
) -> Progress:
    """Run the jobs that are not finished yet (finished ones are skipped, interrupted ones resume).

    :param jobs: the jobs (see :func:`sb3_sparse.sweep.load`).
    :param results: the results folder (one subfolder per job).
    :param workers: local worker processes (ignored with ``ray_address``).
    :param ray_address: run on the Ray cluster at this address (``HOST:PORT``) instead.
    :param cpus_per_job: CPUs Ray reserves per job.
    :param gpus_per_job: GPUs Ray reserves per job.
    :param progress_bar: show jobs done / running / left and steps per second.
    :return: the final progress (``done`` and ``failed`` job names).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if cpus_per_job <= 0 or gpus_per_job < 0:
        raise ValueError(f"cpus_per_job must be > 0 and gpus_per_job >= 0, got {cpus_per_job} and {gpus_per_job}")
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    progress = Progress(jobs, results, enabled=progress_bar)
    try:
        if ray_address:
            run_ray(jobs, results, ray_address, cpus_per_job, gpus_per_job, progress)
        else:
            run_local(jobs, results, workers, progress)
    finally:
        progress.close()
    return progress


def collect(jobs: list[Job], results: str | Path, into: str | Path) -> list[str]:
    """Copy the compact result files of the finished jobs into another folder (e.g. to commit them).

    :return: the names of the jobs copied.
    """
    copied = []
    for job in jobs:
        folder = Path(results) / job.name
        done = read_json(folder / "done.json")
        if done is not None and done["timesteps"] >= job.steps:
            write_files(Path(into) / job.name, compact_files(folder))
            copied.append(job.name)
    return copied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sb3_sparse.sweep", description=__doc__)
    parser.add_argument("grid", help="grid file (YAML; see sb3_sparse/sweep/grid.py)")
    parser.add_argument("--results", default="results", help="results folder, one subfolder per job (default: results)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes, one torch thread each")
    parser.add_argument("--ray-address", default=None, help="run on the Ray cluster at HOST:PORT instead")
    parser.add_argument("--cpus-per-job", type=float, default=1.0)
    parser.add_argument("--gpus-per-job", type=float, default=0.0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    parser.add_argument("--collect", metavar="DIR", help="copy the finished jobs' compact results into DIR and exit")
    args = parser.parse_args(argv)
    try:
        jobs = load(args.grid)
    except (OSError, ValueError) as error:
        parser.exit(2, f"sb3_sparse.sweep: {error}\n")
    if args.dry_run:
        for job in jobs:
            print(job.name)
        return
    if args.collect:
        copied = collect(jobs, args.results, args.collect)
        print(f"copied {len(copied)} of {len(jobs)} jobs' compact results to {args.collect}")
        return
    progress = run(jobs, args.results, args.workers, args.ray_address, args.cpus_per_job, args.gpus_per_job,
                   progress_bar=not args.no_progress)  # fmt: skip
    print(f"{len(progress.done)} of {len(jobs)} jobs finished in {args.results}")
    for name, error in progress.failed.items():
        print(f"FAILED {name}: {error} (see {Path(args.results) / name / 'job.log'})", file=sys.stderr)
    if progress.failed:
        raise SystemExit(1)
