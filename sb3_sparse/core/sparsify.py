"""Turn the dense layers of a built network into masked ones with exact-count random masks."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import SparseConfig
from .distributions import lambda_counts, layer_counts, random_mask
from .initialization import sparse_init_
from .layers import replace_layer, to_masked
from .sparse_layer import SparseLinear

WEIGHTED = (nn.Linear, nn.Conv2d)  # what sparsify_ makes sparse
LINEAR = (nn.Linear, SparseLinear)
LAYERS = (*WEIGHTED, SparseLinear)  # every layer with a weight, the truly sparse one included


def output_layer_names(network: nn.Module, hidden_heads: tuple[str, ...] = ("latent_pi", "latent_vf")) -> set[str]:
    """Names of the layers that produce a network's outputs.

    The last ``Linear`` of each ``nn.Sequential`` head and every ``Linear`` that is not
    inside a ``Sequential`` (SAC's ``mu`` and ``log_std``). Sequentials named in
    ``hidden_heads`` and features extractors feed other layers, so theirs are hidden.
    """
    outputs: set[str] = set()
    in_sequential: set[str] = set()
    for name, module in network.named_modules():
        if isinstance(module, nn.Sequential):
            children = [f"{name}.{i}" if name else str(i) for i, m in enumerate(module) if isinstance(m, LINEAR)]
            in_sequential.update(f"{name}.{i}" if name else str(i) for i in range(len(module)))
            hidden = name.rsplit(".", 1)[-1] in hidden_heads or "features_extractor" in name
            if children and not hidden:
                outputs.add(children[-1])
    for name, module in network.named_modules():
        if isinstance(module, LINEAR) and name not in in_sequential and "features_extractor" not in name:
            outputs.add(name)
    return outputs


def sparsify_(
    network: nn.Module, config: SparseConfig, sparsity: float, sparse_biases: bool = True, dense: tuple[str, ...] = ()
) -> list[int]:
    """Replace the network's Linear/Conv2d layers by masked ones; return active counts per layer.

    :param network: a built network (its dense layers are replaced in place).
    :param config: supplies the distribution, lambdas, ``sparse_output_layer``, ``bias`` and ``init``
        (``"sparse"`` redraws each masked layer's weights from its sparse fans once its mask is set).
    :param sparsity: the network's sparsity (ignored when ``config.lambdas`` is set).
    :param sparse_biases: whether ``config.bias=False`` may remove this network's biases.
    :param dense: submodules (dotted names) left dense and out of the count, e.g. a shared features extractor.
    """
    named = [
        (n, m)
        for n, m in network.named_modules()
        if isinstance(m, WEIGHTED) and not any(n == d or n.startswith(f"{d}.") for d in dense)
    ]
    if not named:
        raise ValueError(f"{type(network).__name__} has no Linear or Conv2d layer to make sparse")
    outputs = output_layer_names(network)
    is_sparse = [config.sparse_output_layer or name not in outputs for name, _ in named]
    shapes = [tuple(m.weight.shape) for _, m in named]
    if config.lambdas is not None:
        sparse_shapes = [s for s, flag in zip(shapes, is_sparse, strict=True) if flag]
        sparse_counts = iter(lambda_counts(sparse_shapes, _tile(config.lambdas, sparse_shapes)))
        counts = [next(sparse_counts) if flag else math.prod(s) for s, flag in zip(shapes, is_sparse, strict=True)]
    else:
        counts = layer_counts(shapes, is_sparse, sparsity, config.distribution)
    for (name, layer), shape, count, flag in zip(named, shapes, counts, is_sparse, strict=True):
        if not flag:
            continue
        masked = to_masked(layer, bias=None if config.bias or not sparse_biases else False)
        masked.final_count = count
        if config.method == "gmp":  # gradual pruning starts from the initial sparsity
            count = max(count, round((1.0 - config.initial_sparsity) * math.prod(shape)))
        masked.set_mask_(random_mask(shape, count).to(layer.weight.device))
        if config.init == "sparse":
            sparse_init_(masked)
        replace_layer(network, name, masked)
    return counts


@torch.no_grad()
def record_output_positions(module: nn.Module, example: torch.Tensor) -> None:
    """Store each conv layer's output positions per sample (for FLOPs) by running ``example``."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]

    def hook(layer: nn.Module, args: object, output: torch.Tensor) -> None:
        layer.output_positions = output.shape[-2] * output.shape[-1]

    handles = [conv.register_forward_hook(hook) for conv in convs]
    try:
        module(example)
    finally:
        for handle in handles:
            handle.remove()


def _tile(lambdas: tuple[float, ...], shapes: list[tuple[int, ...]]) -> tuple[float, ...]:
    """Repeat per-layer lambdas over identical sub-networks (the critic's Q-networks).

    Only whole sub-networks repeat: the layer shapes must repeat with the lambdas, so one value
    on two different layers is an error rather than a silent broadcast.
    """
    n = len(lambdas)
    if n == len(shapes) or (len(shapes) % n == 0 and shapes == shapes[:n] * (len(shapes) // n)):
        return lambdas * (len(shapes) // n)
    raise ValueError(
        f"lambdas needs one value per sparse layer ({len(shapes)} sparse layers here, shapes {shapes}) or per "
        f"layer of one of several identical sub-networks (the critic's Q-networks); got lambdas={list(lambdas)}"
    )
