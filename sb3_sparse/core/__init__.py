"""Pure-PyTorch sparse-training core: no reinforcement-learning library is imported here."""

from .config import FIELDS, PRESETS, SparseConfig, resolve_config
from .controller import SparseController
from .distributions import lambda_counts, layer_counts, random_mask
from .layers import MaskedConv2d, MaskedLinear, SparseLayer, active_count, sparse_layers, to_masked
from .sparse_layer import SparseLinear, to_sparse_

__all__ = [
    "FIELDS",
    "PRESETS",
    "MaskedConv2d",
    "MaskedLinear",
    "SparseConfig",
    "SparseController",
    "SparseLayer",
    "SparseLinear",
    "active_count",
    "lambda_counts",
    "layer_counts",
    "random_mask",
    "resolve_config",
    "sparse_layers",
    "to_masked",
    "to_sparse_",
]
