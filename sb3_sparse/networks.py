"""Sparse networks saved on their own (``model.q_net.save(path)``) load back with their masks
(or, from the sparse backend, their values and positions).

SB3's ``BaseModel.load`` rebuilds a network from its constructor arguments, which builds it
dense, and then loads a state dict that holds masks (``weight_mask_bits``, or a float
``weight_mask`` in older checkpoints). The sparse policies give each network they sparsify a
subclass of its SB3 class (``QNetwork`` becomes ``SparseQNetwork``) whose ``load_state_dict``
first turns the layers the state dict masks into masked layers, so
``type(model.q_net).load(path)`` restores the network exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from stable_baselines3.common.policies import ContinuousCritic
from torch import nn

from .core.fused import run_parallel
from .core.layers import MaskedLayerMixin, replace_layer, to_masked
from .core.mask_bits import BITS_KEY, MASK_KEY
from .core.sparse_layer import SparseLinear

_CLASSES: dict[type, type] = {}  # SB3 network class -> its sparse subclass


class SparseNetworkMixin:
    """Loads a state dict with masks into a network built dense."""

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        mask_like_(self, state_dict)  # type: ignore[arg-type]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]


class SparseCriticMixin(SparseNetworkMixin):
    """SB3's ``ContinuousCritic.forward``, with the Q-networks run by :func:`~.core.fused.run_parallel`: on the sparse
    backend they share one transposition of their input and one autograd node (one of each per network otherwise)."""

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.set_grad_enabled(not self.share_features_extractor):  # type: ignore[attr-defined]
            features = self.extract_features(obs, self.features_extractor)  # type: ignore[attr-defined]
        return run_parallel(self.q_networks, torch.cat([features, actions], dim=1))  # type: ignore[attr-defined]


def mask_like_(module: nn.Module, state_dict: Mapping[str, Any]) -> None:
    """Replace each dense layer of ``module`` that ``state_dict`` gives a mask by a masked one.

    :param module: the network to load into.
    :param state_dict: the state to be loaded (masks are copied by the load that follows).
    """
    for key in state_dict:
        name, _, leaf = key.rpartition(".")
        if leaf == "weight_positions":  # a sparse-backend layer: its positions come with the load
            layer = module.get_submodule(name)
            if isinstance(layer, nn.Linear):
                positions = torch.zeros(0, dtype=torch.int32)
                sparse = SparseLinear(layer.in_features, layer.out_features, positions, bias=f"{name}.bias" in state_dict)
                replace_layer(module, name, sparse.to(layer.weight.device))
            continue
        if leaf not in (BITS_KEY, MASK_KEY):
            continue
        layer = module.get_submodule(name)
        if not isinstance(layer, MaskedLayerMixin):
            masked = to_masked(layer, bias=None if f"{name}.bias" in state_dict else False)  # bias=False
            masked.weight_mask = torch.ones_like(layer.weight)  # replaced by the loaded mask
            replace_layer(module, name, masked)


def make_sparse_class_(network: nn.Module) -> nn.Module:
    """Give ``network`` the sparse subclass of its class (a module attribute, so it pickles by reference).

    :param network: a network the sparse policy just sparsified.
    :return: the same network.
    """
    base = type(network)
    if isinstance(network, SparseNetworkMixin):
        return network
    if base not in _CLASSES:
        # Shown as Sparse<Name>; found (by pickle) under a name unique to the base class, since
        # SB3 has several classes of one name (TD3's and SAC's Actor).
        key = f"Sparse_{base.__module__.replace('.', '_')}_{base.__qualname__}"
        # A critic whose forward is SB3's own gets the one that runs its Q-networks together.
        mixin = SparseCriticMixin if getattr(base, "forward", None) is ContinuousCritic.forward else SparseNetworkMixin
        cls = type(f"Sparse{base.__name__}", (mixin, base), {"__module__": __name__, "__doc__": base.__doc__})
        cls.__qualname__ = key
        globals()[key] = _CLASSES[base] = cls
    network.__class__ = _CLASSES[base]
    return network
