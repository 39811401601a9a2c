"""Agents usable without the plugin: a plain SB3 zip, or the active weights alone for NumPy.

``export(model, "agent.zip")`` writes what ``TD3.load``/``SAC.load``/``DQN.load`` (and
sb3-contrib's ``TQC``/``QRDQN``/``CrossQ``) open with no sb3-sparse installed: the model with
SB3's own policy class; absent connections are stored as zeros, so the actions are identical.
``export(model, "agent.npz", format="compact")`` writes only the actor's active weights and
their positions, plus a copy of :mod:`sb3_sparse.compact_loader` next to it (NumPy alone).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn

from . import compact_loader
from .core import sparse_ops
from .core.config import FIELDS
from .core.layers import SparseLayer, sparse_layers
from .core.sparse_layer import SparseLinear
from .core.sparsify import LINEAR

__all__ = ["FORMATS", "export", "plain_policy"]

FORMATS = ("sb3", "compact")
_OPTIMIZERS = ("optimizer", "actor.optimizer", "critic.optimizer")
_NOT_POLICY_KWARGS = ("observation_space", "action_space", "lr_schedule", "preset", *FIELDS)


def export(model: BaseAlgorithm, path: str | Path, format: str = "sb3") -> Path:
    """Write ``model`` in a form that needs no sb3-sparse to run.

    :param model: a trained SB3 / sb3-contrib off-policy model (sparse or dense policy).
    :param path: the file to write (``.zip`` added for ``"sb3"``, ``.npz`` for ``"compact"``).
    :param format: ``"sb3"``: a zip that the algorithm's own ``load`` opens, with SB3's policy class
        (optimizer state kept when the parameters match, e.g. not after ``bias=False``);
        ``"compact"``: the deterministic actor's active weights, int32 positions and biases in an
        ``.npz`` plus ``compact_loader.py`` in the same folder (MLP policies on Box observations; a
        ``VecNormalize``'s observation statistics are not included: normalise before ``predict``).
    :return: the path written.
    """
    if format == "sb3":
        return _export_sb3(model, Path(path))
    if format == "compact":
        return _export_compact(model, Path(path))
    raise ValueError(f"Unknown format={format!r}; allowed: {list(FORMATS)}")


def plain_policy(policy: BasePolicy) -> BasePolicy:
    """A policy of SB3's (or sb3-contrib's) own class with ``policy``'s weights (masked entries zero).

    :param policy: a sparse (or already plain) policy.
    :return: a new policy on the same device; parameters a sparse layer removed (``bias=False``) are zero.
    """
    plain_cls = next(c for c in type(policy).__mro__ if c.__module__.startswith(("stable_baselines3", "sb3_contrib")))
    params = policy._get_constructor_parameters()
    kwargs = {k: v for k, v in params.items() if k not in _NOT_POLICY_KWARGS}
    plain = plain_cls(params["observation_space"], params["action_space"], policy._dummy_schedule, **kwargs).to(policy.device)
    source = policy.state_dict()
    # Either backend's sparse layers, as dense weights (absent entries exactly 0).
    dense = {f"{name}.weight": layer.to_dense_weight() * layer.dense_mask() for name, layer in sparse_layers(policy)}
    state = {}
    for key, value in plain.state_dict().items():
        if key in dense:
            state[key] = dense[key]
        elif key in source:
            state[key] = source[key]
        elif key.endswith(".bias"):
            state[key] = torch.zeros_like(value)
        else:
            raise KeyError(f"{type(policy).__name__} has no {key!r} for {plain_cls.__name__}")
    plain.load_state_dict(state)
    plain.set_training_mode(policy.training)
    return plain


def _export_sb3(model: BaseAlgorithm, path: Path) -> Path:
    plain = plain_policy(model.policy)
    for name in _OPTIMIZERS:
        source, target = _attribute(model.policy, name), _attribute(plain, name)
        if source is not None and target is not None:
            try:
                target.load_state_dict(_dense_optimizer_state(model.policy, source))
            except ValueError:  # parameters differ (bias=False): the plain policy keeps a fresh optimizer
                pass
    params = plain._get_constructor_parameters()
    export_model = copy.copy(model)  # a shallow copy: the caller's model is left untouched
    export_model.policy = plain
    export_model.policy_class = type(plain)
    export_model.policy_kwargs = {k: v for k, v in params.items() if k not in _NOT_POLICY_KWARGS}
    export_model._create_aliases()  # actor/critic/q_net point at the plain policy's networks for saving
    export_model.save(path)
    return path if path.suffix == ".zip" else path.with_name(path.name + ".zip")


def _dense_optimizer_state(policy: BasePolicy, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with a truly sparse layer's state laid out like its dense weight (0 where absent)."""
    layers = {id(m.values): m for _, m in sparse_layers(policy) if isinstance(m, SparseLinear)}
    state_dict = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    keys = [k for group in state_dict["param_groups"] for k in group["params"]]
    for param, key in zip(params, keys, strict=True):
        layer = layers.get(id(param))
        if layer is not None and key in state_dict["state"]:
            state_dict["state"][key] = {
                name: sparse_ops.dense_weight(value, layer.index)
                if torch.is_tensor(value) and value.shape == param.shape
                else value
                for name, value in state_dict["state"][key].items()
            }
    return state_dict


