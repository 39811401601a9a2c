"""The sparse backend's activation layout: feature-major inside a network, ordinary tensors out of it."""

from __future__ import annotations

import pytest
import torch
from sb3_contrib import QRDQN
from stable_baselines3 import TD3
from test_accounting import CheetahShapes
from torch import nn

from sb3_sparse.core.sparse_layer import FeatureMajorLinear, SparseLinear
from sb3_sparse.core.sparse_ops import FEATURE_MAJOR_MIN_FEATURES, SparseIndex, sparse_linear


def feature_major(rows: int, features: int) -> torch.Tensor:
    """A ``(rows, features)`` tensor laid out as the transposed view of a ``(features, rows)`` one."""
    return torch.randn(features, rows).T


@pytest.mark.parametrize("out", [1, 6, FEATURE_MAJOR_MIN_FEATURES - 1, FEATURE_MAJOR_MIN_FEATURES, 256])
@pytest.mark.parametrize("rows", [1, 2, 256])
def test_feature_major_linear_is_nn_linear(out, rows):
    torch.manual_seed(0)
    dense = nn.Linear(40, out)
    layer = nn.Linear(40, out)
    layer.load_state_dict(dense.state_dict())
    layer.__class__ = FeatureMajorLinear
    assert list(layer.state_dict()) == list(dense.state_dict())
    for x in (feature_major(rows, 40), torch.randn(rows, 40)):
        x = x.detach().requires_grad_()
        grad = torch.randn(rows, out)
        y, y_ref = layer(x), dense(x)
        torch.testing.assert_close(y, y_ref)
        (g_x, g_w), (r_x, r_w) = (torch.autograd.grad(t, [x, m.weight], grad) for t, m in ((y, layer), (y_ref, dense)))
        torch.testing.assert_close(g_x, r_x)
        torch.testing.assert_close(g_w, r_w)
        if rows > 1 and x.T.is_contiguous():  # computed as W @ x.T, laid out like a sparse layer's result
            assert y.is_contiguous() == (out < FEATURE_MAJOR_MIN_FEATURES)
            assert y.T.is_contiguous() or out < FEATURE_MAJOR_MIN_FEATURES


@pytest.mark.parametrize("out", [3, FEATURE_MAJOR_MIN_FEATURES, 200])
def test_sparse_layer_results_small_heads_contiguous(out):
    index = SparseIndex(torch.arange(0, out * 30, 3, dtype=torch.int32), (out, 30), path="sparse")
    values = torch.randn(index.nnz, requires_grad=True)
    x = feature_major(100, 30)
    y = sparse_linear(x, values, index, None)
    assert y.is_contiguous() == (out < FEATURE_MAJOR_MIN_FEATURES)
    output = sparse_linear(x, values, index, None, contiguous=True)  # a network's output layer
    assert output.is_contiguous() and torch.equal(output, y)


def test_td3_networks_keep_the_layout_and_return_ordinary_tensors():
    policy_kwargs = dict(preset="tows", sparsity=0.9, backend="sparse", net_arch=[128, 128])
    policy = TD3("SparseMlpPolicy", CheetahShapes(), policy_kwargs=policy_kwargs, seed=0).policy
    heads = {type(m.mu[-2]) for m in (policy.actor, policy.actor_target)}
    heads |= {type(q[-1]) for c in (policy.critic, policy.critic_target) for q in c.q_networks}
    assert heads == {FeatureMajorLinear}  # TowS keeps the heads dense
    obs = torch.randn(256, 17)
    hidden = policy.actor.mu[:2](obs)  # the first sparse layer and its activation
    assert isinstance(policy.actor.mu[0], SparseLinear)
    assert hidden.T.is_contiguous() and not hidden.is_contiguous()
    actions = policy.actor(obs)
    q1, q2 = policy.critic(obs, actions)
    assert actions.shape == (256, 6) and actions.is_contiguous() and q1.is_contiguous() and q2.is_contiguous()
    (q1.mean() + q2.mean()).backward()
    assert all(p.grad is not None for p in policy.critic.parameters())


def test_wide_output_layers_are_ordinary_tensors():
    """QR-DQN views its 200 x actions quantile outputs; a sparse output layer that wide must allow it."""
    kwargs = dict(sparsity=0.8, backend="sparse", net_arch=[128, 128], sparse_output_layer=True, n_quantiles=200)
    model = QRDQN("SparseMlpPolicy", "CartPole-v1", policy_kwargs=kwargs, learning_starts=32, batch_size=32, seed=0)
    last = model.policy.quantile_net.quantile_net[-1]
    assert isinstance(last, SparseLinear) and last.out_features == 400 and last.contiguous_output
    assert model.policy.quantile_net(torch.randn(64, 4)).shape == (64, 200, 2)
    model.learn(64)  # trains through the view
