"""The training callback: feeds the update counter and training progress to the sparse policy, logs."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import obs_as_tensor

from .core.dormant import dormant_fractions
from .denormal import DenormalScope
from .summary import gradient_updates, network_summary, per_update_train_flops


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

    On-policy algorithms (PPO, A2C) keep the policy's own clock, which counts optimizer steps
    (PPO's ``_n_updates`` counts epochs), take the progress from the timesteps collected so far,
    and measure dormant neurons on the rollout just collected, before ``train()``.

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
        self._counted_updates = self._updates()
        self._sync()

    def _on_rollout_end(self) -> None:
        self._sync()  # train() runs next
        if self.on_policy:
            self._maybe_record_dormant()  # the rollout buffer is full now and reset before the next event

    def _on_rollout_start(self) -> None:
        self._record()  # train() just ran

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._record()
        self.controller.driven = False
        self.denormal.leave()

    @property
    def on_policy(self) -> bool:
        return isinstance(self.model, OnPolicyAlgorithm)

    def _updates(self) -> int:
        """Gradient updates so far: optimizer steps, counted by the policy's clock for on-policy algorithms."""
        return gradient_updates(self.model)

    def _sync(self) -> None:
        if self.on_policy:  # progress is updated after the rollout, before train(): compute it now
            self.controller.sync(self.controller.clock, min(1.0, self.model.num_timesteps / self.model._total_timesteps))
        else:
            self.controller.sync(self.model._n_updates, 1.0 - self.model._current_progress_remaining)

    def _record(self) -> None:
        controller = self.controller
        controller.refresh_targets()
        key = (controller.n_topology_updates, controller.clock // max(1, controller.config.update_interval))
        if key != self._stats_key:  # counts change only at topology updates
            self._stats_key = key
            self._stats = self._compute_stats()
            self._flops_per_update = per_update_train_flops(self.model)
        updates = self._updates()
        new_updates = updates - self._counted_updates
        self._counted_updates = updates
        controller.flops_so_far += new_updates * self._flops_per_update[0]
        dense_so_far = updates * self._flops_per_update[1]
        for key_, value in self._stats.items():
            self.logger.record(key_, value)
        if not self.on_policy:
            self._maybe_record_dormant()
        self.logger.record("sparse/topology_updates", controller.n_topology_updates)
        self.logger.record("sparse/changed_fraction", controller.last_changed_fraction)
        self.logger.record("sparse/train_flops", controller.flops_so_far)
        if dense_so_far:
            self.logger.record("sparse/train_flops_vs_dense", controller.flops_so_far / dense_so_far)

    def _maybe_record_dormant(self) -> None:
        interval = self.controller.config.dormant_interval
        if interval and self._updates() // interval > self._dormant_epoch:
            self._dormant_epoch = self._updates() // interval
            self._record_dormant()

    def _record_dormant(self) -> None:
        """Dormant-neuron fractions per network on one replay batch (ReDo's score, tau = dormant_threshold)."""
        if self.on_policy:
            self._record_dormant_on_policy()
            return
        batch = self.model.replay_buffer.sample(self.model.batch_size)
        threshold = self.controller.config.dormant_threshold
        for name, net in self.controller.networks.items():
            if name == "critic":
                run = lambda net=net: net.online(batch.observations, batch.actions)  # noqa: E731
            else:
                run = lambda net=net: net.online(batch.observations)  # noqa: E731
            for layer, fraction in dormant_fractions(net.online, run, threshold).items():
                self.logger.record(f"sparse/dormant/{name}" + (f"/{layer}" if layer else ""), fraction)

    def _record_dormant_on_policy(self) -> None:
        """Dormant fractions of the actor and critic views on (up to a batch of) the rollout just collected."""
        buffer, policy = self.model.rollout_buffer, self.model.policy
        size = min(buffer.buffer_size * buffer.n_envs, getattr(self.model, "batch_size", None) or 256)

        def flat(array: Any) -> Any:
            return array.reshape(-1, *array.shape[2:])[:size]

        observations = buffer.observations
        observations = {k: flat(v) for k, v in observations.items()} if isinstance(observations, dict) else flat(observations)
        obs = obs_as_tensor(observations, self.model.device)
        run = {"actor": lambda: policy.get_distribution(obs), "critic": lambda: policy.predict_values(obs)}
        threshold = self.controller.config.dormant_threshold
        for name, net in self.controller.networks.items():
            for layer, fraction in dormant_fractions(net.online, run[name], threshold).items():
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