def _attribute(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def _export_compact(model: BaseAlgorithm, path: Path) -> Path:
    policy = model.policy
    observation_space = policy.observation_space
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) > 1:
        raise NotImplementedError(f"format='compact' needs a flat Box observation space, not {observation_space}")
    network, head = _actor_network(policy)
    if not isinstance(getattr(network, "features_extractor", None), FlattenExtractor):
        raise NotImplementedError("format='compact' supports MLP policies (FlattenExtractor); use format='sb3'")
    ops: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for module in _modules(network):
        if isinstance(module, LINEAR):
            key = f"layer{sum(op['op'] == 'linear' for op in ops)}"
            sparse = isinstance(module, SparseLayer)
            weight = (module.to_dense_weight() if sparse else module.weight.detach()).cpu().numpy().astype(np.float32)
            weight = weight.reshape(-1)
            mask = module.dense_mask().cpu().numpy().reshape(-1) if sparse else weight != 0
            indices = np.flatnonzero(mask).astype(np.int32)
            arrays[f"{key}.values"], arrays[f"{key}.indices"] = weight[indices], indices
            if module.bias is not None:
                arrays[f"{key}.bias"] = module.bias.detach().cpu().numpy().astype(np.float32)
            else:
                arrays[f"{key}.bias"] = np.zeros(module.out_features, dtype=np.float32)
            ops.append({"op": "linear", "key": key, "in": module.in_features, "out": module.out_features})
        elif hasattr(module, "ra_mean") and hasattr(module, "ra_var"):  # sb3-contrib's BatchRenorm (CrossQ)
            key = f"norm{sum(op['op'] == 'affine' for op in ops)}"
            arrays[f"{key}.scale"], arrays[f"{key}.shift"] = _renorm_affine(module)
            ops.append({"op": "affine", "key": key})
        else:
            ops.append(_activation(module))
    meta = {
        "format": compact_loader.FORMAT,
        "version": compact_loader.VERSION,
        "algorithm": type(model).__name__,
        "observation_shape": list(observation_space.shape),
        "layers": ops,
        "head": head,
    }
    path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    shutil.copy(compact_loader.__file__, path.with_name("compact_loader.py"))
    return path


def _actor_network(policy: BasePolicy) -> tuple[nn.Module, dict[str, Any]]:
    """The module holding the deterministic action's layers, and how its output becomes an action."""
    space = policy.action_space
    if isinstance(space, spaces.Box):
        actor = policy.actor
        if getattr(actor, "use_sde", False):
            raise NotImplementedError("format='compact' does not support gSDE actors; use format='sb3'")
        head = {
            "type": "box",
            "squash": bool(policy.squash_output),
            "low": space.low.reshape(-1).tolist(),
            "high": space.high.reshape(-1).tolist(),
            "shape": list(space.shape),
        }
        return actor, head
    if hasattr(policy, "quantile_net"):
        net = policy.quantile_net
        return net, {"type": "quantile_argmax", "n_quantiles": net.n_quantiles, "n_actions": int(space.n)}
    return policy.q_net, {"type": "argmax"}


def _modules(network: nn.Module) -> list[nn.Module]:
    """The layers of the deterministic path, in order: TD3's ``mu``; SAC/TQC's ``latent_pi``, ``mu``, tanh; DQN's."""
    if hasattr(network, "latent_pi"):  # SAC-style actor: the mode of a tanh-squashed Gaussian
        return [*network.latent_pi, network.mu, nn.Tanh()]
    sequential = next(getattr(network, n) for n in ("mu", "q_net", "quantile_net") if hasattr(network, n))
    return [m for m in sequential if not isinstance(m, nn.Identity)]


def _renorm_affine(module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Batch Renormalization in evaluation mode (running statistics) as ``x * scale + shift``."""
    with torch.no_grad():
        scale = 1.0 / torch.sqrt(module.ra_var + module.eps)
        shift = -module.ra_mean * scale
        if module.affine:
            scale, shift = scale * module.scale, shift * module.scale + module.bias
    return scale.cpu().numpy().astype(np.float32), shift.cpu().numpy().astype(np.float32)


def _activation(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, nn.ReLU):
        return {"op": "relu"}
    if isinstance(module, nn.LeakyReLU):
        return {"op": "leaky_relu", "negative_slope": module.negative_slope}
    if isinstance(module, nn.Tanh):
        return {"op": "tanh"}
    if isinstance(module, nn.ELU):
        return {"op": "elu", "alpha": module.alpha}
    if isinstance(module, nn.Sigmoid):
        return {"op": "sigmoid"}
    if isinstance(module, nn.SiLU):
        return {"op": "silu"}
    raise NotImplementedError(f"format='compact' cannot export a {type(module).__name__} layer; use format='sb3'")
