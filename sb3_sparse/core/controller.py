"""Keeps networks sparse through training and evolves their topology on schedule.

The controller hooks into each network's optimizer (without moment masking, pre-step: keep
the dense gradient if the method scores with it, then let the backend mask the gradients;
with it, post-step: let the backend mask weights and moments; post-step in both: evolve when
due) and into each target network's forward (apply the target rule after a target update).
It wires a method (:mod:`.methods`: what to drop, where to grow, how many, when) to a backend
(:mod:`.backends`: how connections are stored) and names neither: which hooks a method needs
is decided once, when they are installed. It never calls into an RL library: the clock is
the number of optimizer steps of one "clock" network, and training progress is handed in by
whoever runs training.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from .backends import BACKENDS, Backend, NonFiniteError
from .config import SparseConfig
from .methods import METHODS

MISSING_DRIVER = (
    "sb3_sparse: method={method!r} evolves the topology only when training runs with "
    "sb3_sparse.SparseTrainingCallback (model.learn(..., callback=SparseTrainingCallback())). "
    "Without it the topology stays static."
)


class SparseController(nn.Module):
    """Runs one sparse-training method over a set of networks.

    :param config: the sparse settings.
    :param seed: seed of the topology random generator (drawn from torch's global RNG if ``None``).
    :param backend: the layer representation of the networks (default: ``config.backend``'s).
    """

    def __init__(self, config: SparseConfig, seed: int | None = None, backend: type[Backend] | None = None) -> None:
        super().__init__()
        self.config = config
        self.method = METHODS[config.method]
        # Read on every optimizer step: plain attributes, decided once.
        self.evolves = self.method.evolves
        self.keeps_gradient = self.method.needs_gradient
        self.backend = BACKENDS[config.backend] if backend is None else backend
        # Returns the algorithm's current soft-update coefficient (set by whoever builds the networks).
        self.tau_source: Callable[[], float] | None = None
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
        self.networks: dict[str, Backend] = {}
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
        net = self.backend(name, online, target, clock, self.config.target_sparsity, tau=self._tau)
        self.networks[name] = net
        self.epochs = torch.zeros(len(self.networks), dtype=torch.int64)
        if target is not None:
            net.target_handle = target.register_forward_pre_hook(_hook(self._refresh_target, net))
            # SB3 iterates the target's parameters() at the start of every target update: the
            # previous update gets its rule there, so each update is pruned before the next even
            # with no target forward in between (DQN's soft updates during rollouts).
            target.parameters = functools.partial(self._target_parameters, net)

    def _tau(self) -> float:
        if self.tau_source is None:
            raise RuntimeError(
                "sb3_sparse: backend='sparse' with target_sparsity='magnitude' needs the algorithm's tau to update "
                "the target's own connections; build the policy through an SB3 algorithm or set sparse_controller.tau_source"
            )
        return self.tau_source()

    def reattach(self) -> None:
        """Install every network's optimizer hooks again: a copied optimizer (``copy.deepcopy``) has none."""
        for name, net in self.networks.items():
            if net.optimizer is not None:
                self.attach_optimizer(name, net.optimizer)

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
        if net.load_handle is not None:
            net.load_handle.remove()
        moments, evolves = self.config.mask_optimizer_moments, self.evolves
        net.attach(optimizer, evolves, moments)
        # A checkpoint of either backend: its optimizer state in this backend's layout.
        net.load_handle = optimizer.register_load_state_dict_pre_hook(net.convert_loaded_state)
        if self.keeps_gradient:
            net.want_dense_gradient(True)  # in case the first step is due; re-decided after each step
        net.handles = []
        if not moments:
            net.handles.append(optimizer.register_step_pre_hook(_hook(self._before_step, net)))
        if moments or evolves or net.remask_weights:
            net.handles.append(optimizer.register_step_post_hook(_hook(self._after_step, net)))

    def detach(self) -> None:
        """Remove every hook (optimizer steps and target forwards); tests use it as a negative control."""
        for net in self.networks.values():
            for handle in net.handles:
                handle.remove()
            net.handles = []
            if net.target_handle is not None:
                net.target_handle.remove()
                net.target.__dict__.pop("parameters", None)

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
                or "parameters" not in net.target.__dict__
                or not net.target_watched()
            ):
                problems.append(f"{net.name}: target rule")
        return problems

    # -- the hooks ----------------------------------------------------------------------------

    def _due(self, net: Backend) -> bool:
        cfg = self.config
        if not self.evolves or self.clock // cfg.update_interval <= net.epoch:
            return False
        if not self.driven:
            if not self._warned:
                warnings.warn(MISSING_DRIVER.format(method=cfg.method), stacklevel=2)
                self._warned = True
            return False
        return self.method.window(cfg, self.training_progress)

    def _before_step(self, net: Backend) -> None:
        """Without moment masking: the backend keeps absent connections from updating."""
        if net.clock:
            self.clock += 1
        grads = net.gradients()
        if grads is None:
            return
        if self.keeps_gradient and self._due(net):
            # The dense gradient of this network's own loss, before the backend masks it.
            net.dense_grads = [g.clone() for g in grads]
        net.before_step(grads, self.clock)

    def _after_step(self, net: Backend) -> None:
        if self.config.mask_optimizer_moments:
            if net.clock:
                self.clock += 1
            if self.keeps_gradient and self._due(net):
                net.dense_grads = net.dense_gradients()  # never masked in this mode: the dense gradient
            net.mask_after_step()
        elif net.remask_weights:
            net.remask()
        if self._due(net):
            self._update_topology(net)
        if self.keeps_gradient:
            self._want_dense_gradient(net)

    def _want_dense_gradient(self, net: Backend) -> None:
        """Tell the backend whether this network's next step may be a topology update (which needs
        its dense gradient): by the clock, counting as many updates ahead as since its last step."""
        ahead = max(1, self.clock - net.last_step)
        net.last_step = self.clock
        cfg = self.config
        soon = (self.clock + ahead) // cfg.update_interval > net.epoch
        net.want_dense_gradient(soon and self.method.window(cfg, self.training_progress))

    @torch.no_grad()
    def _update_topology(self, net: Backend) -> None:
        """Each layer drops the method's amount by its drop scores and grows as many by its grow scores."""
        cfg, method = self.config, self.method
        epoch = self.clock // cfg.update_interval
        garbage = net.nonfinite()
        if garbage is not None:
            raise self._nonfinite(net, garbage)
        if epoch > max(n.epoch for n in self.networks.values()):
            self.n_topology_updates += 1
            self._epoch_changed = self._epoch_active = 0
        net.epoch = epoch
        self.generator.set_state(self.rng_state.cpu())
        for i in range(len(net.layers)):
            n = method.amount(cfg, self.training_progress, net.counts[i], net.final_counts[i], net.size(i))
            if n > 0:
                grad = net.dense_grads[i] if net.dense_grads is not None else None
                dropped = net.drop(i, n, method.drop.score(net.weight(i), grad, self.generator))
                net.mask_optimizer_state(i, cfg.mask_optimizer_moments)
                changed = n
                if method.grow is not None:
                    grown = net.grow(i, n, method.grow.score(net.weight(i), grad, self.generator))
                    # A position dropped and grown again is unchanged (it restarts at 0).
                    changed += n - 2 * int(torch.isin(grown, dropped).sum().item())
                self._epoch_changed += changed
            self._epoch_active += net.counts[i]
            net.topology_changed(i)
        net.dense_grads = None
        self.rng_state.copy_(self.generator.get_state())
        # Connections changed per active connection (a swap counts twice: one out, one in).
        self.last_changed_fraction = self._epoch_changed / (2 * max(1, self._epoch_active))

    def _refresh_target(self, net: Backend) -> None:
        """Apply the target rule after an update of the network's target weights."""
        if not net.target_updated[0]:
            return  # the common case, checked before every target forward: keep it cheap
        net.target_updated[0] = False
        try:
            net.apply_target_rule()
        except NonFiniteError as error:
            raise self._nonfinite(net, str(error)) from None

    def _target_parameters(self, net: Backend, recurse: bool = True) -> Iterator[nn.Parameter]:
        self._refresh_target(net)  # an update not yet followed by a target forward: apply its rule now
        return net.target_parameters(recurse)

    def _nonfinite(self, net: Backend, where: str) -> NonFiniteError:
        return NonFiniteError(
            f"sb3_sparse: non-finite values in network {net.name!r}, {where}, at gradient update {self.clock} "
            f"(topology update {self.clock // self.config.update_interval}); stopped rather than evolve on them"
        )

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
        """Copy the Python-side counters into the buffers and settle the backends (before ``state_dict``)."""
        self.n_updates.fill_(self.clock)
        self.topology_updates.fill_(self.n_topology_updates)
        self.changed_fraction.fill_(self.last_changed_fraction)
        self.train_flops.fill_(self.flops_so_far)
        self.progress.fill_(self.training_progress)
        self.epochs = torch.tensor([n.epoch for n in self.networks.values()], dtype=torch.int64)
        for net in self.networks.values():
            net.before_save()

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
            net.reload()


def _hook(method: Callable[[Backend], object], net: Backend) -> functools.partial:
    """``method(net)`` as a hook, whatever the hook's own arguments.

    A partial of a bound method rather than a closure: ``copy.deepcopy`` of a policy copies it
    with the controller, so a copy's hooks drive the copy's networks (a closure would be shared,
    and would drive the original's).
    """
    return functools.partial(_call, method, net)


def _call(method: Callable[[Backend], object], net: Backend, *hook_arguments: object) -> None:
    method(net)
