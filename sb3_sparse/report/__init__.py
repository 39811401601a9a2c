"""Paper-style reports of sweep results: ``python -m sb3_sparse.report RESULTS --out DIR``."""

from .main import main, write_report
from .results import Run, label, load_runs

__all__ = ["Run", "label", "load_runs", "main", "write_report"]
