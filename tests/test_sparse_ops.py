"""The sparse kernels against the dense masked reference: F.linear with the dense weight."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from sb3_sparse.core import native
from sb3_sparse.core.sparse_ops import SparseIndex, dense_weight, sparse_kernels_pay, sparse_linear

TOLERANCE = {torch.float64: {"rtol": 1e-10, "atol": 1e-10}, torch.float32: {"rtol": 1e-5, "atol": 1e-5}}


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def kernels(request, monkeypatch):
    """Every test on both kernel sets of float32: the compiled ones (csr_kernels.c) and PyTorch's."""
    if request.param == "compiled":
        assert native.library() is not None, "the compiled kernels did not build (is a C compiler installed?)"
    else:
        monkeypatch.setattr(native, "library", lambda: None)
    return request.param


def random_positions(shape: tuple[int, int], density: float, seed: int, *, skip_row=None, skip_col=None) -> torch.Tensor:
    """Sorted int32 positions of about ``density`` of the entries, none in ``skip_row``/``skip_col``."""
    out, inp = shape
    gen = torch.Generator().manual_seed(seed)
    allowed = torch.ones(out, inp, dtype=torch.bool)
    if skip_row is not None:
        allowed[skip_row] = False
    if skip_col is not None:
        allowed[:, skip_col] = False
    candidates = allowed.flatten().nonzero().flatten()
    nnz = max(1, round(density * out * inp))
    chosen = candidates[torch.randperm(candidates.numel(), generator=gen)[:nnz]]
    return chosen.sort().values.to(torch.int32)


