"""Which algorithm a sparse policy is built for, and whether the policy fits it."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

SUPPORTED = "TD3, DDPG, SAC, DQN, PPO, A2C and sb3-contrib's QR-DQN, TQC and CrossQ"
_MAX_FRAMES = 24  # the algorithm's _setup_model is a few frames above the policy's __init__, the zoo's objective more
ZOO_FIX = (
    "rl-zoo3 sampled this trial without sb3-sparse's sampler, which replaces the file's sparse policy_kwargs "
    "(sb3_sparse was imported before rl_zoo3); pass --gym-packages sb3_sparse.zoo, or import sb3_sparse.zoo "
    "after rl_zoo3"
)


def calling_instance(cls: type) -> Any:
    """The nearest ``self`` up the call stack that is a ``cls``, or ``None``."""
    frame = inspect.currentframe()
    try:
        for _ in range(_MAX_FRAMES):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, cls):
                return candidate
        return None
    finally:
        del frame  # frames hold references to their locals


def calling_algorithm() -> BaseAlgorithm | None:
    """The SB3 algorithm whose ``_setup_model`` is building a policy right now, if any.

    Read from the call stack: the keyword arguments SB3 passes a policy do not tell the
    algorithms apart (SAC and every on-policy algorithm pass ``use_sde``; TD3, DDPG and DQN
    pass nothing of their own), but the algorithm object is the ``self`` of a calling frame.

    :return: the algorithm, or ``None`` when the policy is built directly.
    """
    return calling_instance(BaseAlgorithm)


def ensure_zoo_patch() -> None:
    """Under rl-zoo3, make sure its hyperparameter search keeps and samples the sparse settings.

    Importing sb3_sparse patches an already imported rl-zoo3 (``sb3_sparse/__init__.py``); this
    covers rl-zoo3 imported later: it patches now and, inside a search trial that was sampled
    unpatched, fails with the fix rather than train without the file's sparse settings.

    :raises RuntimeError: in an rl-zoo3 ``-optimize`` trial sampled without the sparse sampler.
    """
    zoo3 = sys.modules.get("rl_zoo3.exp_manager")
    if zoo3 is None or getattr(zoo3.ExperimentManager.objective, "_sb3_sparse", False):
        return
    from . import zoo

    zoo.install()
    manager = calling_instance(zoo3.ExperimentManager)
    if manager is not None and getattr(manager, "optimize_hyperparameters", False):
        raise RuntimeError(ZOO_FIX)


def check_algorithm(policy_class: type, algorithm: Any) -> None:
    """Fail with the right class's name when ``policy_class`` does not fit ``algorithm``.

    :param policy_class: the sparse policy class being built.
    :param algorithm: the algorithm building it (``None``: built directly, nothing to check).
    :raises TypeError: the policy belongs to another algorithm, or SB3/sb3-contrib's algorithm has no sparse policy.
    """
    if algorithm is None:
        return
    name = type(algorithm).__name__
    aliases = getattr(type(algorithm), "policy_aliases", {})
    sparse = [cls for cls in aliases.values() if isinstance(cls, type) and hasattr(cls, "algorithm_family")]
    if any(issubclass(policy_class, cls) for cls in sparse):
        return
    if not sparse and not type(algorithm).__module__.startswith(("stable_baselines3", "sb3_contrib")):
        return  # a user's own algorithm: it may well call the policy as TD3 or SAC do
    fits = getattr(policy_class, "fits", "another algorithm")
    if not sparse:
        raise TypeError(
            f"{policy_class.__name__} fits {fits}, not {name}; {name} has no sparse policy (sb3-sparse serves {SUPPORTED})"
        )
    right = aliases.get("SparseMlpPolicy", sparse[0])
    raise TypeError(f"{policy_class.__name__} fits {fits}, not {name}; {name} takes 'SparseMlpPolicy' ({right.__name__})")
