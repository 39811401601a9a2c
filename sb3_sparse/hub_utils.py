"""Helpers shared by the command line and the Hub packaging."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"td3": TD3, "ddpg": DDPG, "sac": SAC}


def algorithm_of(data: dict[str, Any]) -> type[BaseAlgorithm]:
    """The SB3 algorithm class a saved model's data belongs to (by its policy class)."""
    policy_class = data["policy_class"]
    family = getattr(policy_class, "algorithm_family", None)
    if family is None:
        raise TypeError(f"not a sparse model: policy {getattr(policy_class, '__name__', policy_class)}")
    if family == "td3" and "policy_delay" in data and data.get("target_policy_noise") is not None:
        return DDPG if data.get("policy_delay") == 1 and data.get("target_policy_noise") == 0.0 else TD3
    return ALGORITHMS[family]
