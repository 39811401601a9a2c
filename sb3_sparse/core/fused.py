"""One autograd node per network pass, one compiled call for its sparse layers: a stack run fused.

At 256 units and 95% sparsity the sparse kernels are a small part of a training step; most of
the rest was paid per layer and does not shrink with sparsity: a module call, an autograd node
and a few Python-to-kernel calls per linear layer and per activation, and passes over the
activations for each activation (forward and backward) and each bias gradient.
:class:`FusedSequential` runs an ``nn.Sequential`` of :class:`~.sparse_layer.SparseLinear`
layers, each followed by at most a ReLU or LeakyReLU, then optionally a dense head
(:class:`~.sparse_layer.FeatureMajorLinear` with fewer than ``FEATURE_MAJOR_MIN_FEATURES``
outputs) and a Tanh at the very end (TD3's actor), as one :class:`torch.autograd.Function`
whose forward and backward run all its layers in one call each into the compiled kernels
(``stack_forward_f32``/``stack_backward_f32`` in ``csr_kernels.c``). The head runs on the
same CSR kernels, as a layer whose every connection is active: its index arrays are built
once per head shape and shared by all heads of that shape (16 bytes per head weight, not part
of any network):

- forward: each layer applies its ReLU/LeakyReLU as it stores its result;
- backward: the gradient taken back through a layer is multiplied by the gradient of the
  activation below it as it is stored (read from that activation's output: ``y > 0`` exactly
  where its input was, and ``y <= 0`` as PyTorch's ReLU reads it) and summed over the batch on
  the way (that layer's bias gradient); RigL's dense gradients are recorded from copies of each
  layer's output gradient.

The results are the module-by-module forward's and gradients to float rounding (sparse layers
that would take the dense path on their own run on the kernels here, and bias gradients are
summed in another order). Whatever the fused function cannot honour runs module by module:
hooks (dormant-neuron scoring registers some), tracing and compiling, PyTorch's kernels (no
compiled library, float64, other devices), other modules in the stack (a Tanh between layers,
wide dense layers, dropout, ...). One input row (acting) runs the same single call, in which
each product is a matrix-vector one. Stacks that read the same input (a critic's Q-networks)
run as one node with one transposition of that input: :func:`run_parallel`.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import torch
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
    """``(linear layer, activation after it or None)`` per layer, or ``None`` if ``modules`` are not a fusable chain.

    Fusable: sparse layers, each followed by at most one ReLU/LeakyReLU, then optionally a dense
    head (fewer than ``FEATURE_MAJOR_MIN_FEATURES`` outputs) and a Tanh at the very end (TD3's actor).
    """
    plan: Plan = []
    for module in modules:
        head = isinstance(module, FeatureMajorLinear) and module.out_features < sparse_ops.FEATURE_MAJOR_MIN_FEATURES
        if isinstance(module, SparseLinear) or head:
            plan.append((module, None))
        elif plan and plan[-1][1] is None and (kind := _kind(module)) is not None:
            plan[-1] = (plan[-1][0], kind)
        else:
            return None
    hidden = plan[:-1] if plan and isinstance(plan[-1][0], FeatureMajorLinear) else plan
    if not hidden or not all(isinstance(layer, SparseLinear) for layer, _ in hidden):
        return None
    return None if any(kind == TANH for _, kind in plan[:-1]) else plan


def _parameters(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    params = layer._parameters
    return params["values"] if "values" in params else params["weight"], params["bias"]


def _layers(owner: nn.Module, plan: Plan, params: list[torch.Tensor | None], grad_below: int) -> ctypes.Array:
    """The chain's layers as ``native.Layer`` descriptors, kept on ``owner`` while their indexes and tensors stay
    the same.

    :param grad_below: the layers from which on gradients are taken back to the layer's input
        (the transposes are built for those only: none in a forward pass, ``len(plan)``; from
        layer 1 on when the input needs no gradient, as observations).
    """
    indexes = [layer.index if isinstance(layer, SparseLinear) else _full_index(*layer.weight.shape) for layer, _ in plan]
    key = (*indexes, *[None if p is None else p.data_ptr() for p in params])
    cache = owner.__dict__.setdefault("_fused_layers", {})
    if grad_below in cache and cache[grad_below][0] == key:
        return cache[grad_below][1]
    layers = (native.Layer * len(indexes))()
    for i, (descriptor, index) in enumerate(zip(layers, indexes, strict=True)):
        descriptor.rows, descriptor.cols = index.shape
        descriptor.crow, descriptor.col = (t.data_ptr() for t in index.compressed())
        if i >= grad_below:  # memory: target networks and first layers never hold the transposes
            descriptor.ccol, descriptor.row, descriptor.perm = (t.data_ptr() for t in index.transpose())
        weight, bias, kind = params[2 * i], params[2 * i + 1], plan[i][1]
        descriptor.values, descriptor.bias = weight.data_ptr(), None if bias is None else bias.data_ptr()
        descriptor.activate = kind is not None and kind != TANH
        descriptor.slope = kind if descriptor.activate else 0.0
    cache[grad_below] = (key, layers)  # the key holds the indexes: their arrays live as long as it
    return layers


@functools.cache
def _full_index(rows: int, cols: int) -> sparse_ops.SparseIndex:
    """The index of a dense ``(rows, cols)`` layer: every connection active, in the weight's row-major order."""
    return sparse_ops.SparseIndex(torch.arange(rows * cols, dtype=torch.int32), (rows, cols), path="sparse")


def _forward(lib, layers: ctypes.Array, plan: Plan, x_t: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's activated ``(out, batch)`` output, from the feature-major input ``x_t``."""
    batch = x_t.shape[1]
    outputs = [x_t.new_empty(layer.out_features, batch) for layer, _ in plan]
    # ctypes arrays passed as arguments live until the call returns.
    threads = (torch.get_num_threads(), native.PARALLEL_MIN_WORK)
    lib.stack_forward_f32(len(layers), layers, batch, x_t.data_ptr(), native.pointers(outputs), *threads)
    if plan[-1][1] == TANH:
        outputs[-1].tanh_()
    return outputs


def _feature_major(lib, x: torch.Tensor) -> torch.Tensor:
    """``x.T`` contiguous: free when ``x`` is a sparse stack's (feature-major) output."""
    return x.T if x.T.is_contiguous() else native.transpose(lib, x.contiguous())


def _batch_major(plan: Plan) -> bool:
    """Whether the stack returns an ordinary ``(batch, out)`` tensor, as its last layer would (see ``as_output``)."""
    last = plan[-1][0]
    return sparse_ops.batch_major(last.out_features, last.contiguous_output)


def _act_grad(lib, grad_t: torch.Tensor, y_t: torch.Tensor | None, kind: Kind, sums: torch.Tensor | None, out: torch.Tensor):
    """Into ``out``: the gradient before activation ``kind`` (its output ``y_t``) from the contiguous ``grad_t``
    after it; its row totals (a bias gradient) into ``sums``."""
    if kind is not None and kind != TANH:
        native.activation_grad(lib, grad_t, y_t, kind, out=out, sums=sums)
        return
    if kind == TANH:
        torch.mul(grad_t, 1 - y_t * y_t, out=out)
    else:
        out.copy_(grad_t)
    if sums is not None:
        torch.sum(out, 1, out=sums)


Stack = tuple[nn.Module, Plan]  # a FusedSequential and its plan


def _backward(lib, stack: Stack, grad: torch.Tensor, x_t: torch.Tensor, outputs, params, needs, needs_x: bool):
    """One stack's parameter gradients (weight, bias per layer) and the gradient at its feature-major input
    (``None`` unless ``needs_x``), from ``grad`` at its output."""
    owner, plan = stack
    n, batch = len(plan), x_t.shape[1]
    weight_grads = [grad.new_empty(params[2 * i].shape) if needs[2 * i] else None for i in range(n)]
    bias_grads = [grad.new_empty(layer.out_features) if needs[2 * i + 1] else None for i, (layer, _) in enumerate(plan)]
    grad_x = x_t.new_empty(x_t.shape) if needs_x else None
    # Go down only as far as something wants a gradient (the input is usually observations).
    stop = 0 if needs_x else next((i for i in range(n) if needs[2 * i] or needs[2 * i + 1]), n)
    if stop < n:
        layers = _layers(owner, plan, list(params), 0 if needs_x else 1)
        # Two buffers the gradient alternates between on its way down; the gradient before the
        # last layer's activation starts in the first.
        buffers = grad.new_empty(2, max(max(layer.in_features, layer.out_features) for layer, _ in plan) * batch)
        top = buffers[0, : plan[-1][0].out_features * batch].view(-1, batch)
        grad_t = (grad.T if _batch_major(plan) else grad).contiguous()
        _act_grad(lib, grad_t, outputs[-1], plan[-1][1], bias_grads[-1], top)
        below = native.pointers([*outputs[:-1], None])  # ctypes arrays: alive until the call returns
        # RigL's dense gradients: the gradient at each recording layer's output, copied out.
        recorded = [
            grad.new_empty(layer.out_features, batch) if isinstance(layer, SparseLinear) and layer.record_dense_grad else None
            for layer, _ in plan
        ]
        lib.stack_backward_f32(
            n, layers, batch, x_t.data_ptr(), below, top.data_ptr(),
            native.pointers(weight_grads), native.pointers(bias_grads), None if grad_x is None else grad_x.data_ptr(),
            stop, torch.get_num_threads(), native.PARALLEL_MIN_WORK, buffers[1].data_ptr(), native.pointers(recorded),
        )  # fmt: skip
        for (layer, _), layer_grad, inputs in zip(plan, recorded, (x_t, *outputs[:-1]), strict=False):
            if layer_grad is not None:
                layer.record(layer_grad @ inputs.T)
    return [g for pair in zip(weight_grads, bias_grads, strict=True) for g in pair], grad_x


class _FusedFunction(torch.autograd.Function):
    """Stacks that read one input (a :class:`FusedSequential`, or a critic's Q-networks) as one autograd node.

    Takes ``x`` as ``(batch, in)`` and returns each stack's last output as ``(out, batch)``, or as
    ``(batch, out)`` where the stack returns ordinary tensors: the transpositions happen inside,
    with no autograd node of their own.
    """

    @staticmethod
    def forward(ctx, stacks: tuple[Stack, ...], lib, x: torch.Tensor, *params: torch.Tensor | None):
        ctx.set_materialize_grads(False)  # an output the loss does not use costs no backward
        x_t = _feature_major(lib, x)
        results, saved, first = [], [x_t], 0
        for owner, plan in stacks:
            stack_params = params[first : first + 2 * len(plan)]
            first += 2 * len(plan)
            outputs = _forward(lib, _layers(owner, plan, stack_params, len(plan)), plan, x_t)
            # The last output only where its activation's gradient reads it (as nn.ReLU and
            # nn.Tanh keep theirs): then, as after those modules, it must not be modified in place.
            saved += [*outputs[:-1], outputs[-1] if plan[-1][1] is not None else None]
            results.append(native.transpose(lib, outputs[-1]) if _batch_major(plan) else outputs[-1])
        ctx.stacks, ctx.lib = stacks, lib
        ctx.save_for_backward(*saved, *params)
        return tuple(results)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        saved, needs_x = ctx.saved_tensors, ctx.needs_input_grad[2]
        outputs_at, params_at = 1, 1 + sum(len(plan) for _, plan in ctx.stacks)
        param_grads: list[torch.Tensor | None] = []
        grad_x = None
        for stack, grad in zip(ctx.stacks, grads, strict=True):
            n = len(stack[1])
            outputs, params = saved[outputs_at : outputs_at + n], saved[params_at : params_at + 2 * n]
            if grad is None:
                param_grads += [None] * 2 * n
            else:
                needs = ctx.needs_input_grad[3 + len(param_grads) : 3 + len(param_grads) + 2 * n]
                stack_grads, stack_grad_x = _backward(ctx.lib, stack, grad, saved[0], outputs, params, needs, needs_x)
                param_grads += stack_grads
                grad_x = stack_grad_x if grad_x is None else grad_x.add_(stack_grad_x)
            outputs_at, params_at = outputs_at + n, params_at + 2 * n
        return None, None, None if grad_x is None else grad_x.T, *param_grads


def _run(stacks: tuple[Stack, ...], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each stack's output for ``x`` (all of them fusable for ``x``), fused."""
    lib = native.library()
    params = [p for _, plan in stacks for layer, _ in plan for p in _parameters(layer)]
    grad = torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params))
    if grad:
        ys = _FusedFunction.apply(stacks, lib, x, *params)
        # Feature-major results leave as views: in-place operations on them work.
        return tuple(y if _batch_major(plan) else y.T for y, (_, plan) in zip(ys, stacks, strict=True))
    results, first, x_t = [], 0, _feature_major(lib, x)
    for owner, plan in stacks:
        stack_params = params[first : first + 2 * len(plan)]
        first += 2 * len(plan)
        y_t = _forward(lib, _layers(owner, plan, stack_params, len(plan)), plan, x_t)[-1]
        # One row (acting) is contiguous either way round.
        results.append(native.transpose(lib, y_t) if _batch_major(plan) and y_t.shape[1] > 1 else y_t.T)
    return tuple(results)


def run_parallel(modules: Sequence[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tuple(module(x) for module in modules)``, with one transposition of ``x`` and one autograd node where every
    module is a :class:`FusedSequential` that can run fused (a critic's Q-networks)."""
    plans = [module._fusable(x) if isinstance(module, FusedSequential) else None for module in modules]
    if any(plan is None for plan in plans):
        return tuple(module(x) for module in modules)
    return _run(tuple(zip(modules, plans, strict=True)), x)


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` (same modules, same state dict) whose chain of linear layers and activations runs fused.

    See the module docstring for what it computes and when it runs module by module.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._fusable(x)
        if plan is None:
            return super().forward(x)
        return _run(((self, plan),), x)[0]

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
        # Checked per call: hooks come and go (dormant-neuron scoring).
        plan = cached[1]
        if plan is None or any(m._forward_hooks or m._forward_pre_hooks for m in modules):
            return None
        head = plan[-1][0]  # the kernels read a dense head's weight in row-major order
        return plan if isinstance(head, SparseLinear) or head.weight.is_contiguous() else None

    def __getstate__(self) -> dict:
        # Copies and pickles drop the caches: the kernels' descriptors hold raw addresses.
        return {k: v for k, v in self.__dict__.items() if k not in ("_fused_plan", "_fused_layers")}
