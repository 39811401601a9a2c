"""Sparsity-aware weight initialization (``init="sparse"``).

Graesser et al.'s sparse RL configurations (google-research/rigl, ``rigl/rl``) set
``init_masks.fixed_sparse_init = True``: once the masks exist, every active weight is drawn
again from a Glorot-uniform distribution whose fans are the *sparse* ones of the two units the
connection joins (``init_utils.unit_scaled_init_tf1``, method ``fanavg_uniform``, scale 1).
Absent weights stay exactly 0.
"""

from __future__ import annotations

import torch

from .layers import MaskedLayerMixin


def sparse_fans(mask: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per connection: the sparse fan-in of the unit it feeds and the sparse fan-out of the unit it leaves.

    A PyTorch weight is ``(out, in / groups, *kernel)``; convolution fans are summed over the
    kernel positions, so a dense layer gets the usual ``in * k_h * k_w`` and ``out * k_h * k_w``
    (per group).

    :param mask: a 0/1 mask of a ``Linear`` (2-D) or ``Conv2d`` (4-D) weight.
    :param groups: the convolution's ``groups``; each group's input channels feed its own outputs.
    :return: ``(fan_in, fan_out)``, each shaped like ``mask``.
    """
    kernel = tuple(range(2, mask.dim()))
    fan_in = mask.sum(dim=(1, *kernel), keepdim=True).expand_as(mask)
    grouped = mask.unflatten(0, (groups, -1))  # (groups, out / groups, in / groups, *kernel)
    fan_out = grouped.sum(dim=(1, *(d + 1 for d in kernel)), keepdim=True).expand_as(grouped).flatten(0, 1)
    return fan_in, fan_out


def sparse_init_bounds(mask: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Half-width ``b`` of the uniform draw per connection, 0 where the mask is 0.

    ``Var = 1 / max(1, (fan_in + fan_out) / 2)`` with the connection's sparse fans
    (:func:`sparse_fans`), and ``U(-b, b)`` has that variance for ``b = sqrt(3 * Var)``: Glorot
    uniform computed from the fans the layer actually has.

    :param mask: a 0/1 weight mask.
    :param groups: the convolution's ``groups``.
    """
    fan_in, fan_out = sparse_fans(mask, groups)
    variance = 1.0 / torch.clamp((fan_in + fan_out) / 2.0, min=1.0)
    return torch.sqrt(3.0 * variance) * mask


@torch.no_grad()
def sparse_init_(layer: MaskedLayerMixin, generator: torch.Generator | None = None) -> None:
    """Redraw every active weight of ``layer`` from ``U(-b, b)`` (:func:`sparse_init_bounds`); absent ones stay 0.

    Draws on the CPU (from ``generator``, or torch's global generator), so the result depends
    only on the seed, not on the device.

    :param layer: a masked layer whose ``weight_mask`` is final.
    :param generator: the random generator; ``None`` uses torch's global one.
    """
    weight = layer.weight
    bounds = sparse_init_bounds(layer.weight_mask.detach().cpu().float(), getattr(layer, "groups", 1))
    unit = torch.rand(weight.shape, generator=generator, dtype=torch.float32) * 2.0 - 1.0
    weight.copy_((unit * bounds).to(device=weight.device, dtype=weight.dtype))
