"""The masked backend's layer kernels: drop, grow, mask optimizer state, target-network rules.

Scores say *where* (see :mod:`sb3_sparse.core.methods`); callers say *how many*. All
functions change tensors in place under ``no_grad`` and keep the invariant that absent
weights are exactly zero.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .layers import MaskedLayerMixin


def top_positions(scores: torch.Tensor, candidates: torch.Tensor, n: int, largest: bool) -> torch.Tensor:
    """Flat indices of the ``n`` best-scoring positions among ``candidates`` (a 0/1 tensor)."""
    fill = float("-inf") if largest else float("inf")
    masked = torch.where(candidates.bool(), scores, torch.full_like(scores, fill))
    return torch.topk(masked.flatten(), n, largest=largest, sorted=False).indices


@torch.no_grad()
def drop_smallest(layer: MaskedLayerMixin, n: int, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Remove the ``n`` active connections with the lowest ``scores`` (default: closest to
    zero); return their flat indices."""
    scores = layer.weight.abs() if scores is None else scores
    dropped = top_positions(scores, layer.weight_mask, n, largest=False)
    layer.weight_mask.view(-1)[dropped] = 0.0
    layer.weight.view(-1)[dropped] = 0.0
    return dropped


@torch.no_grad()
def grow_best(layer: MaskedLayerMixin, n: int, scores: torch.Tensor) -> torch.Tensor:
    """Add the ``n`` absent connections with the highest ``scores``; they start at exactly zero."""
    grown = top_positions(scores, 1.0 - layer.weight_mask, n, largest=True)
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
    """Pruning state of one target layer, kept between target updates.

    Holds the target's support ``S`` as a boolean shadow of its mask (a boolean AND is much
    cheaper than one with the float mask), the online-only positions ``N = M \\ S`` as
    indices, and scratch arrays for the per-update scan, so that pruning allocates nothing
    large. NumPy, not torch: pruning is a few dozen small array operations per update, and
    each costs several times more as a torch op than as a NumPy one on the CPUs measured
    (docs/benchmarks.md). For CPU tensors; :class:`DeviceTargetSupport` is the same rule on
    other devices.
    """

    def __init__(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
        self.device = target.weight.device
        self.in_support = _host(target.weight_mask) != 0
        self.count = int(np.count_nonzero(self.in_support))
        self.newcomers = np.flatnonzero((_host(online.weight_mask) != 0) & ~self.in_support)
        self.magnitudes = np.empty_like(_host(target.weight))
        self.above = np.empty(self.in_support.size, dtype=bool)
        self._views: tuple[tuple[int, ...], list[np.ndarray]] | None = None

    @property
    def in_sync(self) -> bool:
        """Whether the target support equals the online one (an update cannot add connections)."""
        return self.newcomers.size == 0

    def arrays(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> list[np.ndarray]:
        """The target's weights and mask and the online mask as flat NumPy views (CPU tensors
        only), kept while the tensors keep their storage (``Module.to`` gives them new storage)."""
        tensors = (target._parameters["weight"], target._buffers["weight_mask"], online._buffers["weight_mask"])
        key = tuple(t.data_ptr() for t in tensors)
        if self._views is None or self._views[0] != key:
            self._views = (key, [_host(t) for t in tensors])
        return self._views[1]

    def prune(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
        prune_to_count_(target, online, self)


@torch.no_grad()
def prune_to_count_(target: MaskedLayerMixin, online: MaskedLayerMixin, index: TargetSupport) -> None:
    """Magnitude-prune a target layer back to its count after a target update.

    After a polyak update the target's nonzeros lie in its support ``S`` plus the online-only
    positions ``N``; the ``|S|`` largest stay. Every ``N`` entry lies at or below
    ``t = max |w_N|``, so only the entries of ``S`` at or below ``t`` (``L``, usually a few
    dozen) compete: the ``|L|`` largest of ``L`` and ``N`` stay, the rest go. Cost: one
    contiguous scan of the layer that counts ``L`` (often empty: then nothing else runs),
    O(|N|) for the newcomers and a sort of the few contenders.
    """
    if index.in_sync:
        return
    values, mask, online_mask = index.arrays(target, online)
    newcomers = index.newcomers
    newcomer_values = np.abs(values[newcomers])
    threshold = np.maximum.reduce(newcomer_values)
    if not np.isfinite(threshold):
        raise FloatingPointError("non-finite target weight at an online-only position")
    if threshold == 0:
        return  # no online-only connection has reached the target yet
    magnitudes = np.abs(values, out=index.magnitudes)
    above = np.greater(magnitudes, threshold, out=index.above)
    # Off S and N every entry is exactly 0 and every N entry is at most t, so every entry
    # above t lies in S: fewer than |S| of them means L is not empty. A NaN is not above t,
    # so a NaN in S always takes the second branch, where it is caught among L.
    if np.count_nonzero(above) >= index.count:
        values[newcomers] = 0.0  # L is empty: every newcomer stays out
    else:
        low = np.flatnonzero(np.greater(index.in_support, above, out=above))  # in S and not above t
        if np.isnan(magnitudes[low]).any():
            raise FloatingPointError("NaN target weight in the target's support")
        # |N| of the entries of L and N go, so only the |L| largest newcomers (and any tied with
        # the smallest of them) can stay. Rank those with L, ascending by magnitude, ties by
        # position (so a model rebuilt from a checkpoint, whose index arrays may be ordered
        # differently, chooses alike): the first as many as there are contenders go.
        rank = max(newcomers.size - low.size, 0)
        contends = newcomer_values >= np.partition(newcomer_values, rank)[rank]
        candidates = np.concatenate([low, newcomers[contends]])
        order = np.lexsort((candidates, np.concatenate([magnitudes[low], newcomer_values[contends]])))
        n_going = candidates.size - low.size
        staying = candidates[order[n_going:]]
        going = np.concatenate([candidates[order[:n_going]], newcomers[~contends]])
        mask[going], mask[staying] = 0.0, 1.0
        index.in_support[going], index.in_support[staying] = False, True
        values[going] = 0.0
        # N' = M \ S': the entries that went and the online network has.
        index.newcomers = going[online_mask[going] != 0]


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


class DeviceTargetSupport:
    """:class:`TargetSupport` as boolean tensors on the layer's device, for a rule with no host copy.

    A copy to the host makes the host wait for the device, once per target update; this
    path is a few kernels with no data-dependent branch on the host. It computes what
    :func:`prune_to_count_` computes by ranking only the contenders: of ``S`` and ``N`` the
    ``|S|`` largest magnitudes stay (equal magnitudes: the smaller position goes first),
    unless every ``N`` entry is still 0 (then nothing changes). It does not look for NaNs,
    which would need the host: the next topology update's check finds them in the target.
    Built once per topology update (one wait for the count then).
    """

    def __init__(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
        self.device = target.weight.device
        self.in_support = target.weight_mask.view(-1) != 0
        self.count = int(self.in_support.sum().item())
        self.newcomers = (online.weight_mask.view(-1) != 0) & ~self.in_support
        # Fixed until the next rebuild: once N is empty the rule keeps S, so skipping is exact,
        # and an N that empties later only costs the (no-op) kernels.
        self.in_sync = not bool(self.newcomers.any().item())

    @torch.no_grad()
    def prune(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
        if self.in_sync:
            return
        values, mask = target.weight.detach().view(-1), target.weight_mask.view(-1)
        magnitudes = values.abs()
        candidates = self.in_support | self.newcomers
        # Ascending by magnitude, equal ones by position (a stable sort); others first: the last |S| stay.
        order = torch.sort(torch.where(candidates, magnitudes, -1.0), stable=True).indices
        stays = torch.zeros_like(candidates)
        stays[order[values.numel() - self.count :]] = True
        reached = torch.where(self.newcomers, magnitudes, 0.0).amax() > 0  # 0-dim: stays on the device
        stays = torch.where(reached, stays, self.in_support)
        going = candidates & ~stays
        values.masked_fill_(going, 0.0)
        mask.copy_(torch.where(candidates, stays.to(mask.dtype), mask))
        self.in_support = stays
        self.newcomers = torch.where(reached, going & (online.weight_mask.view(-1) != 0), self.newcomers)
