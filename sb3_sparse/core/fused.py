"""One autograd node per network: a stack of sparse layers and activations run as one function.

At 256 units and 95% sparsity the sparse kernels are a small part of a training step; most of
the rest is paid per layer call and does not shrink with sparsity: a module call and an autograd
node per linear layer and per activation, and passes over the activations for each activation
(forward and backward) and each bias gradient. :class:`FusedSequential` runs an
``nn.Sequential`` of linear layers (:class:`~.sparse_layer.SparseLinear`,
:class:`~.sparse_layer.FeatureMajorLinear`) and ReLU, LeakyReLU or Tanh as one
:class:`torch.autograd.Function`, on the compiled kernels (:mod:`.native`):

- forward: a sparse layer applies its ReLU/LeakyReLU as it stores its result;
- backward: the gradient taken back through a sparse layer is multiplied by the gradient of the
  activation below it as it is stored (read from that activation's output: ``y > 0`` exactly
  where its input was) and summed over the batch on the way (that layer's bias gradient).

The results are the module-by-module forward's and gradients, to float rounding: the same
kernels in the same order. Whatever the fused function cannot honour runs module by module:
hooks (dormant-neuron scoring registers some), RigL's dense-gradient recording, tracing and
exporting, PyTorch's kernels (no compiled library, float64), other modules in the stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

from . import native, sparse_ops
from .sparse_layer import FeatureMajorLinear, SparseLinear

TANH = "tanh"  # nn.Tanh's kind; ReLU's and LeakyReLU's is their negative slope
Kind = float | str | None
Plan = list[tuple[nn.Module, Kind]]


def _kind(module: nn.Module) -> Kind:
    """What the fused function computes for activation ``module``: a negative slope, ``TANH``, or ``None`` (not fusable)."""
    if type(module) is nn.ReLU:
        return 0.0
    if type(module) is nn.LeakyReLU and module.negative_slope >= 0:  # then y > 0 exactly where x > 0
        return float(module.negative_slope)
    if type(module) is nn.Tanh:
        return TANH
    return None


def _chain(modules: tuple[nn.Module, ...]) -> Plan | None:
    """``(linear layer, activation after it or None)`` per layer, or ``None`` if ``modules`` are not a fusable chain."""
    plan: Plan = []
    for module in modules:
        if isinstance(module, SparseLinear | FeatureMajorLinear):
            plan.append((module, None))
        elif plan and plan[-1][1] is None and (kind := _kind(module)) is not None:
            plan[-1] = (plan[-1][0], kind)
        else:
            return None
    return plan if any(isinstance(layer, SparseLinear) for layer, _ in plan) else None


def _parameters(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    params = layer._parameters
    return params["values"] if "values" in params else params["weight"], params["bias"]


def _sparse(layer: nn.Module) -> bool:
    """Whether ``layer`` runs on the sparse kernels (a sparse layer too dense to gain runs dense)."""
    return isinstance(layer, SparseLinear) and not layer.index.dense


def _dense(layer: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    return sparse_ops.dense_weight(weight, layer.index) if isinstance(layer, SparseLinear) else weight


def _slope(kind: Kind) -> float | None:
    return None if kind == TANH else kind


def _activate_(y: torch.Tensor, kind: Kind) -> torch.Tensor:
    if kind == TANH:
        return y.tanh_()
    if kind is not None:
        return y.relu_() if kind == 0.0 else F.leaky_relu_(y, kind)
    return y


def _feature_major(lib, x: torch.Tensor) -> torch.Tensor:
    """``x.T`` contiguous: free when ``x`` is a sparse stack's (feature-major) output."""
    return x.T if x.T.is_contiguous() else native.transpose(lib, x.contiguous())


def _forward(plan: Plan, lib, x_t: torch.Tensor, params: tuple[torch.Tensor | None, ...]) -> list[torch.Tensor]:
    """Each layer's activated ``(out, batch)`` output, from the feature-major input ``x_t``."""
    outputs = []
    for i, (layer, kind) in enumerate(plan):
        weight, bias = params[2 * i], params[2 * i + 1]
        if _sparse(layer):
            y_t = native.times(lib, *layer.index.compressed(), weight, x_t, bias, activation=_slope(kind))
            if kind == TANH:
                y_t.tanh_()
        else:
            dense = _dense(layer, weight)
            y_t = _activate_(dense @ x_t if bias is None else torch.addmm(bias[:, None], dense, x_t), kind)
        outputs.append(y_t)
        x_t = y_t
    return outputs


def _batch_major(plan: Plan) -> bool:
    """Whether the stack returns an ordinary ``(batch, out)`` tensor, as its last layer would (see ``as_output``)."""
    last = plan[-1][0]
    return last.contiguous_output or last.out_features < sparse_ops.FEATURE_MAJOR_MIN_FEATURES


def _act_grad(lib, grad_t: torch.Tensor, y_t: torch.Tensor, kind: Kind, sums: torch.Tensor | None, own: bool):
    """The gradient before activation ``kind`` (output ``y_t``), with its row totals in ``sums``; in place if ``own``."""
    if kind == TANH:
        grad_t = grad_t * (1 - y_t * y_t)
    elif kind is not None:
        return native.activation_grad(lib, grad_t, y_t, kind, out=grad_t if own else None, sums=sums)
    if sums is not None:
        torch.sum(grad_t, 1, out=sums)
    return grad_t


