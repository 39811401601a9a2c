"""Parameter and FLOPs accounting for sparse (and dense) SB3 policies.

Training FLOPs follow Evci et al. (2020), as used by Sokar et al. (2022): one update
of a network costs 3x its forward pass, a forward pass costs 2 FLOPs per active
weight per sample (per output position for convolutions), target-network forwards
are not counted, and the actor of TD3 is updated once every ``policy_delay`` updates.
RigL adds a dense backward pass every ``update_interval`` updates:
``(3 f_S dT + 2 f_S + f_D) / (dT + 1)`` per update.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from torch import nn

from .core.layers import SparseLayer, active_count
from .core.methods import METHODS
from .core.sparsify import LAYERS


def _layer_entry(layer: nn.Module) -> dict[str, Any]:
    if isinstance(layer, SparseLayer):
        dense = layer.n_possible()
        active = active_count(layer)
    else:
        dense = active = layer.weight.numel()
    positions = getattr(layer, "output_positions", 1)
    return {
        "active_weights": active,
        "dense_weights": dense,
        "sparsity": 1.0 - active / dense,
        "forward_flops": 2 * active * positions,
        "dense_forward_flops": 2 * dense * positions,
    }


def network_summary(network: nn.Module) -> dict[str, Any]:
    """Active/dense weights, sparsity and per-sample forward FLOPs of one network and its layers."""
    layers = {name: _layer_entry(m) for name, m in network.named_modules() if isinstance(m, LAYERS)}
    entry: dict[str, Any] = {key: sum(layer[key] for layer in layers.values()) for key in _SUMMED}
    entry["sparsity"] = 1.0 - entry["active_weights"] / entry["dense_weights"]
    entry["layers"] = layers
    return entry


_SUMMED = ("active_weights", "dense_weights", "forward_flops", "dense_forward_flops")


def gradient_updates(model: Any) -> int:
    """Gradient updates (optimizer steps) so far.

    SB3's ``_n_updates``, except for on-policy algorithms, whose PPO ``_n_updates`` counts epochs:
    there, the sparse policy's own count of optimizer steps (saved with the model).
    """
    if isinstance(model, OnPolicyAlgorithm):
        return model.policy.sparse_controller.clock
    return model._n_updates


def update_periods(model: Any) -> dict[str, int]:
    """Gradient updates between two updates of each network (TD3's actor: ``policy_delay``)."""
    return {"actor": int(getattr(model, "policy_delay", 1))}


def summary(model: Any, n_updates: int | None = None) -> dict[str, Any]:
    """Sparsity, parameter counts and FLOPs of a sparse SB3 model.

    :param model: an SB3 algorithm whose policy is a sparse policy.
    :param n_updates: if given, also report ``train_flops`` and ``dense_train_flops`` for this
        many gradient updates at the model's batch size (and policy delay).
    :return: ``active_weights``, ``dense_weights``, ``sparsity``, ``networks`` (per network, each
        with ``layers``), ``method`` and, with ``n_updates``, the training FLOPs.
    """
    policy = model.policy
    controller = getattr(policy, "sparse_controller", None)
    if controller is None:
        raise TypeError(f"summary() needs a sparse policy, got {type(policy).__name__}")
    controller.refresh_targets()
    networks = {name: network_summary(net.online) for name, net in controller.networks.items()}
    out: dict[str, Any] = {key: sum(n[key] for n in networks.values()) for key in _SUMMED}
    out["sparsity"] = 1.0 - out["active_weights"] / out["dense_weights"]
    out["networks"] = networks
    out["method"] = controller.config.method
    out["topology_updates"] = controller.n_topology_updates
    out["updates_since_topology_change"] = controller.clock - _last_change(controller)
    if n_updates is not None:
        sparse, dense = per_update_train_flops(model, networks)
        out["train_flops"] = sparse * n_updates
        out["dense_train_flops"] = dense * n_updates
    return out


def per_update_train_flops(model: Any, networks: dict[str, Any] | None = None) -> tuple[float, float]:
    """Training FLOPs of one gradient update (sparse, dense) at the model's batch size."""
    if networks is None:
        controller = model.policy.sparse_controller
        networks = {name: network_summary(net.online) for name, net in controller.networks.items()}
    periods = update_periods(model)
    config = model.policy.sparse_controller.config
    # A2C trains on the whole rollout at once; the others (PPO included) on minibatches.
    batch = getattr(model, "batch_size", None) or model.n_steps * model.n_envs
    sparse = dense = 0.0
    for name, n in networks.items():
        f_sparse, f_dense = n["forward_flops"], n["dense_forward_flops"]
        per_update = 3 * f_sparse
        if METHODS[config.method].needs_gradient:
            # RigL: every delta_t of its own updates one backward pass computes dense gradients.
            delta_t = max(1.0, config.update_interval / periods.get(name, 1))
            per_update = (3 * f_sparse * delta_t + 2 * f_sparse + f_dense) / (delta_t + 1)
        sparse += batch * per_update / periods.get(name, 1)
        dense += batch * 3 * f_dense / periods.get(name, 1)
    return sparse, dense


def _last_change(controller: Any) -> int:
    if controller.n_topology_updates == 0:
        return 0
    interval = controller.config.update_interval
    return max(net.epoch for net in controller.networks.values()) * interval
