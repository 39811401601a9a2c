"""Changing one layer's topology: where to drop, where to grow, and target-network rules.

Scorers say *where*; callers say *how many*. All functions change tensors in place
under ``no_grad`` and keep the invariant that absent weights are exactly zero.
"""

from __future__ import annotations

from collections.abc import Iterable

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


class TargetSupport:
    """Index form of a target layer's support ``S`` and of the online-only positions ``M \\ S``.

    Kept between target updates so that pruning costs O(|S|) gathers instead of scans
    and ``nonzero`` calls over the whole layer (``nonzero`` is ~0.5 ms on a 256x256
    layer on this CPU).
    """

    def __init__(self, target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
        own = target.weight_mask.view(-1)
        self.support = own.nonzero().squeeze(1)
        self.newcomers = (online.weight_mask.view(-1) * (1.0 - own)).nonzero().squeeze(1)

    @property
    def in_sync(self) -> bool:
        """Whether the target support equals the online one (an update cannot add connections)."""
        return self.newcomers.numel() == 0


@torch.no_grad()
def prune_to_count_(target: MaskedLayerMixin, online: MaskedLayerMixin, index: TargetSupport) -> None:
    """Magnitude-prune a target layer back to its count after a target update.

    After a polyak update the target's nonzeros lie in its support ``S`` plus the online-only
    positions ``N = M \\ S``; exactly ``|N|`` of them must go, the smallest. The ``N`` entries
    all lie at or below ``max |w_N|``, so only entries of ``S`` below that threshold compete.
    """
    if index.in_sync:
        return
    # index_select / index_fill_ throughout: advanced indexing is several times slower on CPU.
    w = target.weight.view(-1)
    newcomer_values = w.index_select(0, index.newcomers).abs()
    threshold = newcomer_values.max()
    if threshold.item() == 0:
        return  # no online-only connection has reached the target yet
    support_values = w.index_select(0, index.support).abs()
    low = (support_values <= threshold).nonzero().squeeze(1)  # positions in index.support
    if low.numel() == 0:  # every online-only entry is smaller than the whole support
        w.index_fill_(0, index.newcomers, 0.0)
        return
    # Rank the competing support entries with the newcomers; the |N| smallest go.
    candidates = torch.cat([index.support.index_select(0, low), index.newcomers])
    order = torch.cat([support_values.index_select(0, low), newcomer_values]).argsort()
    n_out = index.newcomers.numel()
    gone = candidates.index_select(0, order[:n_out])
    kept = candidates.index_select(0, order[n_out:])  # as many as the competing support entries
    index.support.index_copy_(0, low, kept)
    target.weight_mask.view(-1).index_fill_(0, gone, 0.0).index_fill_(0, kept, 1.0)
    w.index_fill_(0, gone, 0.0)
    # M \ S' lies among the positions that went: keep those the online network has.
    online_has = online.weight_mask.view(-1).index_select(0, gone)
    index.newcomers = gone.index_select(0, online_has.nonzero().squeeze(1))


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
