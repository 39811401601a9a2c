"""The compiled kernels of the sparse backend (``csr_kernels.c``): built on first use, loaded with ctypes.

PyTorch's CSR kernels reach about a tenth of dense BLAS's throughput per multiply-add on a
CPU, too little for 256-wide networks to gain from sparsity. ``csr_kernels.c`` runs the same
products in a feature-major layout with vectorised inner loops over the batch (see its header).
It is plain C, so building it needs only a C compiler (``$CC``, else ``cc``), about a second on
first use; the library is cached per source, compiler and CPU under ``$SB3_SPARSE_CACHE`` (else
``$XDG_CACHE_HOME/sb3_sparse``, else ``~/.cache/sb3_sparse``) and compiled for the CPU it runs
on (``-march=native``). Without a compiler (or with ``SB3_SPARSE_NATIVE=0``) :func:`library`
returns ``None`` after one warning and ``sparse_ops`` uses PyTorch's kernels: the same results to
float rounding, slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csr_kernels.c")
# Tried in order: without OpenMP or -march=native where the compiler lacks them.
_FLAGS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3"])
#: Multiply-adds below which a product runs on one thread (a parallel region costs microseconds).
PARALLEL_MIN_WORK = 1 << 18
_COMMON = ["-std=gnu11", "-shared", "-fPIC", "-Wno-psabi"]
_POINTER, _SIZE = ctypes.c_void_p, ctypes.c_int64


def _cpu() -> str:
    """What a library compiled with ``-march=native`` depends on: the CPU's feature flags."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(("flags", "Features"))), platform.processor())
    except OSError:
        return platform.machine() + platform.processor()


