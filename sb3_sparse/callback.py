"""The training callback: feeds the update counter and training progress to the sparse policy, logs."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from .core.dormant import dormant_fractions
from .denormal import DenormalScope
from .summary import network_summary, per_update_train_flops


class SparseTrainingCallback(BaseCallback):
    """Drives topology evolution of a sparse policy and logs ``sparse/...`` metrics.

    Before each ``train()`` it aligns the policy's clock with the model's gradient-update
    counter (saved with the model, so schedules continue after ``load``) and hands over the
    training progress; the policy's optimizer hooks then evolve each network at exactly the
    scheduled update. After each ``train()`` it records sparsity (global, per network, per
    layer), active connections, topology updates, the fraction of connections changed at the
    last update and the training FLOPs so far. With ``dormant_interval`` set in the policy, it
    also logs the fraction of dormant neurons per network on a replay batch under
    ``sparse/dormant/...``.

    :param per_layer: also log every layer's sparsity.
    :param flush_denormal: flush denormal floats to zero while ``learn`` runs and restore the
        previous state after it (``torch.set_flush_denormal``; see :mod:`sb3_sparse.denormal`).
        On by default: late in training denormals can make updates several times slower on
        x86 CPUs, and flushing changes values far below any weight. Pass ``False`` to train
        with IEEE denormals (e.g. to reproduce runs made before this option existed).
    :param verbose: verbosity level.
    """

    def __init__(self, per_layer: bool = True, flush_denormal: bool = True, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.per_layer = per_layer
        self.denormal = DenormalScope(flush_denormal)
        self._stats_key: tuple[int, int] | None = None
        self._stats: dict[str, Any] = {}
        self._flops_per_update = (0.0, 0.0)
        self._counted_updates = 0
        self._dormant_epoch = 0

    @property
    def controller(self) -> Any:
        return self.model.policy.sparse_controller

    def _on_training_start(self) -> None:
        policy = self.model.policy
        if not hasattr(policy, "sparse_controller"):
            raise TypeError(f"SparseTrainingCallback needs a sparse policy ('SparseMlpPolicy'), got {type(policy).__name__}")
        missing = self.controller.missing_hooks()
        if missing:
            raise RuntimeError(f"sparse invariant hooks are not installed: {', '.join(missing)}")
        self.controller.driven = True
        self.denormal.enter()
        self._counted_updates = self.model._n_updates
        self._sync()

    def _on_rollout_end(self) -> None:
        self._sync()  # train() runs next

    def _on_rollout_start(self) -> None:
        self._record()  # train() just ran

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._record()
        self.controller.driven = False
        self.denormal.leave()

    def _sync(self) -> None:
        self.controller.sync(self.model._n_updates, 1.0 - self.model._current_progress_remaining)

    def _record(self) -> None:
        controller = self.controller
        controller.refresh_targets()
        key = (controller.n_topology_updates, controller.clock // max(1, controller.config.update_interval))
        if key != self._stats_key:  # counts change only at topology updates
            self._stats_key = key
            self._stats = self._compute_stats()
            self._flops_per_update = per_update_train_flops(self.model)
        new_updates = self.model._n_updates - self._counted_updates
        self._counted_updates = self.model._n_updates
        controller.flops_so_far += new_updates * self._flops_per_update[0]
        dense_so_far = self.model._n_updates * self._flops_per_update[1]
        for key_, value in self._stats.items():
            self.logger.record(key_, value)
        interval = controller.config.dormant_interval
        if interval and self.model._n_updates // interval > self._dormant_epoch:
            self._dormant_epoch = self.model._n_updates // interval
            self._record_dormant()
        self.logger.record("sparse/topology_updates", controller.n_topology_updates)
        self.logger.record("sparse/changed_fraction", controller.last_changed_fraction)
        self.logger.record("sparse/train_flops", controller.flops_so_far)
        if dense_so_far:
            self.logger.record("sparse/train_flops_vs_dense", controller.flops_so_far / dense_so_far)

    def _record_dormant(self) -> None:
        """Dormant-neuron fractions per network on one replay batch (ReDo's score, tau = dormant_threshold)."""
        batch = self.model.replay_buffer.sample(self.model.batch_size)
        threshold = self.controller.config.dormant_threshold
        for name, net in self.controller.networks.items():
            if name == "critic":
                run = lambda net=net: net.online(batch.observations, batch.actions)  # noqa: E731
            else:
                run = lambda net=net: net.online(batch.observations)  # noqa: E731
            for layer, fraction in dormant_fractions(net.online, run, threshold).items():
                self.logger.record(f"sparse/dormant/{name}" + (f"/{layer}" if layer else ""), fraction)

    def _compute_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        active = dense = 0
        for name, net in self.controller.networks.items():
            entry = network_summary(net.online)
            active += entry["active_weights"]
            dense += entry["dense_weights"]
            stats[f"sparse/{name}/sparsity"] = entry["sparsity"]
            stats[f"sparse/{name}/active_weights"] = entry["active_weights"]
            if self.per_layer:
                for layer_name, layer in entry["layers"].items():
                    stats[f"sparse/{name}/{layer_name}/sparsity"] = layer["sparsity"]
        stats["sparse/sparsity"] = 1.0 - active / dense
        stats["sparse/active_weights"] = active
        return stats
