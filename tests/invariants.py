"""Invariant checks shared by the tests: what must hold at every observable point, on either backend."""

from __future__ import annotations

import torch

from sb3_sparse.core.layers import trained_parameter


def check_online(controller, name: str | None = None) -> None:
    """Absent weights are zero, counts are as configured, optimizer state exists (or is zero) for
    active connections only under moment masking."""
    for net_name, net in controller.networks.items():
        if name is not None and net_name != name:
            continue
        for layer_name, layer, count in zip(net.layer_names, net.layers, net.counts, strict=True):
            where = f"{net_name}.{layer_name}"
            mask = layer.dense_mask()
            absent = mask == 0
            assert torch.all(layer.to_dense_weight()[absent] == 0), f"{where}: absent weights are not zero"
            assert int(mask.sum()) == count, f"{where}: {int(mask.sum())} active, configured {count}"
            param = trained_parameter(layer)
            assert param.shape in (mask.shape, (count,)), f"{where}: weights stored as {tuple(param.shape)}"
            if controller.config.mask_optimizer_moments:
                state = net.optimizer.state.get(param, {})
                for key, value in state.items():
                    if not isinstance(value, torch.Tensor) or value.dim() == 0:
                        continue
                    assert value.shape == param.shape, f"{where}: optimizer state {key} shaped {tuple(value.shape)}"
                    if value.shape == mask.shape:
                        assert torch.all(value[absent] == 0), f"{where}: optimizer state is not zero at absent connections"


def check_target(controller, name: str) -> None:
    """A target network has no more connections than its online network, inside its own mask."""
    net = controller.networks[name]
    for layer_name, target, online in zip(net.layer_names, net.target_layers, net.layers, strict=True):
        where = f"{name}_target.{layer_name}"
        mask = target.dense_mask()
        assert torch.all(target.to_dense_weight()[mask == 0] == 0), f"{where}: weights outside the target support"
        assert int(mask.sum()) == online.n_active(), f"{where}: target count differs"


class InvariantProbe:
    """Checks the invariants after every optimizer step and before every target forward.

    Registered after the controller's hooks, so it sees what the algorithm sees next.
    """

    def __init__(self, controller) -> None:
        self.steps = 0
        self.target_forwards = 0
        self.handles = []
        for name, net in controller.networks.items():
            self.handles.append(net.optimizer.register_step_post_hook(lambda *a, n=name: self._step(controller, n)))
            if net.target is not None:
                self.handles.append(net.target.register_forward_pre_hook(lambda *a, n=name: self._target(controller, n)))

    def _step(self, controller, name: str) -> None:
        check_online(controller, name)
        self.steps += 1

    def _target(self, controller, name: str) -> None:
        check_target(controller, name)
        self.target_forwards += 1

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
