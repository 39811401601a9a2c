"""Grid runs of sparse and dense agents: ``python -m sb3_sparse.sweep GRID.yml``.

Expands a grid file into jobs (:mod:`.grid`), runs each with the packaged rl-zoo3 files, an
evaluation schedule and resumable checkpoints (:mod:`.job`), on a local process pool or a Ray
cluster (:mod:`.runners`). ``python -m sb3_sparse.report RESULTS`` turns the results into tables
and figures.
"""

from .grid import Job, expand, load
from .job import run_job
from .main import main, run

__all__ = ["Job", "expand", "load", "main", "run", "run_job"]
