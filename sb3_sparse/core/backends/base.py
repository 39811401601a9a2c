"""What the controller needs from a layer representation: the backend interface.

A backend holds one network (its sparse layers, optimizer and optional target) in one
representation and implements the operations that touch that representation: active
counts, drop, grow, masking optimizer state, the target rule, and the per-step work that
keeps absent connections absent. The controller decides *when* and *how many*; a method
(:mod:`sb3_sparse.core.methods`) decides *which*; neither knows how connections are stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ..layers import MaskedLayerMixin, sparse_layers


class TargetWeight(nn.Parameter):
    """A target network's weight that notices target updates.

    SB3's ``polyak_update`` writes through ``param.data``, which bumps no version
    counter; reading ``.data`` here raises a flag so the target rule runs before the
    target's next forward or next update, once per update and at no cost otherwise.
    """

    @property
    def data(self) -> torch.Tensor:  # type: ignore[override]
        self.__dict__["network_flag"][0] = True  # shared by the network's target weights: one check per forward
        return super().data

    @data.setter
    def data(self, value: torch.Tensor) -> None:
        nn.Parameter.data.__set__(self, value)  # type: ignore[attr-defined]


class NonFiniteError(FloatingPointError):
    """NaN or infinity where the topology would be chosen by it."""


class Backend(ABC):
    """One sparse network in one representation, with its optimizer and optional target.

    :param name: name used in logs and errors (``"actor"``, ``"critic"``, ``"q_net"``).
    :param online: the trained network.
    :param target: its target network (same layer names), or ``None``.
    :param clock: whether this network's optimizer steps count gradient updates.
    :param target_rule: ``"magnitude"`` or ``"online_mask"`` (see :meth:`apply_target_rule`).
    """

    def __init__(self, name: str, online: nn.Module, target: nn.Module | None, clock: bool, target_rule: str) -> None:
        self.name = name
        self.online = online
        self.target = target
        self.clock = clock
        self.target_rule = target_rule
        named = sparse_layers(online)
        if not named:
            raise ValueError(f"network {name!r} has no sparse layer")
        self.layer_names = [n for n, _ in named]
        self.layers: list[MaskedLayerMixin] = [m for _, m in named]
        self.target_layers: list[MaskedLayerMixin] = []
        self.target_updated = [False]  # raised by any of this network's TargetWeight on update
        if target is not None:
            self.target_layers = [target.get_submodule(n) for n in self.layer_names]  # type: ignore[misc]
            for layer in self.target_layers:
                if not isinstance(layer.weight, TargetWeight):
                    layer.weight = TargetWeight(layer.weight.detach(), requires_grad=layer.weight.requires_grad)
                layer.weight.__dict__["network_flag"] = self.target_updated
        self.optimizer: torch.optim.Optimizer | None = None
        self.handles: list = []
        self.target_handle = None
        self.remask_weights = False  # re-zero absent weights after every step (set with the optimizer)
        self.epoch = 0  # clock // update_interval at this network's last topology update
        self.dense_grads: list[torch.Tensor] | None = None  # kept for a gradient scorer at a topology update
        self.counts = [self.active_count(i) for i in range(len(self.layers))]
        # Gradual pruning shrinks the counts towards these.
        self.final_counts = [getattr(layer, "final_count", c) for layer, c in zip(self.layers, self.counts, strict=True)]

    # -- the topology --------------------------------------------------------------------------

    @abstractmethod
    def active_count(self, i: int) -> int:
        """Number of connections that exist in layer ``i``, read from the representation."""

    @abstractmethod
    def size(self, i: int) -> int:
        """Number of possible connections of layer ``i`` (its dense size)."""

    @abstractmethod
    def weight(self, i: int) -> torch.Tensor:
        """The weights of layer ``i`` as the method's scorers see them."""

    @abstractmethod
    def drop(self, i: int, n: int, scores: torch.Tensor) -> torch.Tensor:
        """Remove the ``n`` active connections of layer ``i`` with the lowest ``scores``;
        return their flat positions. ``counts[i]`` follows."""

    @abstractmethod
    def grow(self, i: int, n: int, scores: torch.Tensor) -> torch.Tensor:
        """Add the ``n`` absent connections of layer ``i`` with the highest ``scores``, at
        weight exactly 0; return their flat positions. ``counts[i]`` follows."""

    @abstractmethod
    def mask_optimizer_state(self, i: int, everything: bool) -> None:
        """Zero layer ``i``'s optimizer state at absent connections: all weight-shaped state
        (``everything``, moment masking) or the first moment only."""

    @abstractmethod
    def topology_changed(self, i: int) -> None:
        """Layer ``i`` has its new topology: a target whose count is now larger follows at once."""

    @abstractmethod
    def apply_target_rule(self) -> None:
        """Bring the target to its rule after a target update (idempotent); raise
        :class:`NonFiniteError`, naming the layer, rather than rank non-finite values."""

    @abstractmethod
    def nonfinite(self) -> str | None:
        """Where a topology update would meet a non-finite value (weights, target weights or a
        kept dense gradient), e.g. ``"layer '2' (weights)"``; ``None`` if nowhere."""

    @abstractmethod
    def reload(self) -> None:
        """Rebuild derived state after a checkpoint was loaded into the tensors."""

    # -- the per-step work that keeps absent connections absent ---------------------------------

    @abstractmethod
    def attach(self, optimizer: torch.optim.Optimizer, evolves: bool, mask_moments: bool) -> None:
        """Use ``optimizer``; set ``remask_weights`` if, evolving without moment masking, it may move absent weights."""

    @abstractmethod
    def gradients(self) -> list[torch.Tensor] | None:
        """The sparse layers' weight gradients, or ``None`` if any is missing."""

    @abstractmethod
    def before_step(self, grads: list[torch.Tensor], clock: int) -> None:
        """Without moment masking, before the optimizer step: keep absent connections from
        updating. ``clock`` is the controller's update counter after this update."""

    @abstractmethod
    def mask_after_step(self) -> None:
        """With moment masking, after the optimizer step: zero weights and optimizer state at absent connections."""

    @abstractmethod
    def remask(self) -> None:
        """After the step of an optimizer that may move absent weights (``remask_weights``): re-zero them."""
