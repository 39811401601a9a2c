"""One sparse network as the controller sees it: its masked layers, optimizer and target."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .layers import MaskedLayerMixin, sparse_layers

# Optimizer state whose square root the update takes (Adam, AMSGrad, RMSprop).
SQRT_STATE_KEYS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")
SQRT_FLOOR = 1e-30
# State that carries past gradients into the update (Adam's first moment, SGD's momentum).
FIRST_MOMENT_KEYS = ("exp_avg", "momentum_buffer")
# Optimizers that leave an entry of a parameter exactly unchanged when its gradient and its
# FIRST_MOMENT_KEYS state are 0 and the weight there is 0 (weight decay included). Checked by
# exact type: a subclass may step differently.
MOMENT_SAFE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class TargetWeight(nn.Parameter):
    """A target network's weight that notices target updates.

    SB3's ``polyak_update`` writes through ``param.data``, which bumps no version
    counter; reading ``.data`` here raises a flag so the target rule runs before the
    target's next forward, exactly once per update and at no cost otherwise.
    """

    @property
    def data(self) -> torch.Tensor:  # type: ignore[override]
        self.__dict__["network_flag"][0] = True  # shared by the network's target weights: one check per forward
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
        self.target_updated = [False]  # raised by any of this network's TargetWeight on update
        if target is not None:
            self.target_layers = [target.get_submodule(n) for n in self.layer_names]  # type: ignore[misc]
            for layer in self.target_layers:
                if not isinstance(layer.weight, TargetWeight):
                    layer.weight = TargetWeight(layer.weight.detach(), requires_grad=layer.weight.requires_grad)
                layer.weight.__dict__["network_flag"] = self.target_updated
        # Per target layer: TargetSupport (magnitude rule), True (online_mask rule, in sync) or
        # None (to be rebuilt: the online mask changed or state was loaded).
        self.target_index: list = [None] * len(self.target_layers)
        self.targets_synced = False  # every target layer's support equals its online layer's
        self.optimizer: torch.optim.Optimizer | None = None
        self.handles: list = []
        self.target_handle = None
        self.remask_weights = False  # re-zero absent weights after every step (set with the optimizer)
        self.absent_cache: list[torch.Tensor] | None = None
        self.epoch = 0  # clock // update_interval at this network's last topology update
        self.grad_scores: list[torch.Tensor] | None = None
        self.counts = [int(layer.weight_mask.sum().item()) for layer in self.layers]
        # Gradual pruning shrinks the counts towards these.
        self.final_counts = [getattr(layer, "final_count", c) for layer, c in zip(self.layers, self.counts, strict=True)]

    def masks(self) -> list[torch.Tensor]:
        # Looked up on every call (Module.to() replaces buffer objects), straight from the
        # buffer dict: this runs on every optimizer step.
        return [layer._buffers["weight_mask"] for layer in self.layers]

    def absent_floors(self) -> list[torch.Tensor]:
        """Per layer: ``SQRT_FLOOR`` at absent connections, 0 elsewhere (see the controller)."""
        if self.absent_cache is None or self.absent_cache[0].device != self.layers[0].weight_mask.device:
            self.absent_cache = [(1.0 - m) * SQRT_FLOOR for m in self.masks()]
        return self.absent_cache

    def weights(self) -> list[torch.Tensor]:
        return [layer._parameters["weight"] for layer in self.layers]

    def state_tensors(self, layer: MaskedLayerMixin) -> Iterator[torch.Tensor]:
        """Optimizer state shaped like ``layer.weight`` (Adam: ``exp_avg``, ``exp_avg_sq``)."""
        if self.optimizer is None:
            return iter(())
        state = self.optimizer.state.get(layer.weight, {})
        return (v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == layer.weight.shape)

    def first_moments(self, layer: MaskedLayerMixin) -> Iterator[torch.Tensor]:
        """The ``FIRST_MOMENT_KEYS`` state of ``layer.weight``."""
        state = self.optimizer.state.get(layer.weight, {}) if self.optimizer is not None else {}
        return (state[key] for key in FIRST_MOMENT_KEYS if key in state)

    def masked_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Weights and weight-shaped optimizer state, each paired with its layer's mask."""
        tensors, masks = [], []
        for layer in self.layers:
            mask = layer.weight_mask
            tensors.append(layer.weight.detach())
            masks.append(mask)
            for state in self.state_tensors(layer):
                tensors.append(state)
                masks.append(mask)
        return tensors, masks
