"""The truly sparse linear layer: only the active connections are stored.

A :class:`SparseLinear` holds ``values`` (one trainable entry per active connection) at
``weight_positions`` (flat row-major ``row * in_features + col``, int32, sorted ascending),
plus an optional ``bias``; its forward and backward run the kernels of
:mod:`sb3_sparse.core.sparse_ops`, so gradients, and the optimizer state built from them,
exist for the active connections only. A network is converted after it was sparsified as a
masked network (:func:`to_sparse_`), so both backends start from the same weights and masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import sparse_ops
from .layers import MaskedLayerMixin, MaskedLinear, SparseLayer, replace_layer

CNN_NEEDS_MASKED = "backend='sparse' supports Linear layers only; {name!r} is a {kind} (CNN policies need backend='masked')"


class SparseLinear(SparseLayer, nn.Module):
    """A linear layer whose weight is ``values`` at ``weight_positions`` (see the module docstring).

    :param in_features: size of each input sample.
    :param out_features: size of each output sample.
    :param positions: sorted flat row-major positions of the active connections.
    :param bias: whether the layer has a bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        positions: torch.Tensor,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        positions = _checked_positions(positions, in_features * out_features, "positions")
        self.values = nn.Parameter(torch.zeros(positions.numel(), device=device, dtype=dtype))
        self.register_buffer("weight_positions", positions.to(device=device, dtype=torch.int32))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        # RigL: the dense gradient of the last backward pass, recorded only while asked for.
        self.record_dense_grad = False
        #: Whether batch results are ordinary contiguous tensors (a network's output layer; see to_sparse_).
        self.contiguous_output = False
        self.dense_grad: torch.Tensor | None = None
        self._grad_task = -1
        # A target layer between updates may hold explicit zeros outside its support (see
        # backends.sparse_target): then ``live`` marks the slots of the support.
        self.live: torch.Tensor | None = None
        self._index: sparse_ops.SparseIndex | None = None
        self._index_key: tuple[torch.Tensor, int] | None = None

    @classmethod
    def from_masked(cls, layer: MaskedLinear) -> SparseLinear:
        """A sparse copy of a masked linear layer: its weights at its mask's positions, exactly; the bias is shared."""
        positions = torch.nonzero(layer.weight_mask.reshape(-1)).reshape(-1)
        new = cls(
            layer.in_features,
            layer.out_features,
            positions,
            bias=False,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        with torch.no_grad():
            new.values.copy_(layer.weight.reshape(-1)[positions])
        new.values.requires_grad_(layer.weight.requires_grad)
        new.bias = layer.bias
        if hasattr(layer, "final_count"):
            new.final_count = layer.final_count
        return new

    # -- the topology --------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        """The dense weight's shape ``(out_features, in_features)``."""
        return (self.out_features, self.in_features)

    @property
    def index(self) -> sparse_ops.SparseIndex:
        """The kernels' view of the current positions, rebuilt when they change.

        Keyed by the positions tensor and its in-place version counter, so any change of the
        positions (a mutator here, ``Module.to``, a loaded checkpoint) rebuilds it.
        """
        positions = self._buffers["weight_positions"]
        key = self._index_key
        if key is None or key[0] is not positions or key[1] != positions._version:
            self._index = sparse_ops.SparseIndex(positions, self.shape)
            self._index_key = (positions, positions._version)
        return self._index  # type: ignore[return-value]

    @torch.no_grad()
    def set_topology_(self, positions: torch.Tensor, values: torch.Tensor) -> nn.Parameter:
        """Replace positions and values by new tensors (a new ``values`` Parameter, same ``requires_grad``); return it."""
        positions = _checked_positions(positions, self.out_features * self.in_features, "positions")
        if values.shape != positions.shape:
            raise ValueError(f"values has shape {tuple(values.shape)}, positions {tuple(positions.shape)}; they must match")
        old = self._parameters["values"]
        self.values = nn.Parameter(values.detach().to(old), requires_grad=old.requires_grad)  # type: ignore[union-attr]
        self.weight_positions = positions.to(device=old.device, dtype=torch.int32)  # type: ignore[union-attr]
        self.live = None
        return self.values

    @torch.no_grad()
    def compact_(self) -> None:
        """Drop the slots outside ``live`` (if any): positions and values are the support alone."""
        if self.live is not None:
            self.set_topology_(self.weight_positions[self.live].clone(), self.values.detach()[self.live].clone())

    # -- the shared protocol -------------------------------------------------------------------

    def dense_mask(self) -> torch.Tensor:
        mask = self.values.new_zeros(self.out_features * self.in_features)
        positions = self.weight_positions if self.live is None else self.weight_positions[self.live]
        mask[positions.long()] = 1.0
        return mask.view(self.shape)

    def to_dense_weight(self) -> torch.Tensor:
        return sparse_ops.dense_weight(self.values.detach(), self.index)

    def n_active(self) -> int:
        return self.values.numel() if self.live is None else int(self.live.sum().item())

    def n_possible(self) -> int:
        return self.out_features * self.in_features

    def in_layout(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (values-shaped, or dense weight-shaped from a masked checkpoint) as values-shaped."""
        if tensor.shape == self.values.shape:
            return tensor
        if tensor.shape == self.shape:
            return tensor.reshape(-1)[self.weight_positions.long().to(tensor.device)]
        raise ValueError(f"cannot lay out a tensor of shape {tuple(tensor.shape)} as layer values {tuple(self.values.shape)}")

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self._parameters  # not Module.__getattr__: this runs per layer on every acting step
        y = sparse_ops.sparse_linear(x, params["values"], self.index, params["bias"], self.contiguous_output)
        if self.record_dense_grad and y.requires_grad:
            inputs = x.detach().reshape(-1, self.in_features)
            y.register_hook(lambda grad: self.record(grad.reshape(-1, self.out_features).T @ inputs))
        return y

    def record(self, contribution: torch.Tensor) -> None:
        """Add ``contribution`` (``grad^T x`` of one use of the layer) to the dense gradient of this backward pass.

        A new pass starts afresh: one backward pass is one gradient of the loss, as a dense
        weight's ``.grad`` after the ``zero_grad`` that SB3's algorithms call before each ``backward``.
        """
        task = torch._C._current_graph_task_id()
        if task != self._grad_task or self.dense_grad is None:
            self.dense_grad, self._grad_task = contribution, task
        else:
            self.dense_grad = self.dense_grad + contribution

    # -- checkpoints ---------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """Load a sparse layer's state, or a masked layer's (``weight`` and its mask), converted to positions.

        The number of active connections may differ from this layer's (a pruned or a fresh
        network): ``values`` and ``weight_positions`` are then replaced by tensors of the
        loaded size (the backend hands the new Parameter to the optimizer, see its ``reload``).
        """
        self.live = None
        if f"{prefix}weight_positions" not in state_dict and f"{prefix}weight" in state_dict:
            _sparse_state_from_masked_(self, state_dict, prefix)
        key = f"{prefix}weight_positions"
        if key in state_dict and f"{prefix}values" in state_dict:
            positions = _checked_positions(state_dict[key], self.out_features * self.in_features, key)
            values = state_dict[f"{prefix}values"]
            if values.shape != positions.shape:
                raise ValueError(f"{prefix}values has shape {tuple(values.shape)}, {key} {tuple(positions.shape)}")
            if positions.shape != self.weight_positions.shape:
                self.set_topology_(positions, values)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.live is not None:  # the support alone
            destination[f"{prefix}values"] = destination[f"{prefix}values"][self.live]
            destination[f"{prefix}weight_positions"] = destination[f"{prefix}weight_positions"][self.live]

    def extra_repr(self) -> str:
        density = self.n_active() / self.n_possible()
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, bias={self.bias is not None}, density={density:.4f}"


def _checked_positions(positions: torch.Tensor, size: int, name: str) -> torch.Tensor:
    """``positions`` if it is a sorted 1-D integer tensor of distinct positions in ``[0, size)``."""
    if positions.dim() != 1 or positions.is_floating_point() or positions.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 1-D integer tensor, got dtype {positions.dtype} and shape {tuple(positions.shape)}"
        )
    if positions.numel() and (int(positions[0]) < 0 or int(positions[-1]) >= size):
        raise ValueError(f"{name} must lie in [0, {size}), got [{int(positions[0])}, {int(positions[-1])}]")
    if positions.numel() > 1 and not bool((positions[1:] > positions[:-1]).all()):
        raise ValueError(f"{name} must be strictly increasing (sorted, distinct)")
    return positions


def _sparse_state_from_masked_(layer: SparseLinear, state_dict: dict[str, Any], prefix: str) -> None:
    """Rewrite a masked layer's entries of ``state_dict`` (in place) as this sparse layer's.

    The masked state is read by a masked layer's own loading, whatever format it stores its
    mask in; its weights at its mask's positions become ``values``.
    """
    own = {key[len(prefix) :]: state_dict.pop(key) for key in list(state_dict) if key.startswith(prefix)}
    masked = MaskedLinear(layer.in_features, layer.out_features, bias="bias" in own, device=layer.values.device)
    masked.load_state_dict(own)
    positions = torch.nonzero(masked.weight_mask.reshape(-1)).reshape(-1)
    state_dict[f"{prefix}values"] = masked.weight.detach().reshape(-1)[positions]
    state_dict[f"{prefix}weight_positions"] = positions.to(torch.int32)
    if "bias" in own:
        state_dict[f"{prefix}bias"] = own["bias"]


class FeatureMajorLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters, same state dict) that keeps the sparse layers' activation layout.

    The dense layers of a network with :class:`SparseLinear` layers (e.g. its output heads)
    receive feature-major inputs; ``F.linear`` on those is several times slower on the CPU than
    the same product as ``W @ x.T`` (:func:`~sb3_sparse.core.sparse_ops.linear_feature_major`).
    """

    contiguous_output = False  # see SparseLinear.contiguous_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] > 1 and x.is_cpu and x.T.is_contiguous():
            return sparse_ops.linear_feature_major(x, self.weight, self.bias, self.contiguous_output)
        return super().forward(x)


def to_sparse_(network: nn.Module) -> dict[nn.Parameter, nn.Parameter]:
    """Replace every masked layer of ``network`` by a :class:`SparseLinear` with the same weights.

    Plain ``nn.Linear`` layers become :class:`FeatureMajorLinear` (the same modules and
    Parameters), and the linear layer that ends each ``nn.Sequential`` returns contiguous results
    (``contiguous_output``), so the network's layout changes nothing outside it.

    :return: each replaced weight Parameter -> the ``values`` Parameter that replaces it (for an
        optimizer built before the conversion, see :func:`swap_parameters_`).
    :raises ValueError: for a masked convolution (only linear layers have a truly sparse kernel).
    """
    replaced = {}
    for name, module in list(network.named_modules()):
        if isinstance(module, MaskedLinear):
            sparse = SparseLinear.from_masked(module)
            replace_layer(network, name, sparse)
            replaced[module.weight] = sparse.values
        elif isinstance(module, MaskedLayerMixin):
            raise ValueError(CNN_NEEDS_MASKED.format(name=name, kind=type(module).__name__))
        elif type(module) is nn.Linear:
            module.__class__ = FeatureMajorLinear  # the same module and Parameters, another forward
    for module in network.modules():
        # A linear layer that ends a Sequential is an output (a Q-value or quantile head; hidden
        # stacks such as SAC's latent_pi end with an activation): its users may view it.
        if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], SparseLinear | FeatureMajorLinear):
            module[-1].contiguous_output = True
        if type(module) is nn.Sequential and any(isinstance(child, SparseLinear) for child in module):
            from .fused import FusedSequential  # fused imports this module

            module.__class__ = FusedSequential  # the same modules, one autograd node (see fused)
    return replaced


def swap_parameters_(optimizer: torch.optim.Optimizer, replaced: dict[nn.Parameter, nn.Parameter]) -> None:
    """Make an optimizer built before :func:`to_sparse_` train the new Parameters (it has no state for the old ones yet)."""
    for group in optimizer.param_groups:
        group["params"] = [replaced.get(p, p) for p in group["params"]]
