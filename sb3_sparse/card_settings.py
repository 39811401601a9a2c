"""What the model card says about a run's sparse settings: the paper method's name, the settings that apply."""

from __future__ import annotations

from typing import Any

# Settings read only by some methods (see SparseConfig).
_EVOLVING = ("update_interval",)
_DROP_AND_GROW = ("drop_fraction", "drop_schedule", "end_fraction")
_PRUNING = ("initial_sparsity", "prune_start_fraction", "prune_end_fraction")
_SIZES = ("sparsity", "actor_sparsity", "critic_sparsity", "distribution")  # lambdas replace them
# Actor-critic algorithms whose SET variant is "DS-" (Sokar et al.'s Dynamic Sparse TD3/SAC).
_DS_ALGORITHMS = ("TD3", "DDPG", "SAC")
_PREFIXES = {"static": "Static", "rigl": "RigL", "gmp": "GMP"}


def method_name(report: dict[str, Any], algo_class_name: str) -> str:
    """The method as the papers name it: DS-TD3, TowS-SAC, Static-TD3, RigL-DQN, SET-DQN, GMP-QRDQN, ...

    :param report: :func:`sb3_sparse.model_card.sparsity_report` (``method`` and ``settings``).
    :param algo_class_name: the algorithm class name (``"TD3"``).
    :return: the name.
    """
    method = report["method"]
    if method == "set":
        if report["settings"].get("mask_optimizer_moments"):
            prefix = "TowS"  # Tan et al.: SET with optimizer moments masked
        else:
            prefix = "DS" if algo_class_name in _DS_ALGORITHMS else "SET"
    else:
        prefix = _PREFIXES.get(method, method)
    return f"{prefix}-{algo_class_name}"


def applicable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape this run: unset values and fields its method never reads are left out.

    :param settings: the run's :class:`sb3_sparse.SparseConfig` as a dict.
    :return: the settings to show, in their order.
    """
    method = settings.get("method")
    skip: set[str] = set()
    if method == "static":
        skip.update(_EVOLVING)
    if method not in ("set", "rigl"):
        skip.update(_DROP_AND_GROW)
    if method != "gmp":
        skip.update(_PRUNING)
    if settings.get("lambdas") is not None:
        skip.update(_SIZES)
    if not settings.get("dormant_interval"):
        skip.update(("dormant_interval", "dormant_threshold"))
    return {key: value for key, value in settings.items() if value is not None and key not in skip}
