"""Dormant neurons (ReDo, Sokar et al. 2023): neurons whose activation is near zero for every input.

A neuron's score is its mean |activation| over a batch (and spatial positions), divided
by the mean score of its layer; it is dormant when the score is <= ``threshold``.
Only hidden layers count: activations that follow an output layer are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .sparsify import LAYERS, output_layer_names

ACTIVATIONS = tuple(
    getattr(nn.modules.activation, name)
    for name in nn.modules.activation.__all__
    if name not in ("MultiheadAttention", "Softmax", "Softmin", "LogSoftmax", "Softmax2d")
)


def hidden_activations(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(layer name, activation module)`` for each activation that follows a hidden layer."""
    outputs = output_layer_names(network)
    found = []
    for parent_name, parent in network.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        last = None
        for child_name, child in parent.named_children():
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, LAYERS):
                last = full
            elif isinstance(child, ACTIVATIONS) and last is not None and last not in outputs:
                found.append((last, child))
    return found


@torch.no_grad()
def dormant_fractions(network: nn.Module, run: Callable[[], Any], threshold: float = 0.1) -> dict[str, float]:
    """Fraction of dormant neurons per hidden layer and over the network (key ``""``).

    :param network: the network whose hidden activations are scored.
    :param run: runs a forward pass of ``network`` on a batch.
    :param threshold: tau; ReDo's authors use 0.1 in their experiments.
    """
    scores: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            dims = [d for d in range(output.dim()) if d != 1]  # batch and spatial positions
            score = output.abs().mean(dim=dims)
            scores[name] = scores.get(name, 0) + score  # a layer used twice (two passes) adds up

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in hidden_activations(network)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    fractions, dormant, total = {}, 0, 0
    for name, score in scores.items():
        normalised = score / (score.mean() + 1e-9)
        n_dormant = int((normalised <= threshold).sum().item())
        fractions[name] = n_dormant / score.numel()
        dormant += n_dormant
        total += score.numel()
    fractions[""] = dormant / total if total else 0.0
    return fractions
