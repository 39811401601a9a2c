"""Grid files: which jobs a sweep runs.

A grid file is YAML::

    algos: [td3]                       # rl-zoo3 algorithm names
    envs: [HalfCheetah-v5]
    methods: [dense, static, ds, tows90]   # the packaged hyperparams/<method>_<algo>.yml files
    sparsities: []                     # optional: override the sparsity of every sparse method
    seeds: [0, 1, 2]
    steps: 100000                      # environment steps per job
    eval_freq: 5000                    # evaluate every 5,000 steps ...
    eval_episodes: 10                  # ... over 10 episodes (Sokar et al.'s protocol)
    checkpoint_freq: 25000             # resumable checkpoints (model, replay buffer, sparse state)
    flush_denormal: true               # see sb3_sparse.denormal
    hyperparams: {}                    # zoo hyperparameter overrides for every job

A method may also be a mapping ``{name: ..., file: ..., policy_kwargs: {...}, hyperparams: {...}}``
to run a variant of a file under its own name (e.g. another ``init``).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import yaml

from ..paper import HYPERPARAMS_DIR  # the packaged rl-zoo3 files

_DEFAULTS: dict[str, Any] = {
    "sparsities": [],
    "seeds": [0],
    "eval_freq": 5000,
    "eval_episodes": 10,
    "checkpoint_freq": 25000,
    "flush_denormal": True,
    "hyperparams": {},
    "device": "cpu",
}
_REQUIRED = ("algos", "envs", "methods", "steps")


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of a grid: everything that determines its results."""

    algo: str
    env: str
    method: str
    file: str  # hyperparams file name without the directory
    seed: int
    steps: int
    sparsity: float | None = None
    policy_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_freq: int = 5000
    eval_episodes: int = 10
    checkpoint_freq: int = 25000
    flush_denormal: bool = True
    device: str = "cpu"

    @property
    def name(self) -> str:
        """The job's folder name: ``td3-HalfCheetah-v5-tows90-seed0`` (``-sp0.8`` with a sparsity)."""
        sparsity = f"-sp{self.sparsity:g}" if self.sparsity is not None else ""
        return f"{self.algo}-{self.env}-{self.method}{sparsity}-seed{self.seed}"

    @property
    def config_path(self) -> Path:
        return HYPERPARAMS_DIR / self.file

    @property
    def dense(self) -> bool:
        """Whether the file trains SB3's own dense policy (sparsities do not apply)."""
        return self.file.startswith("dense_")

    def identity(self) -> dict[str, Any]:
        """What must match for a job folder to be resumed (the step budget may grow)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "steps"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**data)


def _method_entries(methods: list[Any]) -> list[dict[str, Any]]:
    entries = []
    for method in methods:
        entry = {"name": method} if isinstance(method, str) else dict(method)
        unknown = set(entry) - {"name", "file", "policy_kwargs", "hyperparams"}
        if "name" not in entry or unknown:
            raise ValueError(f"grid 'methods': each entry is a name or a mapping with 'name' (and file, "
                             f"policy_kwargs, hyperparams); got {method!r}")  # fmt: skip
        entries.append(entry)
    return entries


def _check_positive(grid: dict[str, Any], key: str) -> None:
    value = grid[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"grid {key!r} must be a positive integer, got {value!r}")


def expand(grid: dict[str, Any]) -> list[Job]:
    """All jobs of a grid, in a stable order (seed outermost, so early jobs cover every method).

    :param grid: the parsed grid file.
    :return: one :class:`Job` per algorithm x environment x method x sparsity x seed.
    """
    missing = [key for key in _REQUIRED if key not in grid]
    unknown = set(grid) - set(_REQUIRED) - set(_DEFAULTS)
    if missing or unknown:
        raise ValueError(f"grid file: missing keys {missing}, unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted((*_REQUIRED, *_DEFAULTS))}")  # fmt: skip
    grid = {**_DEFAULTS, **grid}
    for key in ("steps", "eval_freq", "eval_episodes", "checkpoint_freq"):
        _check_positive(grid, key)
    for sparsity in grid["sparsities"]:
        if not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(f"grid 'sparsities': each must be in [0, 1), got {sparsity!r}")
    jobs = []
    for seed, algo, env, method in itertools.product(
        grid["seeds"], grid["algos"], grid["envs"], _method_entries(grid["methods"])
    ):
        file = method.get("file", method["name"]) + f"_{algo}.yml"
        if not (HYPERPARAMS_DIR / file).is_file():
            available = sorted(p.name for p in HYPERPARAMS_DIR.glob(f"*_{algo}.yml"))
            raise ValueError(f"grid method {method['name']!r} on {algo}: no file {file}; available: {available}")
        common = dict(
            algo=algo, env=env, method=method["name"], file=file, seed=int(seed), steps=grid["steps"],
            policy_kwargs=dict(method.get("policy_kwargs", {})),
            hyperparams={**grid["hyperparams"], **method.get("hyperparams", {})},
            eval_freq=grid["eval_freq"], eval_episodes=grid["eval_episodes"], checkpoint_freq=grid["checkpoint_freq"],
            flush_denormal=bool(grid["flush_denormal"]), device=grid["device"],
        )  # fmt: skip
        sparsities = [None] if file.startswith("dense_") or not grid["sparsities"] else grid["sparsities"]
        jobs.extend(Job(sparsity=None if s is None else float(s), **common) for s in sparsities)
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError("grid: two jobs share a name; give method variants distinct names")
    return jobs


def load(path: str | Path) -> list[Job]:
    """Read a grid file and expand it into jobs."""
    with open(path) as f:
        grid = yaml.safe_load(f)
    if not isinstance(grid, dict):
        raise ValueError(f"grid file {path}: expected a mapping at the top level")
    return expand(grid)
