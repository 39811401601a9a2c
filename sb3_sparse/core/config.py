"""The sparse-training settings, the papers' presets, and their validation.

Every field is a ``policy_kwargs`` key of the sparse policies, so a saved model
carries the whole configuration.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from .distributions import DISTRIBUTIONS
from .methods import METHODS

DROP_SCHEDULES = ("constant", "cosine")
TARGET_RULES = ("magnitude", "online_mask")
INITS = ("dense", "sparse")
BACKEND_NAMES = ("masked", "sparse")
SPARSE_NEEDS_MOMENTS = (
    "backend='sparse' keeps optimizer state for active connections only, which is moment masking: "
    "mask_optimizer_moments must be True with it, got mask_optimizer_moments={value!r}"
)


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
    :param init: weights of the sparse layers at the start: ``"dense"`` (PyTorch's dense
        initialization times the mask, Sokar et al.'s code) or ``"sparse"`` (every active weight
        redrawn Glorot-uniform from its units' sparse fan-in and fan-out, Graesser et al.'s code;
        see :func:`sb3_sparse.core.initialization.sparse_init_`).
    :param backend: how sparse layers are stored: ``"masked"`` (dense weights plus a mask, any
        layer) or ``"sparse"`` (active connections only, as values at positions; Linear layers
        only). The sparse backend keeps optimizer state for active connections only, which is
        moment masking, so it requires ``mask_optimizer_moments=True``; the sparse policies set it
        for presets that leave it off (``static``: identical either way; ``ds-td3``/``ds-sac``:
        a regrown connection's second moment then restarts at 0) and refuse an explicit ``False``.
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
    init: str = "dense"
    backend: str = "masked"

    def __post_init__(self) -> None:
        self._to_python_scalars()
        _check_choice("method", self.method, tuple(METHODS))
        _check_choice("distribution", self.distribution, tuple(DISTRIBUTIONS))
        _check_choice("drop_schedule", self.drop_schedule, DROP_SCHEDULES)
        _check_choice("target_sparsity", self.target_sparsity, TARGET_RULES)
        _check_choice("init", self.init, INITS)
        _check_choice("backend", self.backend, BACKEND_NAMES)
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
        if self.backend == "sparse" and not self.mask_optimizer_moments:
            raise ValueError(SPARSE_NEEDS_MOMENTS.format(value=self.mask_optimizer_moments))

    def _to_python_scalars(self) -> None:
        """NumPy scalars (``np.float32(0.5)``, ``np.int64(50)``) become the Python numbers they equal.

        They are valid settings wherever Python numbers are; converting them first lets the checks
        below and everything downstream (``isinstance(..., int)``, saved ``policy_kwargs``) treat
        them alike, and error messages show ``5.0`` rather than ``np.float32(5.0)``.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = tuple(_python_scalar(v) for v in value)
            object.__setattr__(self, field.name, _python_scalar(value))

    @property
    def evolves(self) -> bool:
        """Whether the topology changes during training."""
        return METHODS[self.method].evolves

    def network_sparsity(self, role: str) -> float:
        """Sparsity of the ``"actor"`` or ``"critic"`` network."""
        specific = self.actor_sparsity if role == "actor" else self.critic_sparsity
        return self.sparsity if specific is None else specific


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


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
    "init": "sparse",  # init_masks.fixed_sparse_init = True in their SET and RigL configs
}
PRESETS |= {
    "dqn-rigl": _DQN_RIGL,
    "dqn-rigl-nobias": _DQN_RIGL | {"bias": False},
    "dqn-set": _DQN_RIGL | {"method": "set"},
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
# PPO on MuJoCo (Graesser et al. 2022; google-research/rigl, rigl/rl/tfagents/configs/
# ppo_mujoco_sparse_config.gin and ppo_mujoco_pruning_config.gin): ERK 90% over all layers
# including the outputs, fixed sparse init; masks updated every 250 gradient updates, drop 0.3
# cosine, last update at update 120,000 of 156,480 (0.767 of training); pruning from dense
# every 500 updates between updates 32,000 (0.2045) and 120,000.
_PPO_RIGL = _DQN_RIGL | {"update_interval": 250, "end_fraction": 0.767}
PRESETS |= {
    "ppo-rigl": _PPO_RIGL,
    "ppo-set": _PPO_RIGL | {"method": "set"},
    "ppo-static": _PPO_RIGL | {"method": "static"},
    "ppo-gmp": PRESETS["dqn-gmp"]
    | {"sparsity": 0.9, "update_interval": 500, "prune_start_fraction": 0.2045, "prune_end_fraction": 0.767},
}

DEFAULT_DROP_FRACTION = {"td3": 0.05, "sac": 0.1, "dqn": 0.3}
PRESET_ALIASES = {"set": "ds", "ds": "ds"}
# The algorithm families each preset was written for ("set"/"ds" follow PRESET_ALIASES).
PRESET_FAMILIES: dict[str, tuple[str, ...]] = {
    "static": ("td3", "sac", "dqn", "ppo"),
    "ds": ("td3", "sac"),
    "ds-td3": ("td3",),
    "ds-sac": ("sac",),
    "tows": ("td3", "sac"),
    "dqn-rigl": ("dqn",),
    "dqn-rigl-nobias": ("dqn",),
    "dqn-set": ("dqn",),
    "dqn-gmp": ("dqn",),
    "ppo-rigl": ("ppo",),
    "ppo-set": ("ppo",),
    "ppo-static": ("ppo",),
    "ppo-gmp": ("ppo",),
}
FAMILY_NAMES = {"td3": "TD3/DDPG", "sac": "SAC/TQC/CrossQ", "dqn": "DQN/QR-DQN", "ppo": "PPO/A2C"}
# Keyword arguments of the SB3 policy that a preset fills when the user did not: the papers'
# 256-256 hidden layers (Sokar et al., Grooten et al.; SB3's TD3 default is 400-300) and TowS's
# LeakyReLU. Activations are named by their ``torch.nn`` class. The network applies only to the
# policies whose paper used it (``paper_network``: TD3/DDPG, SAC, TQC), not to DQN or CrossQ.
PAPER_NET_ARCH = (256, 256)
PRESET_POLICY_DEFAULTS: dict[str, dict[str, Any]] = {
    "static": {"net_arch": PAPER_NET_ARCH},
    "ds-td3": {"net_arch": PAPER_NET_ARCH},
    "ds-sac": {"net_arch": PAPER_NET_ARCH},
    "ds": {"net_arch": PAPER_NET_ARCH},
    "tows": {"activation_fn": "LeakyReLU", "net_arch": PAPER_NET_ARCH},
}


def preset_policy_defaults(preset: str | None, paper_network: bool) -> dict[str, Any]:
    """The SB3 policy keyword arguments that ``preset`` fills when the user did not give them.

    :param preset: the preset name as given (aliases such as ``"set"`` included), or ``None``.
    :param paper_network: whether the policy takes the papers' ``net_arch`` (TD3/SAC-style policies).
    :return: fresh values (``activation_fn`` as a ``torch.nn`` class, ``net_arch`` as a list).
    """
    defaults = PRESET_POLICY_DEFAULTS.get(PRESET_ALIASES.get(preset or "", preset or ""), {})
    values: dict[str, Any] = {}
    for key, value in defaults.items():
        if key == "activation_fn":
            values[key] = getattr(nn, value)
        elif key == "net_arch" and paper_network:
            values[key] = list(value)
    return values


def resolve_config(preset: str | None, algo: str, overrides: dict[str, Any], owner: str | None = None) -> SparseConfig:
    """Build a :class:`SparseConfig` from a preset, the algorithm and user overrides.

    :param preset: ``None``, ``"static"``, ``"set"``/``"ds"`` (DS-TD3 or DS-SAC by ``algo``),
        ``"ds-td3"``, ``"ds-sac"`` or ``"tows"``.
    :param algo: ``"td3"``, ``"sac"`` or ``"dqn"`` (family), which picks the paper's defaults.
    :param overrides: explicit settings; ``None`` values mean "not given".
    :param owner: who asked, for error messages (``"SparseTD3Policy (TD3 and DDPG)"``).
    """
    unknown = set(overrides) - set(FIELDS)
    if unknown:
        raise TypeError(_unknown_message(sorted(unknown)[0], FIELDS))
    if preset is None:
        preset = "dqn-rigl" if algo == "dqn" else "ds"
    _check_preset_family(preset, algo, owner)
    preset = PRESET_ALIASES.get(preset, preset)
    if preset == "ds":
        preset = "ds-sac" if algo == "sac" else "ds-td3"
    given = {k: v for k, v in overrides.items() if v is not None}
    _check_lambdas_alone(given)
    values = {"drop_fraction": DEFAULT_DROP_FRACTION.get(algo, 0.05)} | PRESETS[preset] | given
    if values.get("backend") == "sparse" and "mask_optimizer_moments" not in given:
        values["mask_optimizer_moments"] = True  # what the sparse backend does by construction (see SparseConfig)
    if values.get("lambdas") is not None:
        values["lambdas"] = tuple(values["lambdas"])
    return SparseConfig(**values)


def presets_for(algo: str) -> list[str]:
    """The preset names (aliases included) written for the algorithm family ``algo``."""
    return sorted(name for name in set(PRESETS) | set(PRESET_ALIASES) if algo in _families(name))


def _families(preset: str) -> tuple[str, ...]:
    return PRESET_FAMILIES.get(PRESET_ALIASES.get(preset, preset), ())


def _check_preset_family(preset: str, algo: str, owner: str | None) -> None:
    """A preset holds one paper's values for one algorithm: another algorithm's preset is an error."""
    if preset not in PRESETS and preset not in PRESET_ALIASES:
        allowed = sorted(set(PRESETS) | set(PRESET_ALIASES))
        raise ValueError(f"Unknown preset={preset!r}; allowed: {allowed}")
    if algo in _families(preset):
        return
    written_for = " and ".join(FAMILY_NAMES[f] for f in _families(preset))
    who = owner or f"the {FAMILY_NAMES.get(algo, algo)} policy"
    raise ValueError(f"preset={preset!r} is for {written_for}; {who} takes preset in {presets_for(algo)}")


def _check_lambdas_alone(given: dict[str, Any]) -> None:
    """``lambdas`` fix every layer's count: a sparsity given with them would be silently ignored."""
    if given.get("lambdas") is None:
        return
    for name in ("sparsity", "actor_sparsity", "critic_sparsity"):
        if name in given:
            raise ValueError(
                f"lambdas={given['lambdas']!r} and {name}={_python_scalar(given[name])!r} were both given; "
                f"lambdas set every sparse layer's count, so pass either lambdas or {name}, not both"
            )


def _unknown_message(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown sparse setting {name!r}.{hint} Allowed: {list(allowed)}"
