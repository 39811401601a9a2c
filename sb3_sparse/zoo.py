"""rl-zoo3 integration: hyperparameter search over the sparse settings.

Pass this module to the zoo's ``--gym-packages`` (``python -m rl_zoo3.train ... -optimize
--gym-packages sb3_sparse.zoo``). Importing it patches rl-zoo3 in place, once:

- the zoo's samplers for ``td3``, ``ddpg``, ``sac``, ``tqc``, ``dqn`` and ``qrdqn`` are wrapped
  so that their ``policy_kwargs`` are **merged** into the YAML file's ``policy_kwargs`` instead
  of replacing them (the zoo drops the file's ``preset``, ``optimizer_kwargs``, ... otherwise);
- when the file's policy is a sparse one, each trial also samples the sparse settings in
  :data:`SPARSE_SEARCH_SPACE`: ``sparsity``, ``sparse_method``, ``drop_fraction`` (η) and
  ``update_interval`` (e);
- the matching converters and ``--trial-id`` (train with a stored trial's settings) apply the
  same merge.

Edit :data:`SPARSE_SEARCH_SPACE` from your own ``--gym-packages`` module to change the ranges.
"""

from __future__ import annotations

import contextvars
import copy
import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import optuna

from .core.config import METHODS
from .targets import GlobalTargetUpdateInterval

__all__ = [
    "SPARSE_ALGOS",
    "SPARSE_PARAMS",
    "SPARSE_SEARCH_SPACE",
    "GlobalTargetUpdateInterval",
    "install",
    "merge_policy_kwargs",
    "sample_sparse_params",
]

# rl-zoo3 algorithm names whose samplers and converters get wrapped.
SPARSE_ALGOS = ("td3", "ddpg", "sac", "tqc", "dqn", "qrdqn")

# The search space of the sparse settings (Optuna parameter name -> range or choices).
SPARSE_SEARCH_SPACE: dict[str, Any] = {
    "sparsity": {"low": 0.5, "high": 0.95, "step": 0.05},
    "sparse_method": list(METHODS),
    "drop_fraction": {"low": 0.01, "high": 0.5, "log": True},
    "update_interval": [250, 500, 1000, 2000, 5000],
}
# Optuna parameter name -> policy_kwargs key.
SPARSE_PARAMS = {
    "sparsity": "sparsity",
    "sparse_method": "method",
    "drop_fraction": "drop_fraction",
    "update_interval": "update_interval",
}
# Keys of the file's policy_kwargs that a sampled sparsity replaces.
_SIZE_KEYS = ("lambdas", "actor_sparsity", "critic_sparsity")

# (the file's policy_kwargs, whether its policy is sparse) for the trial being sampled.
_TRIAL_BASE: contextvars.ContextVar[tuple[dict[str, Any], bool] | None] = contextvars.ContextVar(
    "sb3_sparse_zoo_trial_base", default=None
)
# Algorithms whose zoo sampler searches soft target updates (tau) that the files' hard updates would distort.
_SOFT_TARGET_ALGOS = ("sac", "tqc")


def sample_sparse_params(trial: optuna.Trial) -> dict[str, Any]:
    """Sample the sparse settings of one trial (Optuna names, see :data:`SPARSE_SEARCH_SPACE`).

    ``drop_fraction`` is sampled only for methods that drop and regrow (``set``, ``rigl``) and
    ``update_interval`` only for methods that change the topology (all but ``static``).

    :param trial: the Optuna trial.
    :return: the sampled values by Optuna parameter name.
    """
    space = SPARSE_SEARCH_SPACE
    params: dict[str, Any] = {
        "sparsity": trial.suggest_float("sparsity", **space["sparsity"]),
        "sparse_method": trial.suggest_categorical("sparse_method", space["sparse_method"]),
    }
    if params["sparse_method"] in ("set", "rigl"):
        params["drop_fraction"] = trial.suggest_float("drop_fraction", **space["drop_fraction"])
    if params["sparse_method"] != "static":
        params["update_interval"] = trial.suggest_categorical("update_interval", space["update_interval"])
    return params


def sparse_policy_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Map sampled values (Optuna names) to sparse ``policy_kwargs`` keys; other names are ignored.

    :param params: sampled or stored trial parameters.
    :return: the sparse ``policy_kwargs``.
    """
    return {SPARSE_PARAMS[name]: value for name, value in params.items() if name in SPARSE_PARAMS}


def merge_policy_kwargs(base: dict[str, Any] | None, sampled: dict[str, Any] | None) -> dict[str, Any]:
    """The file's ``policy_kwargs`` updated with the sampled ones (a new dict; inputs untouched).

    A sampled ``sparsity`` removes the file's ``lambdas``, ``actor_sparsity`` and
    ``critic_sparsity``, which would otherwise override it.

    :param base: the YAML file's ``policy_kwargs`` (already evaluated).
    :param sampled: the sampled ``policy_kwargs``.
    :return: the merged ``policy_kwargs``.
    """
    merged = copy.deepcopy(dict(base or {}))
    sampled = dict(sampled or {})
    if "sparsity" in sampled:
        for key in _SIZE_KEYS:
            merged.pop(key, None)
    merged.update(sampled)
    return merged


def _is_sparse_policy(policy: Any, algo_class: type | None) -> bool:
    if isinstance(policy, str) and algo_class is not None:
        policy = algo_class.policy_aliases.get(policy, policy)
    return isinstance(policy, type) and hasattr(policy, "algorithm_family") and hasattr(policy, "fits")


def _soft_targets(algo: str, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """A sampled ``tau`` is a soft update after every gradient step: do not let the file's interval stretch it."""
    if algo in _SOFT_TARGET_ALGOS and "tau" in hyperparams:
        hyperparams.setdefault("target_update_interval", 1)
    return hyperparams


