"""Invariant checks shared by the tests: what must hold at every observable point."""

from __future__ import annotations

import torch


def check_online(controller, name: str | None = None) -> None:
    """Masked weights are zero, counts are as configured, masked moments are zero."""
    for net_name, net in controller.networks.items():
        if name is not None and net_name != name:
            continue
        for layer_name, layer, count in zip(net.layer_names, net.layers, net.counts, strict=True):
            where = f"{net_name}.{layer_name}"
            absent = layer.weight_mask == 0
            assert torch.all(layer.weight[absent] == 0), f"{where}: absent weights are not zero"
            assert int(layer.weight_mask.sum()) == count, f"{where}: {int(layer.weight_mask.sum())} active, configured {count}"
            if controller.config.mask_optimizer_moments:
                for state in net.state_tensors(layer):
                    assert torch.all(state[absent] == 0), f"{where}: optimizer state is not zero at absent connections"


def check_target(controller, name: str) -> None:
    """A target network has no more connections than its online network, inside its own mask."""
    net = controller.networks[name]
    for layer_name, target, online in zip(net.layer_names, net.target_layers, net.layers, strict=True):
        where = f"{name}_target.{layer_name}"
        assert torch.all(target.weight[target.weight_mask == 0] == 0), f"{where}: weights outside the target support"
        assert int(target.weight_mask.sum()) == int(online.weight_mask.sum()), f"{where}: target count differs"


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
