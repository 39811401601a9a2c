"""Property-based tests (hypothesis) of the pure-torch core: random shapes, sparsities, distributions, schedules."""

import itertools
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from sb3_sparse.core import SparseConfig, lambda_counts, layer_counts, random_mask
from sb3_sparse.core.layers import MaskedLayerMixin, active_count, to_masked
from sb3_sparse.core.methods import RANDOM
from sb3_sparse.core.schedules import cubic_sparsity_at, drop_fraction_at
from sb3_sparse.core.sparsify import sparsify_
from sb3_sparse.core.topology import TargetSupport, drop_smallest, grow_best, prune_to_count_

# 60 examples per property in the suite; set SB3_SPARSE_HYPOTHESIS_EXAMPLES for a longer search.
EXAMPLES = int(os.environ.get("SB3_SPARSE_HYPOTHESIS_EXAMPLES", 60))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
dims = st.integers(1, 48)
linear_shapes = st.lists(st.tuples(dims, dims), min_size=1, max_size=4)
conv_shapes = st.lists(st.tuples(dims, dims, st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3)
fractions = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def networks(draw):
    """Weight shapes, which layers may be sparse, a sparsity and a distribution."""
    shapes = draw(st.one_of(linear_shapes, conv_shapes))
    sparse = draw(st.lists(st.booleans(), min_size=len(shapes), max_size=len(shapes)))
    return shapes, sparse, draw(st.floats(0.0, 0.99)), draw(st.sampled_from(["er", "erk", "uniform"]))


@FAST
@given(networks())
def test_layer_counts_are_exact_and_hit_the_budget_within_one_connection_per_layer(network):
    shapes, sparse, sparsity, distribution = network
    sizes = [math.prod(s) for s in shapes]
    try:
        counts = layer_counts(shapes, sparse, sparsity, distribution)
    except ValueError as error:  # only when the dense layers alone exceed the budget (or all layers are dense)
        assert "cannot be reached" in str(error)
        assert sum(size for size, s in zip(sizes, sparse, strict=True) if not s) >= (1 - sparsity) * sum(sizes)
        return
    assert all(isinstance(c, int) for c in counts)
    for count, size, may_be_sparse in zip(counts, sizes, sparse, strict=True):
        assert 0 <= count / size <= 1  # densities in [0, 1]
        assert count == size if not may_be_sparse else count >= 1
    budget = (1 - sparsity) * sum(sizes)
    # Each sparse layer is rounded (and at least one connection): off by at most one per sparse layer.
    assert abs(sum(counts) - budget) <= sum(sparse), (counts, budget)


@FAST
@given(st.lists(st.tuples(dims, dims), min_size=1, max_size=4), st.data())
def test_lambda_counts_are_exact_or_name_the_layer(shapes, data):
    lambdas = [data.draw(st.floats(0.01, 30.0)) for _ in shapes]
    expected = [round(lam * (n_in + n_out)) for (n_out, n_in), lam in zip(shapes, lambdas, strict=True)]
    if all(c <= n_out * n_in for c, (n_out, n_in) in zip(expected, shapes, strict=True)):
        assert lambda_counts(shapes, lambdas) == expected
    else:
        with pytest.raises(ValueError, match=r"lambdas\[\d+\]"):
            lambda_counts(shapes, lambdas)


@FAST
@given(st.tuples(dims, dims), fractions, st.integers(0, 2**31 - 1))
def test_random_mask_has_exactly_count_ones(shape, density, seed):
    count = round(density * shape[0] * shape[1])
    mask = random_mask(shape, count, torch.Generator().manual_seed(seed))
    assert mask.shape == shape and int(mask.sum()) == count
    assert torch.all((mask == 0) | (mask == 1))


def masked_layer(shape, density, seed):
    gen = torch.Generator().manual_seed(seed)
    layer = to_masked(nn.Linear(shape[1], shape[0]))
    layer.set_mask_(random_mask(shape, max(1, round(density * shape[0] * shape[1])), gen))
    return layer, gen


@FAST
@given(st.tuples(dims, dims), st.floats(0.05, 0.95), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_drop_then_grow_preserves_counts_and_grows_only_at_absent_positions(shape, density, fraction, seed):
    layer, gen = masked_layer(shape, density, seed)
    before_mask = layer.weight_mask.clone().view(-1)
    active, size = int(before_mask.sum()), before_mask.numel()
    n = min(round(fraction * active), size - active)  # SET never asks for more than there is room for
    magnitudes = layer.weight.detach().abs().view(-1).clone()

    dropped = drop_smallest(layer, n)
    assert int(layer.weight_mask.sum()) == active - n
    assert torch.all(before_mask[dropped] == 1)  # only active connections are dropped ...
    kept = layer.weight_mask.view(-1) == 1
    if n and kept.any():  # ... and they are the ones closest to zero
        assert magnitudes[dropped].max() <= magnitudes[kept].min()

    absent_before_growth = layer.weight_mask.view(-1) == 0
    grown = grow_best(layer, n, RANDOM.score(layer.weight, None, gen))
    assert torch.all(absent_before_growth[grown])  # growth only at absent positions
    assert grown.unique().numel() == n
    assert int(layer.weight_mask.sum()) == active  # drop + grow preserves the count
    assert torch.all(layer.weight.view(-1)[grown] == 0)  # new connections start at zero
    assert torch.all(layer.weight[layer.weight_mask == 0] == 0)  # absent weights are exactly zero


@FAST
@given(
    st.tuples(st.integers(2, 24), st.integers(2, 24)),
    st.floats(0.05, 0.9),
    st.floats(0.001, 1.0),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_target_pruning_keeps_its_count_and_the_largest_entries(shape, density, tau, shared, seed):
    online, gen = masked_layer(shape, density, seed)
    target = to_masked(nn.Linear(shape[1], shape[0]))
    count = int(online.weight_mask.sum())
    target.set_mask_(online.weight_mask.clone() if shared else random_mask(shape, count, gen))
    index = TargetSupport(target, online)
    for _ in range(3):  # the index is carried across target updates, as in training
        with torch.no_grad():
            online.weight.copy_(torch.randn(shape, generator=gen) * online.weight_mask)
            target.weight.mul_(1 - tau).add_(online.weight, alpha=tau)  # a polyak update
        before = target.weight.detach().abs().view(-1).clone()
        prune_to_count_(target, online, index)
        kept = target.weight_mask.view(-1) == 1
        assert int(kept.sum()) == count
        if (~kept).any():
            assert before[kept].min() >= before[~kept].max()
        assert torch.all(target.weight[target.weight_mask == 0] == 0)


@FAST
@given(st.floats(0.0, 0.99), st.sampled_from(["constant", "cosine"]), fractions, st.floats(0.01, 1.0))
def test_drop_fraction_schedule_stays_within_zero_and_base(base, schedule, progress, end_fraction):
    value = drop_fraction_at(base, schedule, progress, end_fraction)
    assert 0.0 <= value <= base + 1e-12
    if progress > end_fraction:
        assert value == 0.0


@FAST
@given(st.floats(0.0, 0.99), st.floats(0.0, 0.99), fractions, fractions, st.floats(0.0, 0.98), st.floats(0.01, 1.0))
def test_cubic_sparsity_is_monotone_between_initial_and_final(initial, final, p, q, start, length):
    end = min(1.0, start + length)
    assume(start < end)
    low, high = sorted((p, q))
    s_low, s_high = (cubic_sparsity_at(initial, final, x, start, end) for x in (low, high))
    lo, hi = min(initial, final), max(initial, final)
    assert lo - 1e-12 <= s_low <= hi + 1e-12 and lo - 1e-12 <= s_high <= hi + 1e-12  # densities stay in [0, 1]
    # moving forward in training moves the sparsity towards the final value
    assert (s_high - s_low) * (final - initial) >= -1e-12


@FAST
@given(
    st.lists(st.integers(1, 40), min_size=2, max_size=5),  # a single layer is an output layer
    st.floats(0.0, 0.95),
    st.sampled_from(["er", "erk", "uniform"]),
    st.booleans(),
)
def test_sparsify_gives_every_layer_its_exact_count(widths, sparsity, distribution, sparse_output_layer):
    layers = [nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
    network = nn.Sequential(*(m for layer in layers for m in (layer, nn.ReLU())))
    config = SparseConfig(method="set", sparsity=sparsity, distribution=distribution, sparse_output_layer=sparse_output_layer)
    try:
        counts = sparsify_(network, config, sparsity)
    except ValueError as error:
        assert "cannot be reached" in str(error)
        return
    weighted = [m for m in network if isinstance(m, nn.Linear)]
    for i, (layer, count) in enumerate(zip(weighted, counts, strict=True)):
        output = i == len(weighted) - 1
        if output and not sparse_output_layer:
            assert not isinstance(layer, MaskedLayerMixin) and count == layer.weight.numel()
        else:
            assert active_count(layer) == count == int(torch.count_nonzero(layer.weight))  # exact, and absent weights are zero
    assert abs(sum(counts) - (1 - sparsity) * sum(m.weight.numel() for m in weighted)) <= len(weighted)


def test_a_network_with_no_sparse_layer_cannot_reach_a_sparsity():
    """Found by the property above: this returned [3] (a dense layer, 0 % sparsity) without an error."""
    with pytest.raises(ValueError, match="no layer may be sparse"):
        layer_counts([(3, 1)], [False], 0.5, "er")
    assert layer_counts([(3, 1)], [False], 0.0, "er") == [3]