def _wrap_sampler(algo: str, sampler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    @functools.wraps(sampler)
    def sample(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        hyperparams = sampler(trial, n_actions, n_envs, additional_args)
        base, sparse = _TRIAL_BASE.get() or ({}, False)
        sampled = dict(hyperparams.get("policy_kwargs") or {})
        if sparse:
            sampled |= sparse_policy_kwargs(sample_sparse_params(trial))
        hyperparams["policy_kwargs"] = merge_policy_kwargs(base, sampled)
        return _soft_targets(algo, hyperparams)

    sample._sb3_sparse = True  # type: ignore[attr-defined]
    return sample


def _wrap_converter(
    algo: str, converter: Callable[[dict[str, Any]], dict[str, Any]]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    @functools.wraps(converter)
    def convert(params: dict[str, Any]) -> dict[str, Any]:
        hyperparams = converter({k: v for k, v in params.items() if k not in SPARSE_PARAMS})
        sparse = sparse_policy_kwargs(params)
        if sparse:
            hyperparams["policy_kwargs"] = {**(hyperparams.get("policy_kwargs") or {}), **sparse}
        return _soft_targets(algo, hyperparams)

    convert._sb3_sparse = True  # type: ignore[attr-defined]
    return convert


def _evaluated_policy_kwargs(value: Any) -> dict[str, Any]:
    """The file's ``policy_kwargs``, evaluated as rl-zoo3 does (strings in its module's namespace)."""
    if isinstance(value, str):
        from rl_zoo3 import exp_manager

        return eval(value, vars(exp_manager))
    return dict(value or {})


def install() -> None:
    """Patch rl-zoo3 (idempotent): merging samplers and converters, sparse sampling, ``--trial-id`` merge."""
    from rl_zoo3 import hyperparams_opt
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS

    for algo in SPARSE_ALGOS:
        sampler = hyperparams_opt.HYPERPARAMS_SAMPLER.get(algo)
        if sampler is not None and not getattr(sampler, "_sb3_sparse", False):
            hyperparams_opt.HYPERPARAMS_SAMPLER[algo] = _wrap_sampler(algo, sampler)
        converter = hyperparams_opt.HYPERPARAMS_CONVERTER.get(algo)
        if converter is not None and not getattr(converter, "_sb3_sparse", False):
            hyperparams_opt.HYPERPARAMS_CONVERTER[algo] = _wrap_converter(algo, converter)

    if getattr(ExperimentManager.objective, "_sb3_sparse", False):
        return
    objective = ExperimentManager.objective
    read_hyperparameters = ExperimentManager.read_hyperparameters

    @functools.wraps(objective)
    def sparse_objective(self: ExperimentManager, trial: optuna.Trial) -> float:
        base = self._hyperparams.get("policy_kwargs") or {}
        sparse = _is_sparse_policy(self._hyperparams.get("policy"), ALGOS.get(self.algo))
        token = _TRIAL_BASE.set((base, sparse))
        try:
            return objective(self, trial)
        finally:
            _TRIAL_BASE.reset(token)

    @functools.wraps(read_hyperparameters)
    def sparse_read_hyperparameters(self: ExperimentManager) -> tuple[dict[str, Any], dict[str, Any]]:
        trial_id = self.trial_id
        if self.algo not in SPARSE_ALGOS or not (self.storage and self.study_name and trial_id is not None):
            return read_hyperparameters(self)
        # Read the file (and nothing else), then apply the trial merged into its policy_kwargs, then the
        # command line's --hyperparams: the zoo's order, without losing the file's policy_kwargs.
        custom = self.custom_hyperparams
        self.trial_id, self.custom_hyperparams = None, None
        try:
            hyperparams, _ = read_hyperparameters(self)
        finally:
            self.trial_id, self.custom_hyperparams = trial_id, custom
        print(f"Loading trial {trial_id} of study {self.study_name!r} (policy_kwargs merged by sb3_sparse.zoo)")
        trial_hyperparams = self.load_trial(self.storage, self.study_name, trial_id)
        base = _evaluated_policy_kwargs(hyperparams.get("policy_kwargs"))
        file_noise = {key: hyperparams[key] for key in ("noise_type", "noise_std") if key in hyperparams}
        hyperparams.update(trial_hyperparams)
        hyperparams["policy_kwargs"] = merge_policy_kwargs(base, trial_hyperparams.get("policy_kwargs"))
        if "noise_type" in hyperparams and hyperparams["noise_type"] is None:
            # The trial sampled no noise and so ran with the file's (the zoo's objective keeps it).
            del hyperparams["noise_type"]
            hyperparams.pop("noise_std", None)
            hyperparams.update(file_noise)
        if custom is not None:
            hyperparams.update(custom)
        saved = OrderedDict((key, hyperparams[key]) for key in sorted(hyperparams))
        print(f"Hyperparameters with trial {trial_id}: {dict(saved)}")
        return hyperparams, saved

    sparse_objective._sb3_sparse = True  # type: ignore[attr-defined]
    ExperimentManager.objective = sparse_objective  # type: ignore[method-assign]
    ExperimentManager.read_hyperparameters = sparse_read_hyperparameters  # type: ignore[method-assign]


install()
