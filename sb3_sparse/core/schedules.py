"""How much to change, as a function of training progress in [0, 1]."""

from __future__ import annotations

import math


def drop_fraction_at(base: float, schedule: str, progress: float, end_fraction: float) -> float:
    """Fraction of active connections to drop at ``progress``.

    :param base: the drop fraction at the start (``eta`` in Sokar et al.).
    :param schedule: ``"constant"`` or ``"cosine"`` (annealed to 0 at ``end_fraction``, Evci et al. 2020).
    :param progress: fraction of training done.
    :param end_fraction: fraction of training after which the topology is frozen.
    """
    if progress > end_fraction:
        return 0.0
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress / end_fraction))
    raise ValueError(f"Unknown drop_schedule={schedule!r}; allowed: ['constant', 'cosine']")


def cubic_sparsity_at(initial: float, final: float, progress: float, start: float, end: float) -> float:
    """Gradual magnitude pruning schedule of Zhu & Gupta (2017).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** 3`` between ``start``
    and ``end`` (fractions of training); ``initial`` before, ``final`` after.
    """
    if progress <= start:
        return initial
    if progress >= end:
        return final
    remaining = 1.0 - (progress - start) / (end - start)
    return final + (initial - final) * remaining**3
