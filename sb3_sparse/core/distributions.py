"""How a network's sparsity is spread over its layers, and exact-count random masks.

A *distribution* gives each sparse layer a raw score; layer density is
``epsilon * score`` with one ``epsilon`` per network, solved so that the whole
network (dense layers included) has the requested sparsity. Layers whose density
would exceed 1 are made dense and ``epsilon`` is solved again (Evci et al., 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Shape = tuple[int, ...]


def _er_score(shape: Shape) -> float:
    """Erdos-Renyi: (n_in + n_out) / (n_in * n_out) (Mocanu et al., 2018)."""
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


def _erk_score(shape: Shape) -> float:
    """ER-Kernel: the sum of all weight dimensions over their product."""
    return sum(shape) / math.prod(shape)


def _uniform_score(shape: Shape) -> float:
    return 1.0


DISTRIBUTIONS: dict[str, Callable[[Shape], float]] = {
    "er": _er_score,
    "erk": _erk_score,
    "uniform": _uniform_score,
}


def layer_counts(
    shapes: Sequence[Shape],
    sparse: Sequence[bool],
    sparsity: float,
    distribution: str = "er",
) -> list[int]:
    """Number of active weights per layer for a network-wide ``sparsity``.

    :param shapes: weight shapes of all the network's layers (dense ones too).
    :param sparse: whether each layer may be sparse; dense layers count against the budget.
    :param sparsity: fraction of zero weights over all layers, in [0, 1).
    :param distribution: ``"er"``, ``"erk"`` or ``"uniform"``.
    :return: active weights per layer (exact counts, the dense layers' full size).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Unknown distribution={distribution!r}; allowed: {sorted(DISTRIBUTIONS)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if sparsity > 0 and not any(sparse):
        raise ValueError(
            f"sparsity={sparsity} cannot be reached: no layer may be sparse (output layers are dense "
            "unless sparse_output_layer=True)"
        )
    score = DISTRIBUTIONS[distribution]
    sizes = [math.prod(s) for s in shapes]
    budget = (1.0 - sparsity) * sum(sizes)
    dense = [not s for s in sparse]
    while True:
        free = [i for i, d in enumerate(dense) if not d]
        if not free:
            break
        remaining = budget - sum(sizes[i] for i, d in enumerate(dense) if d)
        if remaining <= 0:
            raise ValueError(
                f"sparsity={sparsity} cannot be reached: the dense layers alone hold more than "
                f"{1 - sparsity:.1%} of the weights; lower the sparsity or set sparse_output_layer=True"
            )
        epsilon = remaining / sum(score(shapes[i]) * sizes[i] for i in free)
        over = [i for i in free if epsilon * score(shapes[i]) > 1.0]
        if not over:
            break
        for i in over:
            dense[i] = True
    counts = []
    for i, size in enumerate(sizes):
        if dense[i]:
            counts.append(size)
        else:
            counts.append(max(1, min(size, round(epsilon * score(shapes[i]) * size))))
    return counts


def lambda_counts(shapes: Sequence[Shape], lambdas: Sequence[float]) -> list[int]:
    """Sokar et al.'s ER with lambda per layer: ``round(lambda * (n_in + n_out))`` weights.

    :param shapes: weight shapes of the sparse layers, in order.
    :param lambdas: one lambda per sparse layer.
    """
    if len(lambdas) != len(shapes):
        raise ValueError(f"lambdas needs one value per sparse layer ({len(shapes)}), got {len(lambdas)}: {list(lambdas)}")
    counts = []
    for i, (shape, lam) in enumerate(zip(shapes, lambdas, strict=True)):
        n_out, n_in = shape[0], shape[1]
        count = round(lam * (n_in + n_out))
        size = math.prod(shape)
        if lam <= 0 or count > size:
            raise ValueError(
                f"lambdas[{i}]={lam} gives density {count / size:.3f} on a {n_in}->{n_out} layer; "
                f"allowed: 0 < lambda <= {size / (n_in + n_out):.2f} for this layer"
            )
        counts.append(count)
    return counts


def random_mask(shape: Shape, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A float mask with exactly ``count`` ones at uniformly random positions."""
    size = math.prod(shape)
    mask = torch.zeros(size)
    mask[torch.randperm(size, generator=generator)[:count]] = 1.0
    return mask.view(shape)