def inputs(index: SparseIndex, lead: tuple[int, ...], dtype: torch.dtype, seed: int, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    out, inp = index.shape
    x = torch.randn(*lead, inp, generator=gen, dtype=dtype).requires_grad_()
    values = torch.randn(index.positions.numel(), generator=gen, dtype=dtype).requires_grad_()
    b = torch.randn(out, generator=gen, dtype=dtype).requires_grad_() if bias else None
    return x, values, b


def output_and_grads(fn, x, values, bias, seed: int = 1):
    y = fn(x, values, bias)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    wrt = [t for t in (x, values, bias) if t is not None]
    return y, torch.autograd.grad(y, wrt, grad_y)


def check_against_reference(index: SparseIndex, lead: tuple[int, ...], dtype: torch.dtype, bias: bool = True) -> None:
    x, values, b = inputs(index, lead, dtype, seed=sum(lead) + index.positions.numel(), bias=bias)
    y, grads = output_and_grads(lambda *a: sparse_linear(a[0], a[1], index, a[2]), x, values, b)
    y_ref, grads_ref = output_and_grads(lambda *a: F.linear(a[0], dense_weight(a[1], index), a[2]), x, values, b)
    assert y.shape == y_ref.shape == (*lead, index.shape[0])
    # Batches come back as the transposed view of the (out, batch) product; views of it still work.
    assert y.reshape(-1).numel() == y.numel()
    torch.testing.assert_close(y, y_ref, **TOLERANCE[dtype])
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, **TOLERANCE[dtype])
    with torch.no_grad():  # the no-autograd path (acting) too
        torch.testing.assert_close(sparse_linear(x, values, index, b), y_ref, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    ("shape", "density"), [((256, 17), 0.1), ((6, 256), 0.05), ((64, 64), 0.02), ((1, 40), 0.2), ((33, 70), 0.5)]
)
@pytest.mark.parametrize("lead", [(), (1,), (5,), (200,), (3, 50), (1, 1)])
def test_sparse_kernels_match_dense_reference(dtype, shape, density, lead):
    # One row: matrix-vector without autograd; 5: MKL's product; 200 and 3x50: the vectorised one.
    check_against_reference(SparseIndex(random_positions(shape, density, seed=3), shape, path="sparse"), lead, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lead", [(1,), (7,), (70,)])
def test_edge_topologies(dtype, lead):
    shape = (20, 12)
    everything = torch.arange(240, dtype=torch.int32)
    cases = {
        "empty row and column": random_positions(shape, 0.15, seed=0, skip_row=4, skip_col=2),
        "density 1.0": everything,
        "single entry": torch.tensor([77], dtype=torch.int32),
        "first and last": torch.tensor([0, 239], dtype=torch.int32),
    }
    for positions in cases.values():
        for bias in (True, False):
            check_against_reference(SparseIndex(positions, shape, path="sparse"), lead, dtype, bias=bias)


def test_auto_path_and_fallbacks_match_reference():
    big = (300, 200)
    too_dense = SparseIndex(random_positions(big, 0.6, seed=0), big)
    too_small = SparseIndex(random_positions((2, 40), 0.1, seed=0), (2, 40))
    sparse = SparseIndex(random_positions(big, 0.1, seed=0), big)
    forced_dense = SparseIndex(sparse.positions, big, path="dense")
    assert too_dense.dense and too_small.dense and not sparse.dense
    assert forced_dense.dense and not forced_dense.kernels and sparse.kernels
    for index in (too_dense, too_small, sparse, forced_dense):
        for lead in ((1,), (9,), (2, 40)):
            check_against_reference(index, lead, torch.float64)
    x, values, b = inputs(sparse, (0,), torch.float32, seed=0)  # an empty batch
    assert sparse_linear(x, values, sparse, b).shape == (0, 300)
    x, values, b = (t.detach().to(torch.bfloat16) for t in inputs(sparse, (4,), torch.float32, seed=0))
    torch.testing.assert_close(sparse_linear(x, values, sparse, b), F.linear(x, dense_weight(values, sparse), b))


def test_cost_model_break_even(kernels):
    # Wide layers gain from high sparsity on, single outputs never (benchmarks/bench_kernels.py --break-even);
    # the compiled kernels from about 60% sparsity, PyTorch's from 76-82% and never on small layers.
    assert sparse_kernels_pay(round(0.1 * 1024 * 1024), (1024, 1024))
    assert not sparse_kernels_pay(round(0.5 * 1024 * 1024), (1024, 1024))
    assert sparse_kernels_pay(round(0.05 * 256 * 256), (256, 256))
    assert not sparse_kernels_pay(round(0.5 * 256 * 256), (256, 256))
    assert not sparse_kernels_pay(1, (1, 256))
    assert sparse_kernels_pay(round(0.2 * 256 * 256), (256, 256)) == (kernels == "compiled")
    assert sparse_kernels_pay(round(0.3 * 256 * 17), (256, 17)) == (kernels == "compiled")


def test_gradcheck():
    index = SparseIndex(random_positions((5, 4), 0.4, seed=1, skip_row=2), (5, 4), path="sparse")
    for lead in ((1,), (3,), (2, 70)):
        x, values, b = inputs(index, lead, torch.float64, seed=2)
        assert torch.autograd.gradcheck(lambda x, v, b: sparse_linear(x, v, index, b), (x, values, b))


def test_only_requested_gradients():
    index = SparseIndex(random_positions((16, 8), 0.2, seed=0), (16, 8), path="sparse")
    x, values, b = inputs(index, (70,), torch.float32, seed=0)
    x.requires_grad_(False)  # a first layer: no gradient for the observations
    sparse_linear(x, values, index, b).sum().backward()
    assert x.grad is None and values.grad is not None and b.grad is not None
    frozen = values.detach()
    x.requires_grad_(True)
    sparse_linear(x, frozen, index, None).sum().backward()  # through a frozen layer (actor loss via critic)
    torch.testing.assert_close(x.grad, dense_weight(frozen, index).sum(0).expand(70, 8))


@pytest.mark.parametrize("rows", [1, 5, 200])
def test_deterministic(rows):
    index = SparseIndex(random_positions((300, 200), 0.1, seed=0), (300, 200), path="sparse")
    x, values, b = inputs(index, (rows,), torch.float32, seed=0)
    first_y, first_grads = output_and_grads(lambda *a: sparse_linear(a[0], a[1], index, a[2]), x, values, b)
    second_y, second_grads = output_and_grads(lambda *a: sparse_linear(a[0], a[1], index, a[2]), x, values, b)
    assert torch.equal(first_y, second_y)
    assert all(torch.equal(g1, g2) for g1, g2 in zip(first_grads, second_grads, strict=True))


def test_batch_one_never_stale():
    """The CSR tensor kept for acting shares the values' memory: optimizer steps and new storage show."""
    index = SparseIndex(random_positions((12, 9), 0.2, seed=0), (12, 9), path="sparse")
    values = torch.nn.Parameter(torch.randn(index.positions.numel()))
    x = torch.randn(1, 9)
    for update in (lambda: values.data.mul_(-3.0), lambda: setattr(values, "data", torch.randn_like(values))):
        update()
        with torch.no_grad():
            torch.testing.assert_close(sparse_linear(x, values, index, None), x @ dense_weight(values, index).T)


def test_copies_after_use():
    index = SparseIndex(random_positions((12, 9), 0.2, seed=0), (12, 9), path="sparse")
    x, values, b = inputs(index, (130,), torch.float32, seed=0)
    sparse_linear(x, values, index, b).sum().backward()
    with torch.no_grad():
        sparse_linear(x[:1], values, index, b)
    for copied in (copy.deepcopy(index), pickle.loads(pickle.dumps(index))):
        new_values = values.detach() * 2
        with torch.no_grad():
            for rows in (x[:1], x):
                torch.testing.assert_close(
                    sparse_linear(rows, new_values, copied, b), F.linear(rows, dense_weight(new_values, index), b)
                )


def test_bad_input_is_named():
    positions = torch.tensor([1, 4, 6], dtype=torch.int32)
    with pytest.raises(ValueError, match="positive"):
        SparseIndex(positions, (0, 4))
    with pytest.raises(ValueError, match="int32"):
        SparseIndex(positions.long(), (3, 4))
    with pytest.raises(ValueError, match=r"strictly increasing and lie in \[0, 12\)"):
        SparseIndex(torch.tensor([1, 12], dtype=torch.int32), (3, 4))
    with pytest.raises(ValueError, match="strictly increasing"):
        SparseIndex(torch.tensor([4, 1], dtype=torch.int32), (3, 4))
    with pytest.raises(ValueError, match="path must be one of"):
        SparseIndex(positions, (3, 4), path="csr")
    index = SparseIndex(positions, (3, 4), path="sparse")
    with pytest.raises(ValueError, match=r"4 \(in_features\).*\(2, 5\)"):
        sparse_linear(torch.zeros(2, 5), torch.zeros(3), index, None)
    with pytest.raises(ValueError, match=r"values must have shape \(3,\)"):
        sparse_linear(torch.zeros(2, 4), torch.zeros(4), index, None)
    with pytest.raises(ValueError, match="same dtype"):
        sparse_linear(torch.zeros(2, 4), torch.zeros(3, dtype=torch.float64), index, None)
    with pytest.raises(ValueError, match=r"same dtype, got torch.float32, torch.float64 and torch.float32"):
        sparse_linear(torch.zeros(1, 4), torch.zeros(3), index, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adam_training_matches_dense_reference(dtype):
    """Steps of Adam through two sparse layers track the dense reference (in-place updates are seen)."""
    shapes = ((300, 40), (200, 300))
    indices = [SparseIndex(random_positions(shape, 0.1, seed=i), shape, path="sparse") for i, shape in enumerate(shapes)]
    gen = torch.Generator().manual_seed(0)
    init = [
        (torch.randn(i.positions.numel(), generator=gen, dtype=dtype), torch.zeros(i.shape[0], dtype=dtype)) for i in indices
    ]
    x = torch.randn(160, 40, generator=gen, dtype=dtype)

    def train(linear) -> list[torch.Tensor]:
        params = [torch.nn.Parameter(t.clone()) for pair in init for t in pair]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        for _ in range(15):
            hidden = torch.relu(linear(x, params[0], indices[0], params[1]))
            loss = linear(hidden, params[2], indices[1], params[3]).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # acting between updates, as SB3 does
                linear(x[:1], params[0], indices[0], params[1])
        return params

    reference = train(lambda x, v, index, b: F.linear(x, dense_weight(v, index), b))
    for param, expected in zip(train(sparse_linear), reference, strict=True):
        torch.testing.assert_close(param, expected, **TOLERANCE[dtype])
