"""What the controller needs from a layer representation: the backend interface.

A backend holds one network (its sparse layers, optimizer and optional target) in one
representation and implements the operations that touch that representation: active
counts, drop, grow, masking optimizer state, the target rule, and the per-step work that
keeps absent connections absent. The controller decides *when* and *how many*; a method
(:mod:`sb3_sparse.core.methods`) decides *which*; neither knows how connections are stored.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..layers import SparseLayer, sparse_layers, trained_parameter


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

    def __deepcopy__(self, memo: dict) -> TargetWeight:
        # nn.Parameter's deepcopy drops the instance dict: keep the flag, shared through ``memo``
        # with the copied network's other target weights and its backend.
        if id(self) not in memo:
            values = nn.Parameter.data.__get__(self)  # type: ignore[attr-defined]  (no flag raised)
            memo[id(self)] = copied = type(self)(values.clone(memory_format=torch.preserve_format), self.requires_grad)
            copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return memo[id(self)]


class NonFiniteError(FloatingPointError):
    """NaN or infinity where the topology would be chosen by it."""


class Backend(ABC):
    """One sparse network in one representation, with its optimizer and optional target.

    :param name: name used in logs and errors (``"actor"``, ``"critic"``, ``"q_net"``).
    :param online: the trained network.
    :param target: its target network (same layer names), or ``None``.
    :param clock: whether this network's optimizer steps count gradient updates.
    :param target_rule: ``"magnitude"`` or ``"online_mask"`` (see :meth:`apply_target_rule`).
    :param tau: returns the algorithm's current soft-update coefficient (a backend whose target
        rule needs it reads it when a target update starts), or ``None`` if unknown.
    """

    def __init__(
        self,
        name: str,
        online: nn.Module,
        target: nn.Module | None,
        clock: bool,
        target_rule: str,
        tau: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.online = online
        self.target = target
        self.clock = clock
        self.target_rule = target_rule
        self.tau = tau
        named = sparse_layers(online)
        if not named:
            raise ValueError(f"network {name!r} has no sparse layer")
        self.layer_names = [n for n, _ in named]
        self.layers: list[Any] = [m for _, m in named]
        self.target_layers: list[Any] = []
        self.target_updated = [False]  # raised when the target may have been updated (see the controller)
        if target is not None:
            self.target_layers = [target.get_submodule(n) for n in self.layer_names]
        self.optimizer: torch.optim.Optimizer | None = None
        self.handles: list = []
        self.target_handle = None
        self.load_handle = None
        self.remask_weights = False  # re-zero absent weights after every step (set with the optimizer)
        self.epoch = 0  # clock // update_interval at this network's last topology update
        self.last_step = 0  # the clock at this network's last optimizer step
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
    def stored(self, layer: nn.Module) -> torch.Tensor:
        """The tensor that holds ``layer``'s weights as this representation stores them."""

    def nonfinite(self) -> str | None:
        """Where a topology update would meet a non-finite value (weights, target weights or a
        kept dense gradient), e.g. ``"layer '2' (weights)"``; ``None`` if nowhere."""
        # Once per topology update: a pass over each tensor the update (or the target rule after it) ranks.
        for i, name in enumerate(self.layer_names):
            tensors = {"weights": self.stored(self.layers[i])}
            if self.dense_grads is not None:
                tensors["dense gradient"] = self.dense_grads[i]
            if i < len(self.target_layers):
                tensors["target weights"] = self.stored(self.target_layers[i])
            for what, tensor in tensors.items():
                if not bool(torch.isfinite(tensor).all()):
                    return f"layer {name!r} ({what})"
        return None

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

    # -- what a representation may add; these defaults suit dense weight storage ----------------

    def dense_gradients(self) -> list[torch.Tensor] | None:
        """Per layer, the dense weight-shaped gradient of this step (for a gradient scorer), or ``None``."""
        return self.gradients()

    def want_dense_gradient(self, wanted: bool) -> None:  # noqa: B027 - most representations have it anyway
        """Whether the coming optimizer steps need :meth:`dense_gradients` (a truly sparse layer must record them)."""

    def target_parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """What a target update (SB3's ``polyak_update`` over ``target.parameters()``) updates."""
        assert self.target is not None
        return nn.Module.parameters(self.target, recurse)

    def before_save(self) -> None:  # noqa: B027 - most representations have nothing to settle
        """Bring the tensors to the layout a checkpoint loads into, so a saved model and its loaded
        copy continue alike (the controller calls it before ``state_dict``)."""

    def target_watched(self) -> bool:
        """Whether target updates are noticed (the target rule's trigger is in place)."""
        return True

    def convert_loaded_state(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        """An optimizer ``load_state_dict`` pre-hook: state saved by either backend, in this one's layout.

        A checkpoint's optimizer state of a sparse layer is weight-shaped (masked backend) or one
        entry per active connection (sparse backend); the policy's layers are loaded first (SB3
        loads ``policy`` before the optimizers), so their positions say where each entry goes.
        """
        layers: dict[int, SparseLayer] = {id(trained_parameter(layer)): layer for layer in self.layers}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        saved = [i for group in state_dict["param_groups"] for i in group["params"]]
        state = dict(state_dict["state"])
        for param, key in zip(params, saved, strict=False):
            layer = layers.get(id(param))
            if layer is None or key not in state:
                continue
            state[key] = {
                name: layer.in_layout(value) if isinstance(value, torch.Tensor) and value.dim() > 0 else value
                for name, value in state[key].items()
            }
        return {**state_dict, "state": state}
