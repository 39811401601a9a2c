"""Masked layers: dense storage plus a ``weight_mask`` buffer.

This module is the seam for the layer representation. Everything else in the
plugin talks to sparse layers only through :func:`sparse_layers`, ``weight``,
``weight_mask`` and :func:`active_count`; a truly sparse backend (values plus
indices) would provide the same few names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .mask_bits import BITS_KEY, MASK_KEY, pack_mask, unpack_mask_in_state_


class MaskedLayerMixin:
    """Adds a float ``weight_mask`` buffer (1 = connection exists, 0 = absent).

    The forward pass is the parent's own: masked entries of ``weight`` are kept at
    exactly zero by the optimizer hooks, so no ``weight * mask`` product is paid
    per forward (measured 6-10% slower on this CPU).

    A state dict holds the mask as ``weight_mask_bits`` (one bit per connection, see
    :mod:`~sb3_sparse.core.mask_bits`); a state dict with a float ``weight_mask`` (checkpoints
    written before) loads too.
    """

    weight: nn.Parameter
    weight_mask: torch.Tensor

    def _init_mask(self) -> None:
        # A float mask: multiplying by a bool mask is much slower on CPU.
        self.register_buffer("weight_mask", torch.ones_like(self.weight, requires_grad=False))

    @torch.no_grad()
    def set_mask_(self, mask: torch.Tensor) -> None:
        """Replace the mask in place and zero the weights it removes."""
        self.weight_mask.copy_(mask)
        self.weight.mul_(self.weight_mask)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        destination[prefix + BITS_KEY] = pack_mask(destination.pop(prefix + MASK_KEY))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # args: local_metadata, strict, missing_keys, unexpected_keys, error_msgs.
        unpack_mask_in_state_(state_dict, prefix, self.weight_mask, error_msgs=args[-1])
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[misc]

    def extra_repr(self) -> str:
        density = float(self.weight_mask.mean())
        return f"{super().extra_repr()}, density={density:.4f}"  # type: ignore[misc]


class MaskedLinear(MaskedLayerMixin, nn.Linear):
    """``nn.Linear`` with a ``weight_mask`` buffer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **factory) -> None:
        super().__init__(in_features, out_features, bias=bias, **factory)
        self._init_mask()


class MaskedConv2d(MaskedLayerMixin, nn.Conv2d):
    """``nn.Conv2d`` with a ``weight_mask`` buffer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_mask()


def to_masked(layer: nn.Module, bias: bool | None = None) -> nn.Module:
    """Return a masked copy of a ``Linear``/``Conv2d`` that shares its weight tensor.

    :param layer: the dense layer.
    :param bias: ``False`` drops the bias; ``None`` keeps the layer's choice.
    """
    keep_bias = layer.bias is not None if bias is None else bias and layer.bias is not None
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    if isinstance(layer, nn.Linear):
        new: nn.Module = MaskedLinear(layer.in_features, layer.out_features, bias=keep_bias, **factory)
    elif isinstance(layer, nn.Conv2d):
        new = MaskedConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=keep_bias,
            padding_mode=layer.padding_mode,
            **factory,
        )
    else:
        raise TypeError(f"Only nn.Linear and nn.Conv2d layers can be made sparse, got {type(layer).__name__}")
    new.weight = layer.weight
    if keep_bias:
        new.bias = layer.bias
    return new


def replace_layer(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` inside ``root``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def sparse_layers(module: nn.Module) -> list[tuple[str, MaskedLayerMixin]]:
    """The masked layers of ``module`` with their dotted names, in registration order."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, MaskedLayerMixin)]


def active_count(layer: MaskedLayerMixin) -> int:
    """Number of connections that exist in ``layer``."""
    return int(layer.weight_mask.sum().item())
