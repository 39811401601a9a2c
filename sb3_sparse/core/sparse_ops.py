"""Kernels of the truly sparse backend: a linear layer whose weight is only its active entries.

A sparse weight of shape ``(out_features, in_features)`` is ``values`` (one per active
connection) at ``positions``: flat row-major indices ``row * in_features + col``, int32,
sorted ascending. :class:`SparseIndex` derives what the kernels need from the positions once
per topology (a new topology is a new index); :func:`sparse_linear` computes
``x @ W.T + bias`` and its backward for ``x``, ``values`` and ``bias`` without a dense ``W``.

Kernels (chosen by ``benchmarks/bench_kernels.py``), each product computed feature-major as
``W @ x.T`` (the ``(out, batch)`` result; see :func:`as_output` for the layout passed on):

- float32 on the CPU: the compiled kernels of :mod:`.native` (``csr_kernels.c``): the forward
  over ``W``'s CSR arrays, ``grad_x = grad_y @ W`` over ``W.T``'s (values read through the
  permutation between the two orders), ``grad_values`` as dot products over the batch at the
  active entries only (SDDMM), and a matrix-vector branch for one input row (acting);
- where they cannot be built, and in float64, PyTorch's: ``torch.sparse.mm(..., reduce="sum")``
  from ``_REDUCE_MIN_ROWS`` rows on and MKL's ``addmm`` below, the same with ``W.T`` as CSR for
  ``grad_x``, ``torch.sparse.sampled_addmm`` for ``grad_values``, ``torch.addmv`` for one row;
- ``grad_bias`` is a sum over the batch.

Inside a network these per-layer operations run where :mod:`.fused` cannot run the whole
stack of layers at once (hooks, float64, other modules in the stack, ...).

The dense path, ``W @ x.T`` with :func:`dense_weight` (the same result to rounding), takes a
batch where the sparse kernels do not pay (:func:`sparse_kernels_pay`: too dense or too
small); ``F.linear`` takes tensors off the CPU (no sparse kernel was measured on a GPU, so
CUDA runs dense), other dtypes and empty batches.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from . import native

#: Cost models of the sparse kernels against ``nn.Linear`` (forward + backward, batch 256, each
#: in its network's layout), in units of one dense weight: ``(per active entry, per call)``.
#: Fitted to ``bench_kernels.py --break-even`` (docs/backend/kernels_break_even*.json). The
#: compiled kernels (:mod:`.native`) break even near 50-60% sparsity on every layer shape of
#: SB3 MLPs but a single output (never); PyTorch's near 76% at 1024x1024, 82% at 256x256 and
#: never on small layers.
COST_MODELS = {"compiled": (2, 256), "torch": (4, 16384)}
#: Results with fewer features than this are returned contiguous (see :func:`as_output`).
FEATURE_MAJOR_MIN_FEATURES = 64
#: From this many rows of ``x`` on the vectorised CSR kernel beats MKL's (measured).
_REDUCE_MIN_ROWS = 128
_SPARSE_DTYPES = (torch.float32, torch.float64)
PATHS = ("auto", "sparse", "dense")

with warnings.catch_warnings():
    # PyTorch warns once per process that CSR support is "beta"; consume that warning here
    # instead of in the middle of a user's training run.
    warnings.simplefilter("ignore")
    torch.sparse_csr_tensor(torch.zeros(2, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), torch.zeros(0), (1, 1))


def kernel_set() -> str:
    """Which sparse kernels float32 layers use here: ``"compiled"`` (:mod:`.native`) or ``"torch"``."""
    return "torch" if native.library() is None else "compiled"


def sparse_kernels_pay(nnz: int, shape: tuple[int, int]) -> bool:
    """Whether a layer of ``shape`` with ``nnz`` active entries trains faster on the sparse kernels (:data:`COST_MODELS`)."""
    per_entry, per_call = COST_MODELS[kernel_set()]
    return per_entry * nnz + per_call < shape[0] * shape[1]


def _compressed(major: torch.Tensor, minor: torch.Tensor, n_major: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR arrays (int32 ``crow``, ``col``) of entries given as (major, minor) sorted by major then minor."""
    crow = torch.zeros(n_major + 1, dtype=torch.int64, device=major.device)
    crow[1:] = torch.bincount(major, minlength=n_major).cumsum(0)
    return crow.to(torch.int32), minor.to(torch.int32)


