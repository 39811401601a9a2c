"""Helpers shared by the command line and the Hub packaging."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

# Algorithm family of a sparse policy -> SB3 algorithm (fallback when no alias table names the policy).
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"td3": TD3, "ddpg": DDPG, "sac": SAC, "dqn": DQN}


def known_algorithms() -> list[type[BaseAlgorithm]]:
    """SB3's off-policy algorithms, PPO and A2C and, when installed, sb3-contrib's (QR-DQN, TQC, CrossQ)."""
    algorithms: list[type[BaseAlgorithm]] = [TD3, DDPG, SAC, DQN, PPO, A2C]
    try:
        import sb3_contrib
    except ImportError:  # pragma: no cover - sb3-contrib is optional
        return algorithms
    for name in ("QRDQN", "TQC", "CrossQ"):
        if hasattr(sb3_contrib, name):
            algorithms.append(getattr(sb3_contrib, name))
    return algorithms


def algorithm_of(data: dict[str, Any]) -> type[BaseAlgorithm]:
    """The algorithm class a saved model's data belongs to (by its sparse policy class).

    :param data: the ``data`` of a saved model (``load_from_zip_file``).
    :return: the algorithm class, e.g. ``TD3``.
    :raises TypeError: when the model's policy is not a sparse one.
    """
    policy_class = data["policy_class"]
    family = getattr(policy_class, "algorithm_family", None)
    if family is None:
        raise TypeError(f"not a sparse model (policy {getattr(policy_class, '__name__', policy_class)})")
    matches = [algo for algo in known_algorithms() if policy_class in algo.policy_aliases.values()]
    if TD3 in matches or DDPG in matches:  # TD3 and DDPG share their alias table
        # SB3's DDPG is TD3 with one critic, no policy delay and target noise clipped to 0.
        ddpg = (data.get("policy_delay"), data.get("target_noise_clip"), (data.get("policy_kwargs") or {}).get("n_critics"))
        return DDPG if ddpg == (1, 0.0, 1) else TD3
    if PPO in matches and A2C in matches:  # they share the sparse actor-critic policies; only PPO clips
        return PPO if "clip_range" in data else A2C
    if matches:
        return matches[0]
    return ALGORITHMS[family]


def zoo_name(algorithm: type[BaseAlgorithm]) -> str:
    """rl-zoo3's name of an algorithm class (``TD3`` -> ``"td3"``, ``QRDQN`` -> ``"qrdqn"``)."""
    return algorithm.__name__.lower()
