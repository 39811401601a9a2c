"""The sparse backend: every sparse layer is a :class:`~sb3_sparse.core.sparse_layer.SparseLinear`.

Only active connections exist, in the layers, their gradients and the optimizer state, so
nothing is masked per step: optimizer state for active connections only is moment masking
(TowS) by construction. A topology update with a constant count reuses the dropped slots for
the grown positions (values and every optimizer state entry at 0), then sorts the slots by
position, permuting the values and every values-shaped state tensor in place, so the
Parameter and the optimizer's references to it never change. Pruning (fewer connections)
builds a smaller Parameter and hands it, with the kept entries' state, to the optimizer.

Scores are dense, as the methods' scorers define them: at a topology update each layer's
dense weight is built once (and RigL's dense gradient recorded on that step only), and the
positions are chosen by the same function as the masked backend's, so both backends make the
same choices from the same weights and draw the same random numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..sparse_layer import SparseLinear
from ..topology import top_positions
from .base import Backend, NonFiniteError, TargetWeight
from .sparse_target import StagedTarget


class SparseBackend(Backend):
    """One network whose sparse layers are :class:`~sb3_sparse.core.sparse_layer.SparseLinear` layers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.free: dict[int, torch.Tensor] = {}  # per layer: slots dropped at this topology update, not yet refilled
        super().__init__(*args, **kwargs)
        self.params = [layer.values for layer in self.layers]  # the Parameters the optimizer holds
        # Per target layer: whether its positions equal the online layer's (then a target update
        # is SB3's own polyak update of the target's values and the rule has nothing to do).
        self.synced: list[bool | None] = [None] * len(self.target_layers)
        # Per target layer out of sync: what target updates update (see StagedTarget).
        self.staged: list[StagedTarget | None] = [None] * len(self.target_layers)
        self.staging_tau = 1.0  # tau when the last target update started

    # -- tensors --------------------------------------------------------------------------------

    def state_tensors(self, layer: SparseLinear) -> Iterator[torch.Tensor]:
        """Optimizer state shaped like ``layer.values`` (Adam: ``exp_avg``, ``exp_avg_sq``)."""
        values = layer.values
        state = self.optimizer.state.get(values, {}) if self.optimizer is not None else {}
        return (v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == values.shape)

    def _mask(self, i: int) -> torch.Tensor:
        """Layer ``i``'s dense mask without the slots dropped at this topology update."""
        layer = self.layers[i]
        mask = layer.dense_mask()
        if i in self.free:
            mask.view(-1)[layer.weight_positions[self.free[i]].long()] = 0.0
        return mask

    # -- the topology --------------------------------------------------------------------------

    def active_count(self, i: int) -> int:
        free = self.free.get(i)
        return self.layers[i].values.numel() - (0 if free is None else free.numel())

    def size(self, i: int) -> int:
        return self.layers[i].n_possible()

    def weight(self, i: int) -> torch.Tensor:
        return self.layers[i].to_dense_weight()  # once per layer and topology update; dropped slots are 0

    @torch.no_grad()
    def drop(self, i: int, n: int, scores: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        dropped = top_positions(scores, self._mask(i), n, largest=False)
        slots = torch.searchsorted(layer.weight_positions.long(), dropped)
        layer.values[slots] = 0.0
        self.free[i] = torch.cat([self.free[i], slots]) if i in self.free else slots
        self.counts[i] -= n
        return dropped

    @torch.no_grad()
    def grow(self, i: int, n: int, scores: torch.Tensor) -> torch.Tensor:
        layer, free = self.layers[i], self.free.get(i)
        if free is None or free.numel() < n:
            raise RuntimeError(f"layer {self.layer_names[i]!r}: the sparse backend grows only into dropped slots")
        grown = top_positions(scores, 1.0 - self._mask(i), n, largest=True)
        slots = free[:n]
        if free.numel() > n:
            self.free[i] = free[n:]
        else:
            del self.free[i]
        layer.weight_positions[slots] = grown.to(torch.int32)
        layer.values[slots] = 0.0
        for state in self.state_tensors(layer):
            state[slots] = 0.0
        self.counts[i] += n
        return grown

    @torch.no_grad()
    def mask_optimizer_state(self, i: int, everything: bool) -> None:
        # Dropped slots' state goes entirely: optimizer state for active connections only.
        if i in self.free:
            for state in self.state_tensors(self.layers[i]):
                state[self.free[i]] = 0.0

    @torch.no_grad()
    def topology_changed(self, i: int) -> None:
        layer = self.layers[i]
        if i in self.free:  # pruned: a smaller Parameter
            keep = torch.ones(layer.values.numel(), dtype=torch.bool, device=layer.values.device)
            keep[self.free.pop(i)] = False
            old = layer.values
            self._replace_parameter(i, layer.set_topology_(layer.weight_positions[keep].clone(), old[keep].clone()), keep)
        else:  # slots refilled out of order: sort them, in place
            order = torch.argsort(layer.weight_positions)
            if not bool((order == torch.arange(order.numel(), device=order.device)).all()):
                layer.weight_positions.copy_(layer.weight_positions[order])
                layer.values.copy_(layer.values[order])
                for state in self.state_tensors(layer):
                    state.copy_(state[order])
        if i < len(self.target_layers):
            staged, target = self.staged[i], self.target_layers[i]
            if staged is not None and staged.updated[0]:
                self._apply_rule(i, staged)  # an update not yet followed by its rule: on the old positions
            target.compact_()
            if target.values.numel() != self.counts[i]:  # pruning: the target follows at once
                kept = torch.topk(target.values.detach().abs(), self.counts[i], sorted=False).indices.sort().values
                target.set_topology_(target.weight_positions[kept].clone(), target.values.detach()[kept].clone())
            self.synced[i] = None
            self.staged[i] = None

    def _replace_parameter(self, i: int, new: nn.Parameter, keep: torch.Tensor | None = None) -> None:
        """Give the optimizer ``new`` in place of layer ``i``'s old values (state kept at ``keep``, if given)."""
        old, self.params[i] = self.params[i], new
        if self.optimizer is None or old is new:
            return
        for group in self.optimizer.param_groups:
            group["params"] = [new if p is old else p for p in group["params"]]
        state = self.optimizer.state.pop(old, None)
        if state and keep is not None:
            self.optimizer.state[new] = {
                k: v[keep].clone() if isinstance(v, torch.Tensor) and v.shape == old.shape else v for k, v in state.items()
            }

    # -- the target rule ---------------------------------------------------------------------------

    def _synced(self, i: int) -> bool:
        if self.synced[i] is None:
            online, target = self.layers[i].weight_positions, self.target_layers[i].weight_positions
            self.synced[i] = online.shape == target.shape and bool(torch.equal(online, target))
        return bool(self.synced[i])

    def target_parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The target's parameters, each out-of-sync sparse layer's values replaced by its
        :class:`StagedTarget` tensor (the target's values at the online positions), which SB3's
        polyak update moves like any parameter; :meth:`apply_target_rule` brings it back."""
        assert self.target is not None
        # Staged at the first next(), as SB3's update starts; not a no_grad generator, which
        # would enter and leave no_grad at every yield.
        replaced = self._staged_parameters()
        for param in nn.Module.parameters(self.target, recurse):
            yield replaced.get(id(param), param)

    @torch.no_grad()
    def _staged_parameters(self) -> dict[int, TargetWeight]:
        """Per out-of-sync layer (by ``id`` of its values), the staging tensor a target update moves."""
        replaced: dict[int, TargetWeight] = {}
        for i, (target, online) in enumerate(zip(self.target_layers, self.layers, strict=False)):
            if self._synced(i):
                continue
            if self.staged[i] is None:
                self.staged[i] = StagedTarget(target, online.weight_positions)
            replaced[id(target.values)] = self.staged[i].staging
        if replaced:
            if self.target_rule == "magnitude":
                assert self.tau is not None, "the controller hands every backend its tau source"
                self.staging_tau = float(self.tau())  # read now: SB3 may change it around an update
            self.target_updated[0] = True
        return replaced

    @torch.no_grad()
    def apply_target_rule(self) -> None:
        for i, staged in enumerate(self.staged):
            if staged is not None and staged.updated[0]:
                self._apply_rule(i, staged)

    def _apply_rule(self, i: int, staged: StagedTarget) -> None:
        staged.updated[0] = False
        target = self.target_layers[i]
        if self.target_rule == "online_mask":
            staged.online_mask(target)
            changed = True
        else:
            try:
                changed = staged.magnitude(target, self.staging_tau)
            except FloatingPointError:
                raise NonFiniteError(f"target layer {self.layer_names[i]!r}") from None
        if changed:
            self.staged[i] = None
            self.synced[i] = None

    def stored(self, layer: nn.Module) -> torch.Tensor:
        return layer.values

    def before_save(self) -> None:
        # A staged target holds explicit zeros where connections left since it was staged; a
        # loaded copy holds its support alone: both restage from the support alone.
        for i, target in enumerate(self.target_layers):
            target.compact_()
            self.staged[i] = None
            self.synced[i] = None

    def reload(self) -> None:
        for i, layer in enumerate(self.layers):
            self._replace_parameter(i, layer.values)  # a checkpoint of another size gave it a new Parameter
        self.counts = [self.active_count(i) for i in range(len(self.layers))]
        self.free = {}
        self.synced = [None] * len(self.target_layers)
        self.staged = [None] * len(self.target_layers)

    # -- the per-step work: nothing is absent, so nothing to mask -----------------------------------

    def attach(self, optimizer: torch.optim.Optimizer, evolves: bool, mask_moments: bool) -> None:
        self.optimizer = optimizer
        self.params = [layer.values for layer in self.layers]

    def gradients(self) -> list[torch.Tensor] | None:
        grads = [layer.values.grad for layer in self.layers]
        return None if any(g is None for g in grads) else grads

    def dense_gradients(self) -> list[torch.Tensor] | None:
        grads = [layer.dense_grad for layer in self.layers]
        return None if any(g is None for g in grads) else grads

    def want_dense_gradient(self, wanted: bool) -> None:
        for layer in self.layers:
            layer.record_dense_grad = wanted
            if not wanted:
                layer.dense_grad = None

    def before_step(self, grads: list[torch.Tensor], clock: int) -> None:
        """Never called: the sparse backend runs with moment masking (see SparseConfig)."""

    def mask_after_step(self) -> None:
        """Nothing is absent: optimizer state exists for active connections only."""

    def remask(self) -> None:
        """Nothing is absent."""
