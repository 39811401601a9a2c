"""The sparse-training settings, the papers' presets, and their validation.

Every field is a ``policy_kwargs`` key of the sparse policies, so a saved model
carries the whole configuration.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from .distributions import DISTRIBUTIONS
from .methods import METHODS

DROP_SCHEDULES = ("constant", "cosine")
TARGET_RULES = ("magnitude", "online_mask")


@dataclass(frozen=True)
class SparseConfig:
    """Sparse-training settings.

    :param method: ``"static"`` (fixed random topology), ``"set"`` (drop smallest, grow random),
        ``"rigl"`` (drop smallest, grow by dense gradient) or ``"gmp"`` (gradual magnitude pruning).
    :param sparsity: fraction of zero weights per network (biases excluded), in [0, 1).
    :param actor_sparsity: overrides ``sparsity`` for the actor.
    :param critic_sparsity: overrides ``sparsity`` for the critic(s) / Q-network.
    :param distribution: how sparsity is spread over layers: ``"er"``, ``"erk"`` or ``"uniform"``.
    :param lambdas: ER lambda per sparse layer (Sokar et al.); overrides the sparsities.
    :param update_interval: gradient updates between topology updates (``e``), >= 1.
    :param drop_fraction: fraction of active connections changed per update (``eta``), in (0, 1).
    :param drop_schedule: ``"constant"`` or ``"cosine"``.
    :param end_fraction: fraction of training after which the topology is frozen, in (0, 1].
    :param mask_optimizer_moments: zero optimizer state (Adam moments) at absent connections (TowS).
    :param target_sparsity: ``"magnitude"`` (prune the target to the online count, Sokar et al.)
        or ``"online_mask"`` (multiply the target by the online mask).
    :param sparse_output_layer: make output layers sparse too (default: dense, as in the papers).
    :param bias: ``False`` removes the biases of the sparse layers.
    :param initial_sparsity: ``gmp`` only: sparsity at the start of pruning.
    :param prune_start_fraction: ``gmp`` only: training fraction where pruning starts.
    :param prune_end_fraction: ``gmp`` only: training fraction where the target sparsity is reached.
    :param dormant_interval: gradient updates between dormant-neuron measurements (0 = off).
    :param dormant_threshold: a neuron is dormant when its normalised score is <= this (tau).
    """

    method: str = "set"
    sparsity: float = 0.5
    actor_sparsity: float | None = None
    critic_sparsity: float | None = None
    distribution: str = "er"
    lambdas: tuple[float, ...] | None = None
    update_interval: int = 1000
    drop_fraction: float = 0.05
    drop_schedule: str = "constant"
    end_fraction: float = 1.0
    mask_optimizer_moments: bool = False
    target_sparsity: str = "magnitude"
    sparse_output_layer: bool = False
    bias: bool = True
    initial_sparsity: float = 0.0
    prune_start_fraction: float = 0.2
    prune_end_fraction: float = 0.8
    dormant_interval: int = 0
    dormant_threshold: float = 0.1

    def __post_init__(self) -> None:
        _check_choice("method", self.method, tuple(METHODS))
        _check_choice("distribution", self.distribution, tuple(DISTRIBUTIONS))
        _check_choice("drop_schedule", self.drop_schedule, DROP_SCHEDULES)
        _check_choice("target_sparsity", self.target_sparsity, TARGET_RULES)
        for name in ("sparsity", "actor_sparsity", "critic_sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not (_is_number(self.drop_fraction) and 0.0 < self.drop_fraction < 1.0):
            raise ValueError(f"drop_fraction must be in (0, 1), got {self.drop_fraction!r}")
        if not (isinstance(self.update_interval, int) and self.update_interval >= 1):
            raise ValueError(f"update_interval must be an integer >= 1, got {self.update_interval!r}")
        if not (isinstance(self.dormant_interval, int) and self.dormant_interval >= 0):
            raise ValueError(f"dormant_interval must be an integer >= 0, got {self.dormant_interval!r}")
        for name in ("end_fraction", "prune_end_fraction"):
            value = getattr(self, name)
            if not (_is_number(value) and 0.0 < value <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if not (_is_number(self.prune_start_fraction) and 0.0 <= self.prune_start_fraction < self.prune_end_fraction):
            raise ValueError(
                f"prune_start_fraction must be in [0, prune_end_fraction={self.prune_end_fraction}), "
                f"got {self.prune_start_fraction!r}"
            )
        if not (_is_number(self.dormant_threshold) and self.dormant_threshold >= 0):
            raise ValueError(f"dormant_threshold must be >= 0, got {self.dormant_threshold!r}")
        if self.lambdas is not None:
            if not all(_is_number(v) and v > 0 for v in self.lambdas):
                raise ValueError(f"lambdas must be positive numbers, got {self.lambdas!r}")
        for name in ("mask_optimizer_moments", "sparse_output_layer", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def evolves(self) -> bool:
        """Whether the topology changes during training."""
        return METHODS[self.method].evolves

    def network_sparsity(self, role: str) -> float:
        """Sparsity of the ``"actor"`` or ``"critic"`` network."""
        specific = self.actor_sparsity if role == "actor" else self.critic_sparsity
        return self.sparsity if specific is None else specific


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {name}={value!r}; allowed: {list(allowed)}")


FIELDS = tuple(f.name for f in dataclasses.fields(SparseConfig))

# Values from the papers' texts (see docs/methods.md for sources and deviations).
# "eta" differs between TD3 (0.05) and SAC (0.1) in Sokar et al.; the policy
# passes its algorithm so "set" resolves to the right one.
PRESETS: dict[str, dict[str, Any]] = {
    "static": {"method": "static", "sparsity": 0.5, "distribution": "er"},
    "ds-td3": {"method": "set", "sparsity": 0.5, "distribution": "er", "update_interval": 1000, "drop_fraction": 0.05},
    "ds-sac": {"method": "set", "sparsity": 0.5, "distribution": "er", "update_interval": 1000, "drop_fraction": 0.1},
    "tows": {
        "method": "set",
        "sparsity": 0.9,
        "distribution": "er",
        "update_interval": 1000,
        "mask_optimizer_moments": True,
    },
}
# DQN on Atari (Graesser et al. 2022, the setting "A Closer Look at Sparse Training in Deep RL"
# builds on): ERK over all layers, every 5000 updates, RigL drop 0.3 cosine to 80% of training;
# pruning from dense to 95% between 20% and 80% of training.
_DQN_RIGL = {
    "method": "rigl",
    "sparsity": 0.9,
    "distribution": "erk",
    "sparse_output_layer": True,
    "update_interval": 5000,
    "drop_fraction": 0.3,
    "drop_schedule": "cosine",
    "end_fraction": 0.8,
}
PRESETS |= {
    "dqn-rigl": _DQN_RIGL,
    "dqn-rigl-nobias": _DQN_RIGL | {"bias": False},
    "dqn-gmp": {
        "method": "gmp",
        "sparsity": 0.95,
        "distribution": "erk",
        "sparse_output_layer": True,
        "update_interval": 5000,
        "initial_sparsity": 0.0,
        "prune_start_fraction": 0.2,
        "prune_end_fraction": 0.8,
    },
}
DEFAULT_DROP_FRACTION = {"td3": 0.05, "sac": 0.1, "dqn": 0.3}
PRESET_ALIASES = {"set": "ds", "ds": "ds"}
# Keyword arguments of the SB3 policy that a preset fills when the user did not.
PRESET_POLICY_DEFAULTS: dict[str, dict[str, str]] = {"tows": {"activation_fn": "LeakyReLU"}}


def resolve_config(preset: str | None, algo: str, overrides: dict[str, Any]) -> SparseConfig:
    """Build a :class:`SparseConfig` from a preset, the algorithm and user overrides.

    :param preset: ``None``, ``"static"``, ``"set"``/``"ds"`` (DS-TD3 or DS-SAC by ``algo``),
        ``"ds-td3"``, ``"ds-sac"`` or ``"tows"``.
    :param algo: ``"td3"``, ``"sac"`` or ``"dqn"`` (family), which picks the paper's defaults.
    :param overrides: explicit settings; ``None`` values mean "not given".
    """
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise TypeError(_unknown_message(sorted(unknown)[0], FIELDS))
    if preset is None:
        preset = "dqn-rigl" if algo == "dqn" else "ds"
    preset = PRESET_ALIASES.get(preset, preset)
    if preset == "ds":
        preset = "ds-sac" if algo == "sac" else "ds-td3"
    if preset not in PRESETS:
        allowed = sorted(set(PRESETS) | set(PRESET_ALIASES))
        raise ValueError(f"Unknown preset={preset!r}; allowed: {allowed}")
    values = {"drop_fraction": DEFAULT_DROP_FRACTION.get(algo, 0.05)} | PRESETS[preset]
    values |= {k: v for k, v in overrides.items() if v is not None}
    if values.get("lambdas") is not None:
        values["lambdas"] = tuple(values["lambdas"])
    return SparseConfig(**values)


def _unknown_message(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown sparse setting {name!r}.{hint} Allowed: {list(allowed)}"
