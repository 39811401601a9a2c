"""Kernels of the truly sparse backend: a linear layer whose weight is only its active entries.

A sparse weight of shape ``(out_features, in_features)`` is ``values`` (one per active
connection) at ``positions``: flat row-major indices ``row * in_features + col``, int32,
sorted ascending. :class:`SparseIndex` derives what the kernels need from the positions once
per topology (rebuilt when they change); :func:`sparse_linear` computes ``x @ W.T + bias``
and its backward for ``x``, ``values`` and ``bias`` without a dense ``W``.

REFERENCE IMPLEMENTATION (placeholder until kernels are chosen by measurement): materialises
the dense weight. Same signature as the final one.
"""

from __future__ import annotations

import torch


class SparseIndex:
    """What the kernels need to know about one topology.

    :param positions: sorted flat row-major positions of the active connections (int32).
    :param shape: ``(out_features, in_features)``.
    """

    def __init__(self, positions: torch.Tensor, shape: tuple[int, int]) -> None:
        self.positions = positions
        self.shape = shape
        self.long_positions = positions.long()


def dense_weight(values: torch.Tensor, index: SparseIndex) -> torch.Tensor:
    """The dense ``(out, in)`` weight (absent entries exactly 0), differentiable in ``values``."""
    out, inp = index.shape
    flat = values.new_zeros(out * inp).index_put((index.long_positions,), values)
    return flat.view(out, inp)


def sparse_linear(x: torch.Tensor, values: torch.Tensor, index: SparseIndex, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ W.T + bias`` for the sparse ``W`` given by ``values`` at ``index``; ``x`` is ``(..., in)``."""
    return torch.nn.functional.linear(x, dense_weight(values, index), bias)