_ZEROS: dict[torch.dtype, torch.Tensor] = {}


def _shared_zeros(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``n`` zeros, a view of one read-only storage per dtype shared by every index (memory)."""
    if dtype not in _ZEROS or _ZEROS[dtype].numel() < n:
        _ZEROS[dtype] = torch.zeros(max(n, 2 * _ZEROS[dtype].numel() if dtype in _ZEROS else n), dtype=dtype)
    return _ZEROS[dtype][:n]


class SparseIndex:
    """What the kernels need to know about one topology (immutable; a new topology = a new index).

    :param positions: sorted flat row-major positions ``row * in_features + col`` of the active
        connections (int32, 1-D, strictly increasing, in ``[0, out_features * in_features)``).
    :param shape: ``(out_features, in_features)``, both positive.
    :param path: ``"auto"``: batches through the sparse kernels where they pay
        (:func:`sparse_kernels_pay`), else dense; a single input row without autograd (acting)
        always through a CSR matrix-vector product. ``"sparse"``: the sparse kernels for
        everything (tests, benchmarks). ``"dense"``: ``F.linear`` with :func:`dense_weight` for
        everything. Positions off the CPU: dense.
    """

    def __init__(self, positions: torch.Tensor, shape: tuple[int, int], *, path: str = "auto") -> None:
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        out, inp = (int(s) for s in shape)
        if out < 1 or inp < 1:
            raise ValueError(f"shape must be two positive sizes (out_features, in_features), got {tuple(shape)}")
        if positions.dtype != torch.int32 or positions.dim() != 1:
            got = f"dtype {positions.dtype} and shape {tuple(positions.shape)}"
            raise ValueError(f"positions must be a 1-D int32 tensor, got {got}")
        self.positions = positions
        self.shape = (out, inp)
        long_positions = positions.long()
        nnz = positions.numel()
        if nnz and (
            int(long_positions[0]) < 0
            or int(long_positions[-1]) >= out * inp
            or bool((long_positions[1:] <= long_positions[:-1]).any())
        ):
            raise ValueError(f"positions must be strictly increasing and lie in [0, {out * inp}) for shape {self.shape}")
        self.nnz = nnz
        self.density = nnz / (out * inp)
        #: Whether the CSR kernels exist for this index (positions on the CPU, path not "dense").
        self.kernels = positions.device.type == "cpu" and path != "dense"
        #: Whether batches (and anything under autograd) take the dense path.
        self.dense = not self.kernels or (path == "auto" and not sparse_kernels_pay(nnz, self.shape))
        self._csr: tuple[torch.Tensor, int, torch.Tensor] | None = None
        self._zeros: dict[torch.dtype, torch.Tensor] = {}
        self._pointers: tuple[int, int] | None = None  # see matvec()
        # Memory per active entry beyond the caller's positions: the CSR arrays are built on
        # first use (a critic's or target's dense-path layer never builds them), the transpose
        # on the first backward through the kernels (a target network never builds it).
        self._compressed: tuple[torch.Tensor, torch.Tensor] | None = None  # see compressed()
        self._transpose: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # see transpose()

    def __getstate__(self) -> dict:
        # Copies and pickles drop the kept CSR tensors: they cannot be deep-copied, and a kept
        # one would share the original's values; they are rebuilt on first use.
        return {**self.__dict__, "_csr": None, "_zeros": {}, "_pointers": None}

    @property
    def long_positions(self) -> torch.Tensor:
        """The positions as int64 (what indexing takes), converted per call rather than kept (memory)."""
        return self.positions.long()

    def compressed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W``'s CSR row pointers and column indices (int32), built on first use."""
        if self._compressed is None:
            out, inp = self.shape
            positions = self.positions.long()
            self._compressed = _compressed(positions // inp, positions % inp, out)
        return self._compressed

    def transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``W.T`` as CSR arrays (the entries re-sorted by column) and the permutation from ``W``'s order.

        Built on the first backward that needs ``grad_x``: a target network, which never
        backpropagates, never holds these three int32 arrays per active entry.
        """
        if self._transpose is None:
            out, inp = self.shape
            positions = self.positions.long()
            rows, cols = positions // inp, positions % inp
            perm = torch.argsort(cols * out + rows)  # the keys are unique, so the order is too
            ccol, row = _compressed(cols[perm], rows[perm], inp)
            self._transpose = (ccol, row, perm.to(torch.int32))
        return self._transpose

    def zeros_csr(self, dtype: torch.dtype) -> torch.Tensor:
        """``W``'s pattern with zero values, the sampling mask of the SDDMM (kept per dtype; read only)."""
        if dtype not in self._zeros:
            zeros = _shared_zeros(self.positions.numel(), dtype)
            self._zeros[dtype] = torch.sparse_csr_tensor(*self.compressed(), zeros, self.shape, check_invariants=False)
        return self._zeros[dtype]

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        """``W`` as a CSR tensor that shares ``values``' memory (never autograd-tracked).

        The last one is kept for the same ``values`` tensor at the same address: it shares that
        memory, so it sees in-place updates (optimizer steps), and building one costs as much
        as a batch-1 product of a small layer.
        """
        if self._csr is not None and self._csr[0] is values and self._csr[1] == values.data_ptr():
            return self._csr[2]
        csr = torch.sparse_csr_tensor(*self.compressed(), values.detach(), self.shape, check_invariants=False)
        self._csr = (values, values.data_ptr(), csr)
        return csr

    def matvec(self, values: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``W @ x + bias`` for one float32 input row (any shape of ``in_features`` entries), by the compiled kernel.

        Acting calls this per layer on every environment step, so the index arrays' addresses
        are kept (they never change for an index) and nothing else is built around the call.
        """
        if self._pointers is None:
            crow, col = self.compressed()
            self._pointers = (crow.data_ptr(), col.data_ptr())
        lib, (crow_ptr, col_ptr) = native.library(), self._pointers
        # Kept in names until the call returns; no copies for a layer's own tensors.
        values, x, bias = values.contiguous(), x.contiguous(), None if bias is None else bias.contiguous()
        y = torch.empty(self.shape[0], dtype=x.dtype)
        bias_ptr = None if bias is None else bias.data_ptr()
        lib.csr_times_f32(
            self.shape[0], 1, crow_ptr, col_ptr, values.data_ptr(), None, x.data_ptr(), bias_ptr, y.data_ptr(),
            *(0, 0.0, None, None),  # no activation, gate or sums
            1,
        )  # fmt: skip
        return y

    def csr_transposed(self, values: torch.Tensor) -> torch.Tensor:
        """``W.T`` as a CSR tensor (the CSC form of ``W``) holding ``values`` permuted."""
        ccol, row, perm = self.transpose()
        shape = (self.shape[1], self.shape[0])
        return torch.sparse_csr_tensor(ccol, row, values.index_select(0, perm), shape, check_invariants=False)


def _times(csr: torch.Tensor, rhs: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``csr @ rhs (+ bias[:, None])`` for a contiguous dense ``rhs`` of shape ``(k, n)``, with the faster kernel for ``n``."""
    if rhs.shape[1] >= _REDUCE_MIN_ROWS:
        product = torch.sparse.mm(csr, rhs, "sum")
        return product if bias is None else product.add_(bias[:, None])
    return torch.mm(csr, rhs) if bias is None else torch.addmm(bias[:, None], csr, rhs)


def _kernels(dtype: torch.dtype):
    """The compiled kernels where they apply (float32; see :mod:`.native`), else ``None``: PyTorch's."""
    return native.library() if dtype == torch.float32 else None


def _forward(
    x: torch.Tensor, values: torch.Tensor, index: SparseIndex, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``W @ x.T + bias[:, None]`` for a 2-D ``x`` (the ``(out, batch)`` product), and ``x.T`` (contiguous).

    Callers lay the product out with :func:`as_output`: its transposed view, so element-wise
    activations keep that layout and the next sparse layer's ``x.T`` is contiguous for free.
    """
    x_t = x.T.contiguous()  # free when x is the previous sparse layer's (activated) output
    lib = _kernels(x.dtype)
    if lib is not None:
        return native.times(lib, *index.compressed(), values.contiguous(), x_t, bias), x_t
    return _times(index.csr(values), x_t, bias), x_t


class _SparseLinearFunction(torch.autograd.Function):
    """``x @ W.T + bias`` with a backward that touches the active entries of ``W`` only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, index: SparseIndex, bias: torch.Tensor | None) -> torch.Tensor:
        # The (out, batch) product itself; its layout view is taken outside, so that an
        # in-place activation after the layer works (PyTorch refuses to modify in place a view
        # made inside a custom Function).
        y_t, x_t = _forward(x, values, index, bias)
        ctx.index = index
        ctx.x_contiguous = x.is_contiguous()
        # Save only what the requested gradients read: x for grad_values, values for grad_x.
        ctx.save_for_backward(x_t if ctx.needs_input_grad[1] else None, values if ctx.needs_input_grad[0] else None)
        return y_t

    @staticmethod
    def backward(ctx, grad_y_t: torch.Tensor):
        x_t, values = ctx.saved_tensors
        index: SparseIndex = ctx.index
        grad_y_t = grad_y_t.contiguous()  # free when the gradient comes feature-major
        grad_x = grad_values = grad_bias = None
        lib = _kernels(grad_y_t.dtype)
        if ctx.needs_input_grad[0]:
            if lib is not None:
                ccol, row, perm = index.transpose()
                grad_x = native.times(lib, ccol, row, values.contiguous(), grad_y_t, perm=perm).T
            else:
                grad_x = _times(index.csr_transposed(values), grad_y_t).T
            # In x's own layout: element-wise backward ops (the activation before this layer)
            # are several times slower when their two inputs' layouts differ.
            grad_x = grad_x.contiguous() if ctx.x_contiguous else grad_x
        if ctx.needs_input_grad[1]:
            if lib is not None:
                grad_values = native.sampled_dot(lib, *index.compressed(), grad_y_t, x_t)
            else:
                # beta=0 still multiplies the input's values (0 * NaN = NaN): give it zeros.
                grad_values = torch.sparse.sampled_addmm(index.zeros_csr(grad_y_t.dtype), grad_y_t, x_t.T, beta=0).values()
        if ctx.needs_input_grad[3]:
            grad_bias = grad_y_t.sum(1)
        return grad_x, grad_values, None, grad_bias


def as_output(y_t: torch.Tensor, contiguous: bool = False) -> torch.Tensor:
    """A layer's ``(batch, out)`` result from its ``(out, batch)`` product: the transposed view, or a copy.

    Hidden layers keep the feature-major layout (element-wise activations preserve it, so the
    next layer's ``x.T`` is contiguous for free). A network's output layer (``contiguous``) and
    any result of fewer than ``FEATURE_MAJOR_MIN_FEATURES`` features (an action or value head)
    are copied to an ordinary contiguous tensor, which costs little and lets downstream code
    ``view`` them (QR-DQN views its quantiles).
    """
    return y_t.T.contiguous() if batch_major(y_t.shape[0], contiguous) else y_t.T


def batch_major(out_features: int, contiguous: bool) -> bool:
    """Whether a layer's result of ``out_features`` is an ordinary contiguous tensor (see :func:`as_output`)."""
    return contiguous or out_features < FEATURE_MAJOR_MIN_FEATURES


def linear_feature_major(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, contiguous: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D CPU ``x``, computed as ``W @ x.T`` and laid out by :func:`as_output`.

    So a network's activations keep one layout whichever path each layer takes: a sparse layer
    after a dense one copies no transpose, no element-wise backward meets two layouts, and BLAS
    is not handed a transposed ``x`` with few output features (``F.linear`` on a feature-major
    ``x`` is much slower than this on the CPU for a head with few outputs).
    """
    return as_output(weight @ x.T if bias is None else torch.addmm(bias[:, None], weight, x.T), contiguous)


def dense_weight(values: torch.Tensor, index: SparseIndex) -> torch.Tensor:
    """The dense ``(out, in)`` weight (absent entries exactly 0), differentiable in ``values``."""
    out, inp = index.shape
    positions = index.long_positions.to(values.device)  # no copy when already there
    # scatter rather than index_put: several times faster on the CPU, the same values.
    return values.new_zeros(out * inp).scatter(0, positions, values).view(out, inp)


def sparse_linear(
    x: torch.Tensor, values: torch.Tensor, index: SparseIndex, bias: torch.Tensor | None, contiguous: bool = False
) -> torch.Tensor:
    """``x @ W.T + bias`` for the sparse ``W`` given by ``values`` at ``index``; ``x`` is ``(..., in)``.

    Differentiable in ``x``, ``values`` and ``bias``; only the gradients autograd asks for are
    computed. The path (sparse kernels or dense) follows ``index`` (see :class:`SparseIndex`).
    A batch's result is laid out by :func:`as_output` (``contiguous``: always an ordinary tensor).
    """
    out, inp = index.shape
    # Cheap checks first (int and dtype comparisons): acting calls this per layer per step.
    if x.dim() == 0 or x.shape[-1] != inp:
        raise ValueError(f"x must have {inp} (in_features) entries in its last dimension, got shape {tuple(x.shape)}")
    if values.dim() != 1 or values.shape[0] != index.nnz:
        raise ValueError(f"values must have shape ({index.nnz},) like the index, got {tuple(values.shape)}")
    if values.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        got = f"{values.dtype}, {None if bias is None else bias.dtype} and {x.dtype}"
        raise ValueError(f"values, bias and x must have the same dtype, got {got}")
    if not index.kernels or not x.is_cpu or x.dtype not in _SPARSE_DTYPES or x.numel() == 0:
        return F.linear(x, dense_weight(values, index), bias)
    grad = torch.is_grad_enabled() and (x.requires_grad or values.requires_grad or (bias is not None and bias.requires_grad))
    if not grad and x.numel() == inp:
        # Acting (SB3's predict): one CSR matrix-vector product whatever the density, so that
        # acting never builds the dense weight, and as few calls as possible around it.
        if _kernels(x.dtype) is not None:
            return index.matvec(values, x, bias).view(*x.shape[:-1], out)
        x_1d = x[0] if x.dim() == 2 else x.reshape(inp)
        csr = index.csr(values)
        y = torch.mv(csr, x_1d) if bias is None else torch.addmv(bias, csr, x_1d)
        return y.unsqueeze(0) if x.dim() == 2 else y.view(*x.shape[:-1], out)
    x_2d = x.reshape(-1, inp)
    if index.dense:
        y = linear_feature_major(x_2d, dense_weight(values, index), bias, contiguous)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out)
    y_t = _SparseLinearFunction.apply(x_2d, values, index, bias) if grad else _forward(x_2d, values, index, bias)[0]
    y = as_output(y_t, contiguous)
    return y if x.dim() == 2 else y.reshape(*x.shape[:-1], out)
