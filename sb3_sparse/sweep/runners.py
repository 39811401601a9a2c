"""Where jobs run: a local process pool or a Ray cluster, with one progress bar for both.

Both runners call the same :func:`~sb3_sparse.sweep.job.run_job`. Jobs write into the results
folder as they go (checkpoints, evaluations, status); a Ray task also returns its compact
result files, which the driver writes into its own results folder, so a cluster without a
shared filesystem still brings every finished job's results back (resuming an interrupted job
there needs the results folder on a filesystem all nodes share).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from .checkpoint import read_json
from .grid import Job
from .job import run_job, write_files

POLL_SECONDS = 2.0


class Progress:
    """Jobs done / running / left and environment steps per second, read from the job folders.

    :param jobs: all jobs of the sweep.
    :param results: the results folder.
    :param enabled: show a tqdm bar (otherwise only count).
    """

    def __init__(self, jobs: list[Job], results: Path, enabled: bool) -> None:
        self.jobs, self.results = jobs, results
        self.done: set[str] = set()
        self.running: set[str] = set()
        self.failed: dict[str, str] = {}
        self._steps0 = self._steps()
        self._t0 = time.time()
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=sum(job.steps for job in jobs), unit="step", dynamic_ncols=True, initial=self._steps0)

    def _steps(self) -> int:
        total = 0
        for job in self.jobs:
            status = read_json(self.results / job.name / "status.json") or {}
            total += min(job.steps, int(status.get("timesteps", 0)))
        return total

    def refresh(self) -> None:
        steps = self._steps()
        rate = (steps - self._steps0) / max(time.time() - self._t0, 1e-9)
        left = len(self.jobs) - len(self.done) - len(self.running) - len(self.failed)
        text = f"jobs done {len(self.done)} running {len(self.running)} left {left}" + (
            f" failed {len(self.failed)}" if self.failed else ""
        )
        if self.bar is not None:
            self.bar.n = steps
            self.bar.set_postfix_str(f"{text}, {rate:.0f} steps/s", refresh=True)

    def close(self) -> None:
        self.refresh()
        if self.bar is not None:
            self.bar.close()


def _drive(futures: dict[Any, Job], progress: Progress, wait_some: Callable[[Iterable[Any]], set[Any]],
           result_of: Callable[[Any], dict[str, Any]], on_start: Callable[[], Iterable[Job]]) -> None:  # fmt: skip
    """Collect finished jobs until none is left, refreshing the progress bar between polls."""
    pending = set(futures)
    while pending:
        progress.running = {job.name for job in on_start()}
        progress.refresh()
        for future in wait_some(pending):
            pending.discard(future)
            job = futures[future]
            try:
                result = result_of(future)
                write_files(progress.results / job.name, result["files"])
                progress.done.add(job.name)
            except Exception as error:  # one failed job must not stop the others
                progress.failed[job.name] = f"{type(error).__name__}: {error}"
    progress.running = set()


def _started(jobs: list[Job], results: Path, finished: Callable[[], set[str]]) -> Callable[[], list[Job]]:
    """Jobs whose folder reports a status and that have not finished (the running ones)."""

    def started() -> list[Job]:
        done = finished()
        return [j for j in jobs if j.name not in done and (results / j.name / "status.json").is_file()]

    return started


def run_local(jobs: list[Job], results: Path, workers: int, progress: Progress) -> None:
    """Run jobs on ``workers`` local processes, a fresh process per job (clean global state)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1) as pool:
        futures: dict[Future, Job] = {pool.submit(run_job, job.to_dict(), str(results)): job for job in jobs}
        _drive(
            futures, progress,
            wait_some=lambda pending: wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED).done,
            result_of=lambda future: future.result(),
            on_start=_started(jobs, results, lambda: progress.done | set(progress.failed)),
        )  # fmt: skip


def run_ray(jobs: list[Job], results: Path, address: str, cpus_per_job: float, gpus_per_job: float,
            progress: Progress) -> None:  # fmt: skip
    """Run jobs as Ray tasks on the cluster at ``address`` (one task per job)."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job, max_retries=0)(run_job)
        futures = {remote.remote(job.to_dict(), str(results.resolve())): job for job in jobs}
        _drive(
            futures, progress,
            wait_some=lambda pending: set(ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)[0]),
            result_of=ray.get,
            on_start=_started(jobs, results, lambda: progress.done | set(progress.failed)),
        )  # fmt: skip
    finally:
        ray.shutdown()
