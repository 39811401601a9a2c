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


@torch.no_grad()
def prune_to_count_(target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
    """Magnitude-prune a target layer back to the online layer's number of connections.

    After a polyak update the target's support is at most its own support ``S`` (its
    ``weight_mask``) plus the online support ``M``. Exactly ``|S ∪ M| - k`` of those
    positions must go, ``k`` being the online count; they are the smallest. Positions
    of ``M \\ S`` are among the candidates, so nothing above the largest of them can be
    dropped: only entries at or below that threshold are ranked, which keeps this far
    cheaper than a full top-k over the layer.
    """
    w = target.weight.view(-1)
    own = target.weight_mask.view(-1)
    union = torch.maximum(own, online.weight_mask.view(-1))
    n_extra = int(union.sum().item()) - int(online.weight_mask.sum().item())
    if n_extra <= 0:
        target.weight_mask.view(-1).copy_(union)
        return
    magnitude = w.abs()
    newcomers = (union - own).nonzero().squeeze(1)
    if n_extra <= len(newcomers):
        # At least n_extra entries (the newcomers) lie at or below this threshold.
        threshold = magnitude[newcomers].max()
        candidates = ((magnitude <= threshold) & union.bool()).nonzero().squeeze(1)
    else:  # the online count shrank (gradual pruning): rank the whole support
        candidates = union.nonzero().squeeze(1)
    order = torch.topk(magnitude[candidates], n_extra, largest=False, sorted=False).indices
    dropped = candidates[order]
    union[dropped] = 0.0
    own.copy_(union)
    w.mul_(own)


@torch.no_grad()
def copy_online_mask_(target: MaskedLayerMixin, online: MaskedLayerMixin) -> None:
    """Give a target layer the online layer's support."""
    target.weight_mask.copy_(online.weight_mask)
    target.weight.mul_(target.weight_mask)
