"""Sparse-training methods as compositions: what to drop, where to grow, how many, when.

A method names no representation: the controller asks the network's backend (see
:mod:`sb3_sparse.core.backends`) for weights and gradients, scores them with the method's
scorers, and tells the backend how many connections to drop and grow. Adding a method is one
:class:`Method` registered under a name (:func:`register_method`) plus, optionally, a preset
in :data:`sb3_sparse.core.config.PRESETS`; neither the controller nor a backend changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .schedules import cubic_sparsity_at, drop_fraction_at

if TYPE_CHECKING:
    from .config import SparseConfig


@dataclass(frozen=True)
class Scorer:
    """Scores every position of a layer: drop removes the lowest-scoring active positions,
    grow adds the highest-scoring absent ones.

    :param score: ``score(weight, dense_grad, generator)`` -> a tensor shaped like ``weight``.
        ``dense_grad`` is the network's own dense gradient of the update (``None`` unless
        ``needs_gradient``); ``generator`` is the controller's seeded topology generator.
    :param needs_gradient: whether the dense gradient must be kept at the optimizer step of
        a topology update (RigL), before the backend masks it.
    """

    score: Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
    needs_gradient: bool = False


def _random(weight: torch.Tensor, grad: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(weight.shape, generator=generator).to(weight.device)


MAGNITUDE = Scorer(lambda weight, grad, generator: weight.abs())  # SET/RigL/GMP drop: closest to zero first
RANDOM = Scorer(_random)  # SET growth: uniformly random absent positions


def _gradient(weight: torch.Tensor, grad: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    # No gradient was recorded at that step (a network whose step had none): grow at random.
    return grad.abs() if grad is not None else _random(weight, grad, generator)


GRADIENT = Scorer(_gradient, needs_gradient=True)  # RigL growth: largest dense gradient


# "How many": connections to drop from one layer at a topology update, given the settings,
# the training progress, the layer's active count, its final count and its dense size.
Amount = Callable[["SparseConfig", float, int, int, int], int]
# "When": whether a topology update that is due by the clock changes anything at this progress.
Window = Callable[["SparseConfig", float], bool]


def drop_fraction_amount(config: SparseConfig, progress: float, count: int, final: int, size: int) -> int:
    """SET/RigL: ``round(eta * active)`` on the drop schedule; a dense layer does not evolve.

    Not capped at the absent count: growth picks among the absent positions after the drop,
    just-dropped ones included, so there are always enough.
    """
    if count == size:
        return 0
    return round(drop_fraction_at(config.drop_fraction, config.drop_schedule, progress, config.end_fraction) * count)


def cubic_amount(config: SparseConfig, progress: float, count: int, final: int, size: int) -> int:
    """GMP: prune down to Zhu & Gupta's cubic schedule, from ``initial_sparsity`` to the final count."""
    final_density = final / size
    sparsity = cubic_sparsity_at(
        1.0 - max(1.0 - config.initial_sparsity, final_density),
        1.0 - final_density,
        progress,
        config.prune_start_fraction,
        config.prune_end_fraction,
    )
    return max(count - round((1.0 - sparsity) * size), 0)


def until_end(config: SparseConfig, progress: float) -> bool:
    return progress <= config.end_fraction


def from_prune_start(config: SparseConfig, progress: float) -> bool:
    return progress >= config.prune_start_fraction


@dataclass(frozen=True)
class Method:
    """One sparse-training method.

    :param drop: which active connections go (lowest scores first); ``None``: the topology is static.
    :param grow: where as many connections come back (highest scores among absent positions);
        ``None``: dropped connections never return and active counts shrink (pruning).
    :param amount: how many connections each layer drops per topology update.
    :param window: when, by training progress, topology updates change anything.
    """

    drop: Scorer | None = None
    grow: Scorer | None = None
    amount: Amount = drop_fraction_amount
    window: Window = until_end

    @property
    def evolves(self) -> bool:
        return self.drop is not None

    @property
    def needs_gradient(self) -> bool:
        return any(s is not None and s.needs_gradient for s in (self.drop, self.grow))


METHODS: dict[str, Method] = {
    "static": Method(),
    "set": Method(drop=MAGNITUDE, grow=RANDOM),
    "rigl": Method(drop=MAGNITUDE, grow=GRADIENT),
    "gmp": Method(drop=MAGNITUDE, amount=cubic_amount, window=from_prune_start),
}


def register_method(name: str, method: Method) -> None:
    """Make ``method`` available as ``SparseConfig(method=name)`` (and to presets)."""
    METHODS[name] = method
