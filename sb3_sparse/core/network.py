"""One sparse network as the controller sees it: its masked layers, optimizer and target."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .layers import MaskedLayerMixin, sparse_layers

# Optimizer state whose square root the update takes (Adam, AMSGrad, RMSprop).
SQRT_STATE_KEYS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")
SQRT_FLOOR = 1e-30


class TargetWeight(nn.Parameter):
    """A target network's weight that notices target updates.

    SB3's ``polyak_update`` writes through ``param.data``, which bumps no version
    counter; reading ``.data`` here raises a flag so the target rule runs before the
    target's next forward, exactly once per update and at no cost otherwise.
    """

    @property
    def data(self) -> torch.Tensor:  # type: ignore[override]
        self.__dict__["updated"] = True
        return super().data

    @data.setter
    def data(self, value: torch.Tensor) -> None:
        nn.Parameter.data.__set__(self, value)  # type: ignore[attr-defined]


class SparseNetwork:
    """One online network, its sparse layers, its optimizer and its optional target."""

    def __init__(self, name: str, online: nn.Module, target: nn.Module | None, clock: bool) -> None:
        self.name = name
        self.online = online
        self.target = target
        self.clock = clock
        named = sparse_layers(online)
        if not named:
            raise ValueError(f"network {name!r} has no sparse layer")
        self.layer_names = [n for n, _ in named]
        self.layers: list[MaskedLayerMixin] = [m for _, m in named]
        self.target_layers: list[MaskedLayerMixin] = []
        if target is not None:
            self.target_layers = [target.get_submodule(n) for n in self.layer_names]  # type: ignore[misc]
            for layer in self.target_layers:
                if not isinstance(layer.weight, TargetWeight):
                    layer.weight = TargetWeight(layer.weight.detach(), requires_grad=layer.weight.requires_grad)
        self.target_weights = [layer.weight for layer in self.target_layers]
        # Per target layer: TargetSupport (magnitude rule), True (online_mask rule, in sync) or
        # None (to be rebuilt: the online mask changed or state was loaded).
        self.target_index: list = [None] * len(self.target_layers)
        self.optimizer: torch.optim.Optimizer | None = None
        self.handles: list = []
        self.target_handle = None
        self.absent_cache: list[torch.Tensor] | None = None
        self.sqrt_guard: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self.epoch = 0  # clock // update_interval at this network's last topology update
        self.grad_scores: list[torch.Tensor] | None = None
        self.counts = [int(layer.weight_mask.sum().item()) for layer in self.layers]
        # Gradual pruning shrinks the counts towards these.
        self.final_counts = [getattr(layer, "final_count", c) for layer, c in zip(self.layers, self.counts, strict=True)]

    def masks(self) -> list[torch.Tensor]:
        # Looked up on every call: Module.to() replaces buffer objects.
        return [layer.weight_mask for layer in self.layers]

    def guard_addends(self, exact: bool) -> list[torch.Tensor]:
        """Per layer: what to add to the second moment at absent connections (see the controller)."""
        if self.absent_cache is None or self.absent_cache[0].device != self.layers[0].weight_mask.device:
            scale = 1.0 if exact else SQRT_FLOOR
            self.absent_cache = [(1.0 - m) * scale for m in self.masks()]
        return self.absent_cache

    def weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]

    def state_tensors(self, layer: MaskedLayerMixin) -> Iterator[torch.Tensor]:
        """Optimizer state shaped like ``layer.weight`` (Adam: ``exp_avg``, ``exp_avg_sq``)."""
        if self.optimizer is None:
            return iter(())
        state = self.optimizer.state.get(layer.weight, {})
        return (v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == layer.weight.shape)
