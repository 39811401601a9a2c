"""Changing one layer's topology: where to drop, where to grow, and target-network rules.

Scorers say *where*; callers say *how many*. All functions change tensors in place
under ``no_grad`` and keep the invariant that absent weights are exactly zero.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .layers import MaskedLayerMixin


def random_scores(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SET's growth score: uniform noise, so growth picks absent positions at random."""
    return torch.rand(weight.shape, generator=generator).to(weight.device)


def gradient_scores(grad: torch.Tensor) -> torch.Tensor:
    """RigL's growth score: magnitude of the dense gradient."""
    return grad.abs()


def _top_positions(scores: torch.Tensor, candidates: torch.Tensor, n: int, largest: bool) -> torch.Tensor:
    """Flat indices of the ``n`` best-scoring positions among ``candidates`` (a 0/1 tensor)."""
    fill = float("-inf") if largest else float("inf")
    masked = torch.where(candidates.bool(), scores, torch.full_like(scores, fill))
    return torch.topk(masked.flatten(), n, largest=largest, sorted=False).indices


@torch.no_grad()
def drop_smallest(layer: MaskedLayerMixin, n: int) -> torch.Tensor:
    """Remove the ``n`` active connections closest to zero; return their flat indices."""
    dropped = _top_positions(layer.weight.abs(), layer.weight_mask, n, largest=False)
    layer.weight_mask.view(-1)[dropped] = 0.0
    layer.weight.view(-1)[dropped] = 0.0
    return dropped


@torch.no_grad()
def grow_best(layer: MaskedLayerMixin, n: int, scores: torch.Tensor) -> torch.Tensor:
    """Add the ``n`` absent connections with the highest ``scores``; they start at exactly zero."""
    grown = _top_positions(scores, 1.0 - layer.weight_mask, n, largest=True)
    layer.weight_mask.view(-1)[grown] = 1.0
    layer.weight.view(-1)[grown] = 0.0
    return grown


@torch.no_grad()
def mask_state_(state_tensors: Iterable[torch.Tensor], mask: torch.Tensor) -> None:
    """Zero optimizer state (Adam's ``exp_avg``, ``exp_avg_sq``, ...) at absent connections."""
    for tensor in state_tensors:
        tensor.mul_(mask)


def _host(tensor: torch.Tensor) -> np.ndarray:
    """A flat NumPy view of ``tensor`` (a copy if it is not on the CPU)."""
    return tensor.detach().view(-1).cpu().numpy()


class TargetSupport:
    """Index form of a target layer's support ``S`` and of the online-only positions ``N = M \\ S``.

    Kept between target updates so that pruning gathers O(|S|) values instead of scanning
    and calling ``nonzero`` over the whole layer. Held as NumPy arrays: this bookkeeping is
    a dozen small index operations per update, and each costs several times more as a torch
    op than as a NumPy one on the CPUs measured (docs/benchmarks.md).
    """

    def __init__(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
        own = _host(target.weight_mask)
        self.support = np.flatnonzero(own)
        self.newcomers = np.flatnonzero(_host(online.weight_mask) * (1.0 - own))
        self._views: tuple[tuple[int, ...], list[np.ndarray]] | None = None

    @property
    def in_sync(self) -> bool:
        """Whether the target support equals the online one (an update cannot add connections)."""
        return self.newcomers.size == 0

    def arrays(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> list[np.ndarray]:
        """The target's weights and mask and the online mask as flat NumPy arrays.

        On the CPU these are views, kept while the tensors keep their storage (``Module.to``
        gives them new storage); elsewhere they are fresh copies, written back by
        :meth:`write_back`.
        """
        tensors = (target.weight, target.weight_mask, online.weight_mask)
        if not tensors[0].is_cpu:
            return [_host(t) for t in tensors]
        key = tuple(t.data_ptr() for t in tensors)
        if self._views is None or self._views[0] != key:
            self._views = (key, [_host(t) for t in tensors])
        return self._views[1]

    @staticmethod
    def write_back(target: MaskedLayerMixin, values: np.ndarray, mask: np.ndarray) -> None:
        """Copy arrays from :meth:`arrays` into the target if they are copies, not views."""
        if not target.weight.is_cpu:
            target.weight.detach().view(-1).copy_(torch.from_numpy(values))
            target.weight_mask.view(-1).copy_(torch.from_numpy(mask))


@torch.no_grad()
def prune_to_count_(target: MaskedLayerMixin, online: MaskedLayerMixin, index: TargetSupport) -> None:
    """Magnitude-prune a target layer back to its count after a target update.

    After a polyak update the target's nonzeros lie in its support ``S`` plus the online-only
    positions ``N``; the ``|S|`` largest stay. Every ``N`` entry lies at or below
    ``t = max |w_N|``, so only the entries of ``S`` at or below ``t`` (``L``, usually a few)
    compete: the ``|L|`` largest of ``L`` and ``N`` stay, the rest go. Cost: one gather over
    ``S``, O(|N|) for the newcomers' values and a sort of the few contenders.
    """
    if index.in_sync:
        return
    values, mask, online_mask = index.arrays(target, online)
    newcomers = index.newcomers
    newcomer_values = np.abs(values[newcomers])
    threshold = np.maximum.reduce(newcomer_values)
    if threshold == 0:
        return  # no online-only connection has reached the target yet
    support_values = np.abs(values[index.support])
    low = np.flatnonzero(support_values <= threshold)  # slots in index.support
    if low.size == 0:
        values[newcomers] = 0.0
    else:
        # Only |L| entries of L and N stay, so only the |L| largest newcomers (and any tied
        # with the smallest of them) can stay. Rank those with L, ascending by magnitude, ties
        # by position (independent of how the index arrays are ordered, so a model rebuilt
        # from a checkpoint chooses alike); the first as many as there are contenders go.
        rank = max(newcomers.size - low.size, 0)
        contenders = np.flatnonzero(newcomer_values >= np.partition(newcomer_values, rank)[rank])
        positions = np.concatenate([index.support[low], newcomers[contenders]])
        order = np.lexsort((positions, np.concatenate([support_values[low], newcomer_values[contenders]])))
        out, stay = order[: contenders.size], order[contenders.size :]
        left_slots = low[out[out < low.size]]  # support entries that went...
        joined = contenders[stay[stay >= low.size] - low.size]  # ...and the newcomers that took their place
        left, entered, still_out = index.support[left_slots], newcomers[joined], np.delete(newcomers, joined)
        index.support[left_slots] = entered
        mask[left], mask[entered] = 0.0, 1.0
        values[left], values[still_out] = 0.0, 0.0
        # N' = M \ S': the newcomers still out, plus the entries that left and the online network has.
        index.newcomers = np.concatenate([still_out, left[online_mask[left] != 0]])
    index.write_back(target, values, mask)


@torch.no_grad()
def prune_to_magnitude_(target: MaskedLayerMixin, count: int) -> None:
    """Keep the ``count`` largest-magnitude entries of a target layer (a full top-k)."""
    w = target.weight.view(-1)
    keep = torch.zeros_like(w)
    keep[torch.topk(w.abs(), count, sorted=False).indices] = 1.0
    target.weight_mask.view(-1).copy_(keep)
    w.mul_(keep)


@torch.no_grad()
def copy_online_mask_(target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
    """Give a target layer the online layer's support."""
    target.weight_mask.copy_(online.weight_mask)
    target.weight.mul_(target.weight_mask)
