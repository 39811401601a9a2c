"""The compiled kernels (csr_kernels.c): building, caching, switching off, falling back, and the products."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sb3_sparse.core import native
from sb3_sparse.core.sparse_ops import SparseIndex, dense_weight, sparse_linear


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """``native.library()`` computed anew with a private cache, and again after the test."""
    monkeypatch.setenv("SB3_SPARSE_CACHE", str(tmp_path / "cache"))
    native.library.cache_clear()
    yield tmp_path / "cache"
    native.library.cache_clear()


def test_built_once_then_loaded_from_the_cache(fresh):
    assert native.library() is not None
    built = list(fresh.glob("csr_kernels-*.so"))
    assert len(built) == 1 and not list(fresh.glob("tmp*"))  # no scratch left behind
    stamp = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library() is not None
    assert [p.stat().st_mtime_ns for p in fresh.glob("csr_kernels-*.so")] == [stamp]


def test_switched_off(fresh, monkeypatch):
    monkeypatch.setenv("SB3_SPARSE_NATIVE", "0")
    assert native.library() is None
    assert not fresh.exists()


def test_no_compiler_warns_once_and_falls_back(fresh, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails every command
    with pytest.warns(RuntimeWarning, match="compiled sparse kernels are unavailable.*PyTorch's CSR kernels"):
        assert native.library() is None
    index = SparseIndex(torch.arange(0, 600, 7, dtype=torch.int32), (20, 30), path="sparse")
    x, values = torch.randn(70, 30, requires_grad=True), torch.randn(index.nnz, requires_grad=True)
    torch.testing.assert_close(sparse_linear(x, values, index, None), F.linear(x, dense_weight(values, index)))


@pytest.mark.parametrize("batch", [1, 3, 15, 16, 17, 63, 64, 65, 80, 129])
def test_products_every_batch_tail(batch):
    """Blocks of 64 and 16 batch columns and the scalar tail; rows of 0 to 9 entries (dot products 4 at a time)."""
    lib = native.library()
    assert lib is not None, "the compiled kernels did not build (is a C compiler installed?)"
    gen = torch.Generator().manual_seed(batch)
    rows, cols = 10, 12
    counts = torch.arange(rows) % 10  # 0..9 entries per row
    positions = torch.cat([r * cols + torch.randperm(cols, generator=gen)[:n].sort().values for r, n in enumerate(counts)])
    index = SparseIndex(positions.to(torch.int32), (rows, cols), path="sparse")
    values, bias = torch.randn(index.nnz, generator=gen), torch.randn(rows, generator=gen)
    weight = dense_weight(values, index)
    x_t, grad_y_t = torch.randn(cols, batch, generator=gen), torch.randn(rows, batch, generator=gen)
    crow, col = index.compressed()
    torch.testing.assert_close(native.times(lib, crow, col, values, x_t, bias), weight @ x_t + bias[:, None])
    torch.testing.assert_close(native.times(lib, crow, col, values, x_t), weight @ x_t)
    ccol, row, perm = index.transpose()
    torch.testing.assert_close(native.times(lib, ccol, row, values, grad_y_t, perm=perm), weight.T @ grad_y_t)
    expected = (grad_y_t @ x_t.T).reshape(-1)[index.long_positions]
    torch.testing.assert_close(native.sampled_dot(lib, crow, col, grad_y_t, x_t), expected)
    # The activations' gradients, as PyTorch's modules compute them (read from their outputs).
    below = torch.randn(rows, batch, generator=gen)
    for act, slope in ((nn.ReLU(), 0.0), (nn.LeakyReLU(0.01), 0.01)):
        y_below, grad_below = act(below), torch.randn(rows, batch, generator=gen)
        reference = torch.autograd.functional.vjp(act, below, grad_below)[1]
        assert torch.equal(native.activation_grad(lib, grad_below, y_below, slope), reference)
        sums = torch.empty(rows)
        in_place = native.activation_grad(lib, grad_below, y_below, slope, out=grad_below, sums=sums)
        assert in_place is grad_below and torch.equal(grad_below, reference)
        torch.testing.assert_close(sums, reference.sum(1))
    assert torch.equal(native.transpose(lib, x_t), x_t.T)


def test_fused_activation_gradients_treat_nan_as_pytorch_does():
    """ReLU's backward lets a gradient through at a NaN output, LeakyReLU's scales it (both read y > 0 / y <= 0)."""
    lib = native.library()
    assert lib is not None, "the compiled kernels did not build (is a C compiler installed?)"
    below = torch.tensor([[float("nan"), -1.0, 0.0, 2.0] * 5])
    grad = torch.arange(1.0, 21.0)[None]
    for act, slope in ((nn.ReLU(), 0.0), (nn.LeakyReLU(0.1), 0.1)):
        x = below.clone().requires_grad_()
        act(x).backward(grad)
        assert torch.equal(native.activation_grad(lib, grad, act(below), slope), x.grad)


def test_threads_change_nothing():
    """Rows are split over threads, each row summed by one thread in one order: the same bits."""
    lib = native.library()
    assert lib is not None, "the compiled kernels did not build (is a C compiler installed?)"
    gen = torch.Generator().manual_seed(0)
    index = SparseIndex(torch.randperm(300 * 200, generator=gen)[:6000].sort().values.to(torch.int32), (300, 200))
    values, bias = torch.randn(index.nnz, generator=gen), torch.randn(300, generator=gen)
    x_t, grad_y_t = torch.randn(200, 256, generator=gen), torch.randn(300, 256, generator=gen)
    crow, col = index.compressed()
    ccol, row, perm = index.transpose()
    for threads in (2, 3):
        assert torch.equal(
            native.times(lib, crow, col, values, x_t, bias, threads=threads),
            native.times(lib, crow, col, values, x_t, bias, threads=1),
        )
        assert torch.equal(
            native.times(lib, ccol, row, values, grad_y_t, perm=perm, threads=threads),
            native.times(lib, ccol, row, values, grad_y_t, perm=perm, threads=1),
        )
        assert torch.equal(
            native.sampled_dot(lib, crow, col, grad_y_t, x_t, threads=threads),
            native.sampled_dot(lib, crow, col, grad_y_t, x_t, threads=1),
        )
    assert native.threads_for(native.PARALLEL_MIN_WORK - 1) == 1
    assert native.threads_for(native.PARALLEL_MIN_WORK) == torch.get_num_threads()
