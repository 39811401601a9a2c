"""Masks in checkpoints: one bit per connection instead of one float.

A masked layer keeps its ``weight_mask`` as a float tensor in memory (the per-step
multiplies need it) but writes it to a state dict as ``weight_mask_bits``: the mask's flat
row-major entries packed eight to a ``uint8``, most significant bit first (NumPy's
``packbits`` order), the last byte padded with zero bits. The mask's shape is the weight's,
so the bits alone restore it. A float mask is 32 times larger; written as such it made a
90% sparse TD3 zip twice the dense one.
"""

from __future__ import annotations

from typing import Any

import torch

MASK_KEY = "weight_mask"
BITS_KEY = "weight_mask_bits"
# Bit j of a byte (0 = first entry) has value 2 ** (7 - j).
_BIT_VALUES = (128, 64, 32, 16, 8, 4, 2, 1)


def _bit_values(device: torch.device) -> torch.Tensor:
    return torch.tensor(_BIT_VALUES, dtype=torch.uint8, device=device)


def packed_size(numel: int) -> int:
    """Number of bytes that hold ``numel`` mask entries."""
    return -(-numel // 8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """The mask's nonzero entries as bits: a 1-D ``uint8`` tensor of ``packed_size(mask.numel())`` bytes.

    :param mask: any shape and dtype; an entry is a connection when it is nonzero.
    :return: the bits, on the mask's device.
    """
    flat = mask.detach().reshape(-1) != 0
    padding = packed_size(flat.numel()) * 8 - flat.numel()
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    return (flat.view(-1, 8).to(torch.uint8) * _bit_values(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_mask(bits: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """Undo :func:`pack_mask`: a mask of ``shape`` with entries 1 and 0 of ``dtype``.

    :param bits: the packed bytes, as :func:`pack_mask` writes them.
    :param shape: the mask's shape (its layer's weight shape).
    :param dtype: the mask's dtype.
    :raises ValueError: if ``bits`` is not a 1-D ``uint8`` tensor of the size ``shape`` needs.
    """
    numel = shape.numel()
    if bits.dtype != torch.uint8 or bits.shape != (packed_size(numel),):
        raise ValueError(
            f"{BITS_KEY} must be a 1-D uint8 tensor of {packed_size(numel)} bytes for a weight of shape "
            f"{tuple(shape)}, got dtype={bits.dtype}, shape={tuple(bits.shape)}"
        )
    flat = (bits.view(-1, 1) & _bit_values(bits.device)) != 0
    return flat.view(-1)[:numel].view(shape).to(dtype)


def unpack_mask_in_state_(state_dict: dict[str, Any], prefix: str, mask: torch.Tensor, error_msgs: list[str]) -> None:
    """Turn a layer's ``weight_mask_bits`` entry of ``state_dict`` into the float ``weight_mask``, in place.

    For a layer's ``_load_from_state_dict``, which gets its own copy of the state dict to edit;
    an entry that is already a float mask (older checkpoints) stays. Problems go to
    ``error_msgs``, which fail the load as ``load_state_dict`` reports them.

    :param state_dict: the state being loaded.
    :param prefix: the layer's key prefix (``"actor.mu.0."``).
    :param mask: the layer's mask buffer (its shape and dtype are the unpacked mask's).
    :param error_msgs: ``load_state_dict``'s list of errors.
    """
    bits_key, mask_key = prefix + BITS_KEY, prefix + MASK_KEY
    if bits_key not in state_dict:
        return
    bits = state_dict.pop(bits_key)
    if mask_key in state_dict:
        error_msgs.append(f"state_dict has both {mask_key!r} and {bits_key!r}; a layer's mask is one of them")
        return
    try:
        state_dict[mask_key] = unpack_mask(bits, mask.shape, mask.dtype)
    except ValueError as error:
        error_msgs.append(f"While loading {bits_key!r}: {error}")
        state_dict[mask_key] = mask  # not also reported missing: the error fails the load
