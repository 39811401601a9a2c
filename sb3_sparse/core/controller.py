"""Keeps networks sparse through training and evolves their topology on schedule.

The controller hooks into each network's optimizer (without moment masking, pre-step: mask
gradients and read RigL scores; with it, post-step: mask weights and moments; post-step in
both: evolve when due) and into each target network's forward (apply the target rule after a
target update). It never calls into an RL library: the clock is the number of optimizer
steps of one "clock" network, and training progress is handed in by whoever runs training.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .config import SparseConfig
from .network import MOMENT_SAFE, SQRT_STATE_KEYS, SparseNetwork, TargetWeight
from .schedules import cubic_sparsity_at, drop_fraction_at
from .topology import (
    TargetSupport,
    copy_online_mask_,
    drop_smallest,
    gradient_scores,
    grow_best,
    mask_state_,
    prune_to_count_,
    prune_to_magnitude_,
    random_scores,
)

FLOOR_RENEWAL = 100  # gradient updates between renewals of the second-moment floor (DS, static)

MISSING_DRIVER = (
    "sb3_sparse: method={method!r} evolves the topology only when training runs with "
    "sb3_sparse.SparseTrainingCallback (model.learn(..., callback=SparseTrainingCallback())). "
    "Without it the topology stays static."
)


class SparseController(nn.Module):
    """Runs one sparse-training method over a set of networks.

    :param config: the sparse settings.
    :param seed: seed of the topology random generator (drawn from torch's global RNG if ``None``).
    """

    def __init__(self, config: SparseConfig, seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        # Counters live in Python during training and in these buffers inside checkpoints.
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("rng_state", self.generator.get_state())
        self.register_buffer("topology_updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("changed_fraction", torch.zeros((), dtype=torch.float64))
        self.register_buffer("train_flops", torch.zeros((), dtype=torch.float64))
        self.register_buffer("progress", torch.zeros((), dtype=torch.float64))
        self.register_buffer("epochs", torch.zeros(0, dtype=torch.int64))
        self.networks: dict[str, SparseNetwork] = {}
        self.clock = 0
        self.n_topology_updates = 0
        self.last_changed_fraction = 0.0
        self.flops_so_far = 0.0
        self.training_progress = 0.0
        self.driven = False  # set by whoever supplies training progress (the SB3 callback)
        self._warned = False
        self._epoch_changed = 0
        self._epoch_active = 0

    # -- wiring -----------------------------------------------------------------------------

    def __setattr__(self, name: str, value: object) -> None:
        # Networks belong to their owner (the policy): keep them out of this module's state_dict.
        # The clock changes on every optimizer step: skip nn.Module's slower bookkeeping.
        if name in ("networks", "clock"):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def add_network(self, name: str, online: nn.Module, target: nn.Module | None = None, clock: bool = False) -> None:
        """Register a network whose masked layers this controller manages.

        :param name: name used in logs (``"actor"``, ``"critic"``, ``"q_net"``).
        :param online: the trained network.
        :param target: its target network, if any (same layer names).
        :param clock: whether this network's optimizer steps count gradient updates.
        """
        net = SparseNetwork(name, online, target, clock)
        self.networks[name] = net
        self.epochs = torch.zeros(len(self.networks), dtype=torch.int64)
        if target is not None:
            net.target_handle = target.register_forward_pre_hook(lambda module, args: self._refresh_target(net))

    def attach_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Install the step hooks on ``optimizer`` (idempotent).

        Only the hooks a method needs are installed, because each costs time on every step:
        without moment masking a pre-step hook masks the gradients (and a post-step hook
        evolves the topology, if the method does); with moment masking a post-step hook
        masks weights and moments and evolves.
        """
        net = self.networks[name]
        for handle in net.handles:
            handle.remove()
        net.optimizer = optimizer
        net.remask_weights = (
            self.config.evolves and not self.config.mask_optimizer_moments and type(optimizer) not in MOMENT_SAFE
        )
        net.handles = []
        if not self.config.mask_optimizer_moments:
            net.handles.append(optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._before_step(net)))
        if self.config.mask_optimizer_moments or self.config.evolves or net.remask_weights:
            net.handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: self._after_step(net)))

    def detach(self) -> None:
        """Remove every hook (optimizer steps and target forwards); tests use it as a negative control."""
        for net in self.networks.values():
            for handle in net.handles:
                handle.remove()
            net.handles = []
            if net.target_handle is not None:
                net.target_handle.remove()

    def missing_hooks(self) -> list[str]:
        """Names of the invariant hooks that are not installed (empty when all are)."""
        problems = []
        for net in self.networks.values():
            opt = net.optimizer
            installed = opt is not None and all(
                h.id in opt._optimizer_step_pre_hooks or h.id in opt._optimizer_step_post_hooks for h in net.handles
            )
            if not installed or not net.handles:
                problems.append(f"{net.name}: optimizer step hooks")
            if net.target is not None and (
                net.target_handle is None
                or net.target_handle.id not in net.target._forward_pre_hooks
                or any(not isinstance(t.weight, TargetWeight) for t in net.target_layers)
            ):
                problems.append(f"{net.name}: target rule")
        return problems

    # -- the hooks ----------------------------------------------------------------------------

    def _due(self, net: SparseNetwork) -> bool:
        cfg = self.config
        if not cfg.evolves or self.clock // cfg.update_interval <= net.epoch:
            return False
        if not self.driven:
            if not self._warned:
                warnings.warn(MISSING_DRIVER.format(method=cfg.method), stacklevel=2)
                self._warned = True
            return False
        if cfg.method == "gmp":
            return self.training_progress >= cfg.prune_start_fraction
        return self.training_progress <= cfg.end_fraction

    def _before_step(self, net: SparseNetwork) -> None:
        """Without moment masking: mask the gradients, so absent connections get no update."""
        if net.clock:
            self.clock += 1
        grads = [w.grad for w in net.weights()]
        if any(g is None for g in grads):
            return
        if self.config.method == "rigl" and self._due(net):
            # The dense gradient of this network's own loss, before it is masked.
            net.grad_scores = [gradient_scores(g) for g in grads]
        torch._foreach_mul_(grads, net.masks())
        if self.clock % FLOOR_RENEWAL == 0:
            self._floor_second_moments(net)

    def _after_step(self, net: SparseNetwork) -> None:
        if self.config.mask_optimizer_moments:
            if net.clock:
                self.clock += 1
            if self.config.method == "rigl" and self._due(net):
                # Gradients are never masked in this mode: .grad is the dense gradient.
                grads = [w.grad for w in net.weights()]
                net.grad_scores = [gradient_scores(g) for g in grads] if all(g is not None for g in grads) else None
            # One fused multiply over weights and weight-shaped optimizer state, layer by layer
            # so that each mask is read while it is still in cache.
            tensors, masks = net.masked_state()
            torch._foreach_mul_(tensors, masks)
        elif net.remask_weights:
            # An optimizer not known to leave a parameter alone when its gradient and first
            # moment are 0 (see MOMENT_SAFE) may move absent weights: put them back to 0.
            torch._foreach_mul_([w.detach() for w in net.weights()], net.masks())
        if self._due(net):
            self._update_topology(net)

    def _floor_second_moments(self, net: SparseNetwork) -> None:
        """Keep Adam from taking ``sqrt(0)`` at absent connections (moments unmasked).

        ``sqrt(0)`` is 5-8x slower than ``sqrt`` of a normal number on the AVX2 CPUs
        measured here (docs/benchmarks.md), and absent connections that never had a gradient
        have a second moment of 0. Their gradient and first moment are 0, so the update there
        is 0 whatever the denominator. A floor of 1e-30 leaves any second moment above ~1e-23
        bit-unchanged (it is below half an ulp) and keeps never-used positions at a normal
        float. It decays by beta2 per step (0.999**100 = 0.9), so it is renewed every
        FLOOR_RENEWAL updates. Tied to the saved clock, so a loaded model renews on the same
        updates; a network stepping every d updates (TD3's actor) renews every
        lcm(d, FLOOR_RENEWAL) updates, i.e. at most every FLOOR_RENEWAL own steps.
        (With moment masking the gradient is not masked, so the second moment is not 0 during
        the step and the post-step mask restores the exact 0.)
        """
        seconds, floors = [], []
        for layer, floor in zip(net.layers, net.absent_floors(), strict=True):
            state = net.optimizer.state.get(layer.weight) if net.optimizer is not None else None
            for key in SQRT_STATE_KEYS if state else ():
                if key in state:
                    seconds.append(state[key])
                    floors.append(floor)
        if seconds:
            torch._foreach_add_(seconds, floors)

    @torch.no_grad()
    def _update_topology(self, net: SparseNetwork) -> None:
        cfg = self.config
        epoch = self.clock // cfg.update_interval
        if epoch > max(n.epoch for n in self.networks.values()):
            self.n_topology_updates += 1
            self._epoch_changed = self._epoch_active = 0
        net.epoch = epoch
        self.generator.set_state(self.rng_state.cpu())
        for i, layer in enumerate(net.layers):
            before = layer.weight_mask.clone()
            if cfg.method == "gmp":
                self._prune_layer(net, i)
            else:
                self._drop_and_grow(net, i)
            self._epoch_changed += int((layer.weight_mask - before).abs().sum().item())
            self._epoch_active += net.counts[i]
            if i < len(net.target_index):
                net.target_index[i] = None
        net.targets_synced = False
        net.absent_cache = None
        net.grad_scores = None
        self.rng_state.copy_(self.generator.get_state())
        # Connections changed per active connection (a swap counts twice: one out, one in).
        self.last_changed_fraction = self._epoch_changed / (2 * max(1, self._epoch_active))

    def _drop_and_grow(self, net: SparseNetwork, i: int) -> None:
        cfg = self.config
        layer = net.layers[i]
        fraction = drop_fraction_at(cfg.drop_fraction, cfg.drop_schedule, self.training_progress, cfg.end_fraction)
        n = round(fraction * net.counts[i])
        if n == 0 or net.counts[i] == layer.weight.numel():
            return
        n = min(n, layer.weight.numel() - net.counts[i])
        drop_smallest(layer, n)
        self._forget_dropped(net, layer)
        if net.grad_scores is not None:
            scores = net.grad_scores[i]
        else:
            scores = random_scores(layer.weight, self.generator)
        grow_best(layer, n, scores)

    def _forget_dropped(self, net: SparseNetwork, layer) -> None:
        """Zero optimizer state at connections just dropped: all of it with moment masking,
        else the first moment only (the second stays, as in the papers' SET), which is what
        lets a moment-safe optimizer leave absent weights at exactly 0 without a re-mask."""
        if self.config.mask_optimizer_moments:
            mask_state_(net.state_tensors(layer), layer.weight_mask)
        else:
            mask_state_(net.first_moments(layer), layer.weight_mask)

    def _prune_layer(self, net: SparseNetwork, i: int) -> None:
        """Gradual magnitude pruning: shrink the layer to the schedule's count."""
        cfg = self.config
        layer = net.layers[i]
        final = net.final_counts[i]
        size = layer.weight.numel()
        final_density = final / size
        initial_density = 1.0 - cfg.initial_sparsity
        sparsity = cubic_sparsity_at(
            1.0 - max(initial_density, final_density),
            1.0 - final_density,
            self.training_progress,
            cfg.prune_start_fraction,
            cfg.prune_end_fraction,
        )
        count = round((1.0 - sparsity) * size)
        n = net.counts[i] - count
        if n <= 0:
            return
        drop_smallest(layer, n)
        net.counts[i] = count
        self._forget_dropped(net, layer)
        if net.target_layers:  # the target follows the shrinking count at once, by magnitude
            prune_to_magnitude_(net.target_layers[i], count)

    def _refresh_target(self, net: SparseNetwork) -> None:
        """Apply the target rule after an update of the network's target weights."""
        if not net.target_updated[0]:
            return  # the common case, checked before every target forward: keep it cheap
        net.target_updated[0] = False
        if net.targets_synced:
            return  # target supports equal the online ones: an update keeps them so
        with torch.no_grad():
            # Every layer, updated or not: the rule is idempotent (SB3 updates them all at once).
            for i, (target, online) in enumerate(zip(net.target_layers, net.layers, strict=False)):
                if self.config.target_sparsity == "online_mask":
                    if net.target_index[i] is None:
                        copy_online_mask_(target, online)
                        net.target_index[i] = True  # in sync until the online mask changes
                    continue
                index = net.target_index[i]
                if index is None:
                    if int(target.weight_mask.sum().item()) != net.counts[i]:
                        prune_to_magnitude_(target, net.counts[i])  # the online count changed (pruning)
                    index = net.target_index[i] = TargetSupport(target, online)
                prune_to_count_(target, online, index)
            net.targets_synced = all(index is True or (index is not None and index.in_sync) for index in net.target_index)

    # -- state --------------------------------------------------------------------------------

    def refresh_targets(self) -> None:
        """Bring every target up to its rule now (before saving or inspecting)."""
        for net in self.networks.values():
            self._refresh_target(net)

    def sync(self, n_updates: int, progress: float) -> None:
        """Align the clock with the trainer's update counter and set the training progress."""
        self.clock = int(n_updates)
        self.training_progress = float(progress)

    def write_state(self) -> None:
        """Copy the Python-side counters into the buffers (before ``state_dict``)."""
        self.n_updates.fill_(self.clock)
        self.topology_updates.fill_(self.n_topology_updates)
        self.changed_fraction.fill_(self.last_changed_fraction)
        self.train_flops.fill_(self.flops_so_far)
        self.progress.fill_(self.training_progress)
        self.epochs = torch.tensor([n.epoch for n in self.networks.values()], dtype=torch.int64)

    @torch.no_grad()
    def read_state(self) -> None:
        """Restore the Python-side counters from the buffers (after ``load_state_dict``)."""
        self.clock = int(self.n_updates.item())
        self.n_topology_updates = int(self.topology_updates.item())
        self.last_changed_fraction = float(self.changed_fraction.item())
        self.flops_so_far = float(self.train_flops.item())
        self.training_progress = float(self.progress.item())
        for net, epoch in zip(self.networks.values(), self.epochs.tolist(), strict=True):
            net.epoch = int(epoch)
            for layer in net.layers + net.target_layers:
                layer.weight.mul_(layer.weight_mask)
            net.counts = [int(m.sum().item()) for m in net.masks()]
            net.target_index = [None] * len(net.target_layers)
            net.targets_synced = False
            net.absent_cache = None
