"""Target-network schedules that SB3 cannot express on its own.

SB3's SAC (and sb3-contrib's TQC) update their targets in ``train()`` when
``gradient_step % target_update_interval == 0``, where ``gradient_step`` counts the
gradient steps of *that* ``train()`` call. With ``train_freq=1, gradient_steps=1`` the
counter is always 0, so ``target_update_interval=1000`` updates the target after every
gradient step. :class:`GlobalTargetUpdateInterval` makes the interval count gradient
updates over the whole training, which is what "a hard target update every 1000 steps"
(DS-SAC, SAC v1) means. See docs/zoo.md.
"""

from __future__ import annotations

import warnings

from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback


def _interval_algorithms() -> tuple[type, ...]:
    """Algorithms whose ``target_update_interval`` counts gradient steps within one ``train()`` call."""
    try:
        from sb3_contrib import TQC
    except ImportError:  # pragma: no cover - sb3-contrib is optional
        return (SAC,)
    return (SAC, TQC)


class GlobalTargetUpdateInterval(BaseCallback):
    """Update SAC/TQC targets every ``target_update_interval`` gradient updates of the whole training.

    Counting uses the model's own gradient-update counter ``model._n_updates`` (saved with the
    model, so the schedule continues after ``load`` and rl-zoo3's ``-i``). The target is updated
    after the gradient updates whose 0-based index ``u`` satisfies ``u % target_update_interval
    == 0`` (updates 1, 1001, 2001, ... counting from 1), as SB3 does inside a single ``train()``
    call with ``gradient_steps >= target_update_interval``. The update itself is SB3's: polyak
    with the model's ``tau`` (``tau=1.0`` is a hard copy).

    How: before each ``train()`` the callback sets ``model.tau`` to 0 (a no-op update) when no
    scheduled update falls into that call, and restores the configured ``tau`` and
    ``target_update_interval`` right after it, so the model is never saved with the temporary
    values. ``gradient_steps`` must divide ``target_update_interval`` (1 always does); with
    ``target_update_interval=1`` the callback does nothing.

    :param verbose: verbosity level.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.tau = 1.0
        self.interval = 1
        self._changed = False
        self._warned = False

    def _on_training_start(self) -> None:
        algorithms = _interval_algorithms()
        if not isinstance(self.model, algorithms):
            names = ", ".join(a.__name__ for a in algorithms)
            raise TypeError(
                f"GlobalTargetUpdateInterval applies to {names} (target_update_interval counted inside train()), "
                f"not {type(self.model).__name__}"
            )
        self.tau = float(self.model.tau)
        self.interval = int(self.model.target_update_interval)
        steps = int(self.model.gradient_steps)
        if self.interval <= 1:
            return  # every gradient step: SB3's own counting already means that
        if steps < 1 or self.interval % steps != 0:
            raise ValueError(
                f"GlobalTargetUpdateInterval needs gradient_steps >= 1 dividing target_update_interval={self.interval}, "
                f"got gradient_steps={steps}"
            )

    def _on_rollout_end(self) -> None:  # train() runs next
        if self.interval <= 1:
            return
        n_updates, steps = int(self.model._n_updates), int(self.model.gradient_steps)
        first_due = (-n_updates) % self.interval  # index, within the coming call, of the first scheduled update
        if first_due == 0 or first_due >= steps:
            # SB3 updates at gradient steps 0, interval, 2 * interval, ... of the call: exactly the scheduled ones,
            # or only step 0, made a no-op with tau = 0.
            self.model.tau = self.tau if first_due == 0 else 0.0
        else:  # pragma: no cover - only after changing gradient_steps between runs
            if not self._warned:
                warnings.warn(
                    f"GlobalTargetUpdateInterval: update counter {n_updates} is not aligned with gradient_steps={steps}; "
                    "a target update moves to the start of its train() call",
                    stacklevel=2,
                )
                self._warned = True
            self.model.tau = self.tau
        self.model.target_update_interval = self.interval
        self._changed = True

    def _on_rollout_start(self) -> None:  # train() just ran
        self._restore()

    def _on_training_end(self) -> None:
        self._restore()

    def _on_step(self) -> bool:
        return True

    def _restore(self) -> None:
        if self._changed:
            self.model.tau = self.tau
            self.model.target_update_interval = self.interval
            self._changed = False
