"""Flushing denormal floats to zero for the duration of training.

Weights, Adam moments and activations that decay towards zero (dead ReLU units under weight
decay, Adam's second moment of gradients that stopped) end up as *denormal* floats (below
1.2e-38 in float32). x86 CPUs compute with them many times slower, so a dense agent can train
several times slower late in training than early (docs/benchmarks.md). Setting them to zero
changes values 30 orders of magnitude below the weights and Adam's ``eps``.

PyTorch's switch (``torch.set_flush_denormal``) is process-wide in spirit but per thread in
fact: it sets the CPU flags of the calling thread only, so operations that PyTorch splits over
several intra-op threads flush only the caller's share. Training with one torch thread (as the
sweep and the benchmarks do) flushes everything.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["FlushDenormalCallback", "flush_denormal", "flush_denormal_enabled"]

_SMALLEST_NORMAL = torch.finfo(torch.float32).tiny
MULTI_THREAD_WARNING = (
    "sb3_sparse: flush_denormal=True flushes denormals on the calling thread only; with "
    "torch.get_num_threads()={n} operations split over PyTorch's other threads keep them "
    "(use torch.set_num_threads(1) for full effect)"
)


def flush_denormal_enabled() -> bool:
    """Whether denormal floats are flushed to zero on this thread (PyTorch has no getter: probe)."""
    return (torch.tensor([_SMALLEST_NORMAL / 4]) * 2).item() == 0.0


def _set(enabled: bool) -> bool:
    """Set the flag; return the previous state. A CPU without the feature is left unchanged."""
    previous = flush_denormal_enabled()
    if enabled != previous and not torch.set_flush_denormal(enabled):
        warnings.warn("sb3_sparse: this CPU cannot flush denormal floats; training runs unflushed", stacklevel=3)
    if enabled and torch.get_num_threads() > 1:
        warnings.warn(MULTI_THREAD_WARNING.format(n=torch.get_num_threads()), stacklevel=3)
    return previous


@contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[None]:
    """Flush (or not) denormal floats to zero inside the block, then restore the previous state.

    :param enabled: flush inside the block (``False`` explicitly keeps denormals).
    """
    previous = _set(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)


class DenormalScope:
    """Turns flushing on at :meth:`enter` and restores the previous state at :meth:`leave` (for callbacks).

    :param enabled: flush between the two calls (``False``: both are no-ops).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._previous: bool | None = None

    def enter(self) -> None:
        if self.enabled and self._previous is None:
            self._previous = _set(True)

    def leave(self) -> None:
        if self._previous is not None:
            torch.set_flush_denormal(self._previous)
            self._previous = None


class FlushDenormalCallback(BaseCallback):
    """Flush denormals to zero while ``model.learn`` runs, for any SB3 model (dense ones too).

    ``SparseTrainingCallback(flush_denormal=True)`` does the same for sparse models; use this one
    for a dense baseline so that sparse and dense runs are compared like with like.

    :param enabled: flush while training (``False`` keeps denormals and is a no-op).
    :param verbose: verbosity level.
    """

    def __init__(self, enabled: bool = True, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.denormal = DenormalScope(enabled)  # the same attribute as SparseTrainingCallback's

    def _on_training_start(self) -> None:
        self.denormal.enter()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.denormal.leave()