class _FusedFunction(torch.autograd.Function):
    """The chain of layers and activations of a :class:`FusedSequential` as one autograd node.

    Takes ``x`` as ``(batch, in)`` and returns the last output as ``(out, batch)``, or as
    ``(batch, out)`` where the stack returns ordinary tensors: the transpositions happen inside,
    with no autograd node of their own.
    """

    @staticmethod
    def forward(ctx, plan: Plan, lib, x: torch.Tensor, *params: torch.Tensor | None) -> torch.Tensor:
        x_t = _feature_major(lib, x)
        outputs = _forward(plan, lib, x_t, params)
        ctx.plan, ctx.lib, ctx.batch_major = plan, lib, _batch_major(plan)
        # The last output only where its activation's gradient reads it (as nn.ReLU and nn.Tanh
        # keep theirs): then, as after those modules, the result must not be modified in place.
        last = outputs[-1] if plan[-1][1] is not None else None
        ctx.save_for_backward(x_t, *outputs[:-1], last, *params)
        return native.transpose(lib, outputs[-1]) if ctx.batch_major else outputs[-1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        plan, lib, n = ctx.plan, ctx.lib, len(ctx.plan)
        saved = ctx.saved_tensors
        inputs, outputs, params = saved[:n], saved[1 : n + 1], saved[n + 1 :]
        needs, needs_x = ctx.needs_input_grad[3:], ctx.needs_input_grad[2]
        grads: list[torch.Tensor | None] = [None] * (2 * n)
        # Bias gradients are summed where their layer's gradient is made; allocated here.
        for i in range(n):
            if needs[2 * i + 1]:
                grads[2 * i + 1] = grad.new_empty(plan[i][0].out_features)
        grad_t = native.transpose(lib, grad.contiguous()) if ctx.batch_major else grad.contiguous()
        grad_t = _act_grad(lib, grad_t, outputs[-1], plan[-1][1], grads[-1], own=ctx.batch_major)
        # Go down only as far as something wants a gradient (the input is usually observations).
        stop = 0 if needs_x else next((i for i in range(n) if needs[2 * i] or needs[2 * i + 1]), n)
        for i in reversed(range(stop, n)):
            layer, weight = plan[i][0], params[2 * i]
            sparse = _sparse(layer)
            if needs[2 * i]:
                if sparse:
                    grads[2 * i] = native.sampled_dot(lib, *layer.index.compressed(), grad_t, inputs[i])
                elif isinstance(layer, SparseLinear):  # a sparse layer on the dense path
                    grads[2 * i] = (grad_t @ inputs[i].T).reshape(-1)[layer.index.long_positions]
                else:
                    grads[2 * i] = grad_t @ inputs[i].T
            if i == stop and not needs_x:
                break
            # The gradient at this layer's input, taken back through the activation below, if any.
            kind, below, sums = (plan[i - 1][1], outputs[i - 1], grads[2 * i - 1]) if i else (None, None, None)
            if sparse and kind is not None and kind != TANH:
                ccol, row, perm = layer.index.transpose()
                grad_t = native.times(lib, ccol, row, weight, grad_t, perm=perm, gate=(below, kind), sums=sums)
                continue
            if sparse:
                ccol, row, perm = layer.index.transpose()
                grad_t = native.times(lib, ccol, row, weight, grad_t, perm=perm)
            else:
                grad_t = _dense(layer, weight).T @ grad_t
            if i:
                grad_t = _act_grad(lib, grad_t, below, kind, sums, own=True)
        return None, None, grad_t.T if needs_x else None, *grads


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` (same modules, same state dict) whose chain of linear layers and activations runs fused.

    See the module docstring for what it computes and when it runs module by module.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._fusable(x)
        if plan is None:
            return super().forward(x)
        lib = native.library()
        params = [p for layer, _ in plan for p in _parameters(layer)]
        grad = torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params))
        if x.shape[0] == 1 and not grad:
            return _act(plan, params, x)
        if grad:
            y = _FusedFunction.apply(plan, lib, x, *params)
            return y if _batch_major(plan) else y.T  # a view outside: in-place ops on it work
        y_t = _forward(plan, lib, _feature_major(lib, x), params)[-1]
        return native.transpose(lib, y_t) if _batch_major(plan) else y_t.T

    def _fusable(self, x: torch.Tensor) -> Plan | None:
        if (
            x.dim() != 2
            or x.dtype != torch.float32
            or not x.is_cpu
            or x.numel() == 0
            or self._forward_hooks
            or self._forward_pre_hooks
            or module_globals._global_forward_hooks
            or module_globals._global_forward_pre_hooks
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
            or torch.compiler.is_compiling()
            or native.library() is None
        ):
            return None
        modules = tuple(self._modules.values())
        cached = self.__dict__.get("_fused_plan")
        if cached is None or cached[0] != modules:  # a module was replaced: plan anew
            self.__dict__["_fused_plan"] = cached = (modules, _chain(modules))
        # Checked per call: hooks come and go (dormant-neuron scoring), RigL records gradients.
        if cached[1] is None or any(m._forward_hooks or m._forward_pre_hooks for m in modules):
            return None
        return None if any(getattr(layer, "record_dense_grad", False) for layer, _ in cached[1]) else cached[1]


def _act(plan: Plan, params: list[torch.Tensor | None], x: torch.Tensor) -> torch.Tensor:
    """One input row without autograd (SB3's acting): a matrix-vector product per layer, activations fused."""
    h = x[0]
    for i, (layer, kind) in enumerate(plan):
        weight, bias = params[2 * i], params[2 * i + 1]
        if isinstance(layer, SparseLinear):  # whatever its density, as SparseLinear acts
            h = layer.index.matvec(weight, h, bias, activation=_slope(kind))
            h = h.tanh_() if kind == TANH else h
        else:
            h = _activate_(F.linear(h[None], weight, bias)[0], kind)
    return h.unsqueeze(0)