def _cache_dir() -> Path:
    if os.environ.get("SB3_SPARSE_CACHE"):
        return Path(os.environ["SB3_SPARSE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sb3_sparse"


def _compile(compiler: str) -> Path:
    """The library for this source, compiler and CPU: from the cache, else compiled into it (atomically)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, _cpu(), repr((*_FLAGS, _COMMON))]).encode()).hexdigest()
    target = _cache_dir() / f"csr_kernels-{key[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAGS:
        # Compiled beside the target and renamed: concurrent processes never load half a file.
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            run = subprocess.run([compiler, *flags, *_COMMON, "-o", str(built), str(SOURCE)], capture_output=True, text=True)
            if run.returncode == 0:
                os.replace(built, target)
                return target
            errors.append(run.stderr.strip()[-500:])
    raise RuntimeError("; ".join(errors))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or ``None`` (one warning says why) when they cannot be built or are switched off."""
    if os.environ.get("SB3_SPARSE_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC)")
        lib = ctypes.CDLL(str(_compile(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(
            f"sb3_sparse: the compiled sparse kernels are unavailable ({error}); backend='sparse' uses "
            "PyTorch's CSR kernels instead (same results, slower)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    # rows, batch; crow, col, values, perm, x_t, bias, y_t; activate, slope; gate, sums; threads
    activation = [ctypes.c_int32, ctypes.c_float]
    lib.csr_times_f32.argtypes = [_SIZE, _SIZE, *[_POINTER] * 7, *activation, *[_POINTER] * 2, ctypes.c_int32]
    lib.csr_times_f32.restype = None
    lib.csr_sampled_dot_f32.argtypes = [_SIZE, _SIZE, *[_POINTER] * 5, ctypes.c_int32]
    lib.csr_sampled_dot_f32.restype = None
    lib.act_grad_f32.argtypes = [_SIZE, _SIZE, _POINTER, _POINTER, ctypes.c_float, *[_POINTER] * 2]
    lib.act_grad_f32.restype = None
    lib.transpose_f32.argtypes = [_SIZE, _SIZE, _POINTER, _POINTER]
    lib.transpose_f32.restype = None
    # n, layers, batch, x_t, outputs, threads, parallel_min
    lib.stack_forward_f32.argtypes = [ctypes.c_int32, _POINTER, _SIZE, _POINTER, _POINTER, ctypes.c_int32, _SIZE]
    lib.stack_forward_f32.restype = None
    # n, layers, batch, x_t, outputs, grad_t, grad_values, grad_bias, grad_x, stop, threads, parallel_min, scratch,
    # outputs_grad
    lib.stack_backward_f32.argtypes = [ctypes.c_int32, _POINTER, _SIZE, *[_POINTER] * 6, ctypes.c_int32, ctypes.c_int32]
    lib.stack_backward_f32.argtypes += [_SIZE, _POINTER, _POINTER]
    lib.stack_backward_f32.restype = None
    return lib


def times(
    lib: ctypes.CDLL,
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    rhs_t: torch.Tensor,
    bias: torch.Tensor | None = None,
    perm: torch.Tensor | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """``W @ rhs_t (+ bias[:, None])`` for the CSR ``W`` (``crow``, ``col``, ``values`` or ``values[perm]``).

    :param rhs_t: contiguous float32 ``(columns of W, batch)``; every tensor contiguous, on the CPU.
    :param threads: threads to split the rows over; default :func:`threads_for` the work.
    :return: contiguous ``(rows of W, batch)``.
    """
    out = rhs_t.new_empty(crow.shape[0] - 1, rhs_t.shape[1])
    lib.csr_times_f32(
        out.shape[0],
        out.shape[1],
        crow.data_ptr(),
        col.data_ptr(),
        values.data_ptr(),
        None if perm is None else perm.data_ptr(),
        rhs_t.data_ptr(),
        None if bias is None else bias.data_ptr(),
        out.data_ptr(),
        *(0, 0.0, None, None),  # no activation, gate or sums (see fused.py for those)
        threads_for(col.shape[0] * out.shape[1]) if threads is None else threads,
    )
    return out


def activation_grad(
    lib: ctypes.CDLL,
    grad: torch.Tensor,
    output: torch.Tensor,
    slope: float,
    out: torch.Tensor | None = None,
    sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """The gradient before a ReLU/LeakyReLU (``slope``) from ``grad`` after it and its output, both contiguous float32 2-D.

    :param out: where to write it (may be ``grad``: in place); default a new tensor.
    :param sums: a ``(rows,)`` tensor, filled with the result's totals over the batch (a bias gradient).
    """
    out = torch.empty_like(output) if out is None else out
    rows, batch = output.shape
    lib.act_grad_f32(
        rows, batch, grad.data_ptr(), output.data_ptr(), slope, out.data_ptr(), None if sums is None else sums.data_ptr()
    )
    return out


class Layer(ctypes.Structure):
    """One layer of a chain for ``stack_forward_f32``/``stack_backward_f32`` (``layer_t`` in ``csr_kernels.c``)."""

    _fields_ = [
        ("rows", ctypes.c_int64),
        ("cols", ctypes.c_int64),
        *[(name, ctypes.c_void_p) for name in ("crow", "col", "ccol", "row", "perm", "values", "bias")],
        ("activate", ctypes.c_int32),
        ("slope", ctypes.c_float),
    ]


def pointers(tensors: list[torch.Tensor | None]) -> ctypes.Array:
    """The tensors' data addresses as a C array (``None``: NULL); the tensors must outlive its use."""
    return (ctypes.c_void_p * len(tensors))(*[None if t is None else t.data_ptr() for t in tensors])


def transpose(lib: ctypes.CDLL, x: torch.Tensor) -> torch.Tensor:
    """``x.T`` as a contiguous tensor, for a contiguous float32 2-D ``x``."""
    out = x.new_empty(x.shape[1], x.shape[0])
    lib.transpose_f32(x.shape[0], x.shape[1], x.data_ptr(), out.data_ptr())
    return out


def threads_for(work: int) -> int:
    """PyTorch's intra-op thread count for ``work`` multiply-adds, 1 below ``PARALLEL_MIN_WORK``."""
    return torch.get_num_threads() if work >= PARALLEL_MIN_WORK else 1


def sampled_dot(
    lib: ctypes.CDLL,
    crow: torch.Tensor,
    col: torch.Tensor,
    grad_y_t: torch.Tensor,
    x_t: torch.Tensor,
    threads: int | None = None,
) -> torch.Tensor:
    """``(grad_y_t @ x_t.T)`` at the active entries of the CSR pattern, in its order (``grad_values``).

    :param threads: as for :func:`times`.
    """
    out = grad_y_t.new_empty(col.shape[0])
    lib.csr_sampled_dot_f32(
        grad_y_t.shape[0],
        grad_y_t.shape[1],
        crow.data_ptr(),
        col.data_ptr(),
        grad_y_t.data_ptr(),
        x_t.data_ptr(),
        out.data_ptr(),
        threads_for(col.shape[0] * grad_y_t.shape[1]) if threads is None else threads,
    )
    return out
