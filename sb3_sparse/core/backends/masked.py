"""The masked backend: dense weight storage plus a float ``weight_mask`` per layer.

Absent connections are weights held at exactly 0. Per optimizer step that costs a multiply
of the gradients by the masks (or, with moment masking, of weights and moments after the
step); the layer kernels themselves are in :mod:`sb3_sparse.core.topology`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..layers import MaskedLayerMixin
from ..topology import (
    DeviceTargetSupport,
    TargetSupport,
    copy_online_mask_,
    drop_smallest,
    grow_best,
    mask_state_,
    prune_to_magnitude_,
)
from .base import Backend, NonFiniteError, TargetWeight

# Optimizer state whose square root the update takes (Adam, AMSGrad, RMSprop).
SQRT_STATE_KEYS = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")
SQRT_FLOOR = 1e-30
FLOOR_RENEWAL = 100  # gradient updates between renewals of the second-moment floor (DS, static)
# State that carries past gradients into the update (Adam's first moment, SGD's momentum).
FIRST_MOMENT_KEYS = ("exp_avg", "momentum_buffer")
# Optimizers that leave an entry of a parameter exactly unchanged when its gradient and its
# FIRST_MOMENT_KEYS state are 0 and the weight there is 0 (weight decay included). Checked by
# exact type: a subclass may step differently.
MOMENT_SAFE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class MaskedBackend(Backend):
    """One network whose sparse layers are :class:`~sb3_sparse.core.layers.MaskedLayerMixin` layers."""

    def __init__(
        self, name: str, online: nn.Module, target: nn.Module | None, clock: bool, target_rule: str, **kwargs: Any
    ) -> None:
        super().__init__(name, online, target, clock, target_rule, **kwargs)
        for layer in self.target_layers:  # an update raises target_updated (see TargetWeight)
            if not isinstance(layer.weight, TargetWeight):
                layer.weight = TargetWeight(layer.weight.detach(), requires_grad=layer.weight.requires_grad)
            layer.weight.__dict__["network_flag"] = self.target_updated
        # Per target layer: TargetSupport (magnitude rule), True (online_mask rule, in sync) or
        # None (to be rebuilt: the online mask changed or state was loaded).
        self.target_index: list = [None] * len(self.target_layers)
        self.targets_synced = False  # every target layer's support equals its online layer's
        self.absent_cache: list[torch.Tensor] | None = None
        self.mask_moments = False

    # -- tensors --------------------------------------------------------------------------------

    def masks(self) -> list[torch.Tensor]:
        # Looked up on every call (Module.to() replaces buffer objects), straight from the
        # buffer dict: this runs on every optimizer step.
        return [layer._buffers["weight_mask"] for layer in self.layers]

    def weights(self) -> list[torch.Tensor]:
        return [layer._parameters["weight"] for layer in self.layers]

    def absent_floors(self) -> list[torch.Tensor]:
        """Per layer: ``SQRT_FLOOR`` at absent connections, 0 elsewhere (see :meth:`before_step`)."""
        if self.absent_cache is None or self.absent_cache[0].device != self.layers[0].weight_mask.device:
            self.absent_cache = [(1.0 - m) * SQRT_FLOOR for m in self.masks()]
        return self.absent_cache

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

    def target_watched(self) -> bool:
        return all(isinstance(t.weight, TargetWeight) for t in self.target_layers)

    # -- the topology --------------------------------------------------------------------------

    def active_count(self, i: int) -> int:
        return int(self.layers[i].weight_mask.sum().item())

    def size(self, i: int) -> int:
        return self.layers[i].weight.numel()

    def weight(self, i: int) -> torch.Tensor:
        return self.layers[i].weight

    def drop(self, i: int, n: int, scores: torch.Tensor) -> torch.Tensor:
        self.counts[i] -= n
        return drop_smallest(self.layers[i], n, scores)

    def grow(self, i: int, n: int, scores: torch.Tensor) -> torch.Tensor:
        self.counts[i] += n
        return grow_best(self.layers[i], n, scores)

    def mask_optimizer_state(self, i: int, everything: bool) -> None:
        # Without moment masking only the first moment goes (the second stays, as in the
        # papers' SET): that is what lets a moment-safe optimizer keep absent weights at 0.
        layer = self.layers[i]
        mask_state_(self.state_tensors(layer) if everything else self.first_moments(layer), layer.weight_mask)

    @torch.no_grad()
    def topology_changed(self, i: int) -> None:
        if i < len(self.target_layers):
            target = self.target_layers[i]
            if int(target.weight_mask.sum().item()) != self.counts[i]:  # pruning: the target follows at once
                prune_to_magnitude_(target, self.counts[i])
            self.target_index[i] = None
        self.targets_synced = False
        self.absent_cache = None

    @torch.no_grad()
    def apply_target_rule(self) -> None:
        if self.targets_synced:
            return  # target supports equal the online ones: an update keeps them so
        # Every layer, updated or not: the rule is idempotent (SB3 updates them all at once).
        for i, (target, online) in enumerate(zip(self.target_layers, self.layers, strict=False)):
            if self.target_rule == "online_mask":
                if self.target_index[i] is None:
                    copy_online_mask_(target, online)
                    self.target_index[i] = True  # in sync until the online mask changes
                continue
            index = self.target_index[i]
            if index is None or index.device != target.weight.device:
                if int(target.weight_mask.sum().item()) != self.counts[i]:
                    prune_to_magnitude_(target, self.counts[i])  # the online count changed (pruning)
                # NumPy on the CPU; elsewhere torch on the device, which never waits for it.
                support = TargetSupport if target.weight.is_cpu else DeviceTargetSupport
                index = self.target_index[i] = support(target, online)
            try:
                index.prune(target, online)
            except FloatingPointError:
                raise NonFiniteError(f"target layer {self.layer_names[i]!r}") from None
        self.targets_synced = all(index is True or (index is not None and index.in_sync) for index in self.target_index)

    def stored(self, layer: nn.Module) -> torch.Tensor:
        return layer.weight

    @torch.no_grad()
    def reload(self) -> None:
        for layer in self.layers + self.target_layers:
            layer.weight.mul_(layer.weight_mask)
        self.counts = [self.active_count(i) for i in range(len(self.layers))]
        self.target_index = [None] * len(self.target_layers)
        self.targets_synced = False
        self.absent_cache = None

    # -- the per-step work ---------------------------------------------------------------------

    def attach(self, optimizer: torch.optim.Optimizer, evolves: bool, mask_moments: bool) -> None:
        self.optimizer = optimizer
        self.mask_moments = mask_moments
        self.remask_weights = evolves and not mask_moments and type(optimizer) not in MOMENT_SAFE

    def gradients(self) -> list[torch.Tensor] | None:
        grads = [layer._parameters["weight"].grad for layer in self.layers]
        return None if any(g is None for g in grads) else grads

    def before_step(self, grads: list[torch.Tensor], clock: int) -> None:
        torch._foreach_mul_(grads, self.masks())
        if clock % FLOOR_RENEWAL == 0:
            self._floor_second_moments()

    def mask_after_step(self) -> None:
        # One fused multiply over weights and weight-shaped optimizer state, layer by layer
        # so that each mask is read while it is still in cache.
        tensors, masks = [], []
        for layer in self.layers:
            mask = layer.weight_mask
            tensors.append(layer.weight.detach())
            masks.append(mask)
            for state in self.state_tensors(layer):
                tensors.append(state)
                masks.append(mask)
        torch._foreach_mul_(tensors, masks)

    def remask(self) -> None:
        # An optimizer not known to leave a parameter alone when its gradient and first
        # moment are 0 (see MOMENT_SAFE) may move absent weights: put them back to 0.
        torch._foreach_mul_([w.detach() for w in self.weights()], self.masks())

    def _floor_second_moments(self) -> None:
        """Keep Adam from taking ``sqrt(0)`` at absent connections (moments unmasked).

        ``sqrt(0)`` is 5-8x slower than ``sqrt`` of a normal number on the AVX2 CPUs
        measured here (docs/benchmarks.md), and absent connections that never had a gradient
        have a second moment of 0. Their gradient and first moment are 0, so the update there
        is 0 whatever the denominator. A floor of 1e-30 leaves any second moment above ~1e-23
        bit-unchanged (it is below half an ulp) and keeps never-used positions at a normal
        float. It decays by beta2 per step (0.999**100 = 0.9), so it is renewed every
        FLOOR_RENEWAL updates. Tied to the saved clock, so a loaded model renews on the same
        updates; a network stepping every d updates (TD3's actor) renews every
        lcm(d, FLOOR_RENEWAL) updates, i.e. at most every FLOOR_RENEWAL own steps.
        (With moment masking the gradient is not masked, so the second moment is not 0 during
        the step and the post-step mask restores the exact 0.)
        """
        seconds, floors = [], []
        for layer, floor in zip(self.layers, self.absent_floors(), strict=True):
            state = self.optimizer.state.get(layer.weight) if self.optimizer is not None else None
            for key in SQRT_STATE_KEYS if state else ():
                if key in state:
                    seconds.append(state[key])
                    floors.append(floor)
        if seconds:
            torch._foreach_add_(seconds, floors)
