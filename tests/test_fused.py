"""One autograd node per network (``FusedSequential``): the module-by-module results, and when it steps aside."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, SAC, TD3
from test_accounting import CheetahShapes
from torch import nn

from sb3_sparse.core import fused
from sb3_sparse.core.fused import FusedSequential
from sb3_sparse.core.layers import MaskedLinear
from sb3_sparse.core.sparse_layer import SparseLinear, to_sparse_


def module_by_module(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose stacks run as plain ``nn.Sequential``s (the reference)."""
    copied = copy.deepcopy(network)
    for module in copied.modules():
        if type(module) is FusedSequential:
            module.__class__ = nn.Sequential
    return copied


def stack(
    activation: nn.Module, last: nn.Module | None = None, density: float = 0.2, bias: bool = True, head: int = 5
) -> nn.Sequential:
    """Sparse 30 -> 70 -> 80 (activations after each) -> a dense head, as ``to_sparse_`` leaves an SB3 MLP."""
    torch.manual_seed(0)
    layers = [MaskedLinear(30, 70, bias=bias), activation, MaskedLinear(70, 80, bias=bias), copy.deepcopy(activation)]
    layers.append(nn.Linear(80, head, bias=bias))
    for layer in layers[:3:2]:
        with torch.no_grad():
            layer.weight_mask.copy_((torch.rand_like(layer.weight) < density).float())
            layer.weight.mul_(layer.weight_mask)
            if bias:
                layer.bias.normal_()
    network = nn.Sequential(*layers, *([last] if last is not None else []))
    to_sparse_(network)
    return network


def assert_same_gradients(network: nn.Module, reference: nn.Module, x: torch.Tensor, run=None) -> None:
    run = run or (lambda net, inputs: net(inputs))
    inputs = [x.detach().clone().requires_grad_(x.requires_grad) for _ in range(2)]
    outputs = [run(net, inp) for net, inp in zip((network, reference), inputs, strict=True)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)  # dense heads sum in another order
    assert outputs[0].stride() == outputs[1].stride()  # and the same layout
    grad = torch.randn_like(outputs[0])
    for output in outputs:
        output.backward(grad)
    for (name, p), q in zip(network.named_parameters(), reference.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
    if x.requires_grad:
        torch.testing.assert_close(inputs[0].grad, inputs[1].grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.LeakyReLU(0.01), nn.LeakyReLU(0.2), nn.Tanh()])
@pytest.mark.parametrize("last", [None, nn.Tanh(), nn.ReLU()])
@pytest.mark.parametrize("rows", [2, 17, 64, 256])
@pytest.mark.parametrize("input_grad", [False, True])
def test_a_fused_stack_computes_what_its_modules_do(activation, last, rows, input_grad):
    network = stack(activation, last)
    assert type(network) is FusedSequential
    # A Tanh between layers is not fused (only at the end, as TD3's actor has it): module by module.
    assert (fused_plan(network, rows) is None) == isinstance(activation, nn.Tanh)
    assert_same_gradients(network, module_by_module(network), torch.randn(rows, 30).requires_grad_(input_grad))


def fused_plan(network: FusedSequential, rows: int = 8):
    return network._fusable(torch.randn(rows, network[0].in_features))


@pytest.mark.parametrize("density", [0.9, 1.0])  # sparse layers dense enough to run on the dense path
def test_dense_path_layers_in_a_fused_stack(density):
    network = stack(nn.LeakyReLU(), density=density)
    assert network[0].index.dense
    assert_same_gradients(network, module_by_module(network), torch.randn(40, 30).requires_grad_())


def test_layers_without_bias():  # RigL-DQN without biases (A Closer Look at Sparse Training in Deep RL)
    network = stack(nn.ReLU(), bias=False)
    assert fused_plan(network) is not None
    assert_same_gradients(network, module_by_module(network), torch.randn(40, 30).requires_grad_())


def test_wide_dense_layers_run_module_by_module():
    """Dense layers run fused as full patterns only where they are small heads (dense BLAS wins on wide ones)."""
    network = stack(nn.ReLU(), head=64)
    assert fused_plan(network) is None
    assert_same_gradients(network, module_by_module(network), torch.randn(40, 30))


def test_feature_major_results_stay_feature_major_and_accept_in_place_ops():
    layers = stack(nn.ReLU())
    network = FusedSequential(*layers[:3])  # 80 features out of a linear layer: feature-major
    reference = module_by_module(network)
    x = torch.randn(32, 30)
    y, y_ref = network(x), reference(x)
    assert y.T.is_contiguous() and y_ref.T.is_contiguous() and torch.equal(y, y_ref)
    y.mul_(2)  # a view made outside the fused function, not read by its backward: in place works
    y.sum().backward()
    assert network[0].values.grad is not None
    hidden = FusedSequential(*layers[:4])  # ends with its ReLU, whose output the backward reads
    y = hidden(x)
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()  # as after nn.ReLU itself
    y = module_by_module(hidden)(x)
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_one_row_without_autograd_acts_as_the_modules_do():
    network = stack(nn.LeakyReLU(), nn.Tanh())
    with torch.no_grad():
        for x in (torch.randn(1, 30), torch.randn(2, 30)):
            y = network(x)
            assert y.is_contiguous()
            torch.testing.assert_close(y, module_by_module(network)(x), rtol=1e-5, atol=1e-6)  # the head sums in C


def test_what_the_fused_function_cannot_honour_runs_module_by_module(monkeypatch):
    network = stack(nn.LeakyReLU())
    x = torch.randn(8, 30)
    assert fused_plan(network) is not None
    seen = []
    handle = network[1].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    assert fused_plan(network) is None
    network(x)
    assert seen == [(8, 70)]  # dormant-neuron scoring sees every activation
    handle.remove()
    assert network._fusable(x.double()) is None and network._fusable(x[0]) is None
    monkeypatch.setattr(fused.native, "library", lambda: None)  # no compiled kernels
    assert network._fusable(x) is None
    monkeypatch.undo()
    network.insert(2, nn.Dropout(0.0))  # a module the fused function does not compute
    assert fused_plan(network) is None
    torch.testing.assert_close(network(x), module_by_module(network)(x))


@pytest.mark.parametrize("input_grad", [False, True])
def test_rigl_dense_gradients_are_recorded_fused(input_grad):
    """RigL's recording runs on the fused path too, so a run never switches path when it starts recording."""
    network = stack(nn.LeakyReLU())
    reference = module_by_module(network)
    for layer in (network[0], network[2], reference[0], reference[2]):
        layer.record_dense_grad = True
    assert fused_plan(network) is not None
    assert_same_gradients(network, reference, torch.randn(40, 30).requires_grad_(input_grad))
    for fused_layer, layer in ((network[0], reference[0]), (network[2], reference[2])):
        assert fused_layer.dense_grad.shape == (fused_layer.out_features, fused_layer.in_features)
        torch.testing.assert_close(fused_layer.dense_grad, layer.dense_grad, rtol=1e-5, atol=1e-5)


def test_copies_drop_the_caches():
    network = stack(nn.ReLU())
    network(torch.randn(8, 30)).sum().backward()
    assert "_fused_layers" in network.__dict__
    for copied in (copy.deepcopy(network), pickle.loads(pickle.dumps(network))):
        assert "_fused_layers" not in copied.__dict__
        x = torch.randn(8, 30)
        torch.testing.assert_close(copied(x), network(x))


def test_tracing_and_compiling_run_module_by_module(monkeypatch):
    network = stack(nn.ReLU())
    x = torch.randn(8, 30)
    for name in ("is_tracing", "is_scripting"):
        with monkeypatch.context() as patch:
            patch.setattr(torch.jit, name, lambda: True)
            assert network._fusable(x) is None
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert network._fusable(x) is None


def test_a_replaced_module_is_planned_anew():
    network = stack(nn.ReLU())
    assert fused_plan(network)[0][1] == 0.0
    network[1] = nn.LeakyReLU(0.3)
    assert fused_plan(network)[0][1] == 0.3
    assert_same_gradients(network, module_by_module(network), torch.randn(8, 30))


def sparse_policy(algo, env, **kwargs):
    kwargs = dict(sparsity=0.9, backend="sparse", net_arch=[128, 128]) | kwargs
    return algo("SparseMlpPolicy", env, policy_kwargs=kwargs, seed=0, device="cpu").policy


def test_sb3_networks_run_fused():
    """Every stack of TD3's, SAC's, DQN's and QR-DQN's sparse networks: the modules' results and gradients."""
    td3 = sparse_policy(TD3, CheetahShapes(), preset="tows")
    sac = sparse_policy(SAC, CheetahShapes(), preset="tows")
    dqn = sparse_policy(DQN, "CartPole-v1", preset="dqn-set", sparsity=0.8)
    qrdqn = sparse_policy(QRDQN, "CartPole-v1", preset="dqn-set", sparsity=0.8, sparse_output_layer=True)
    for policy in (td3, sac, dqn, qrdqn):
        stacks = [m for m in policy.modules() if isinstance(m, nn.Sequential) and any(isinstance(c, SparseLinear) for c in m)]
        assert stacks and all(type(m) is FusedSequential and fused_plan(m) is not None for m in stacks)
    obs = torch.randn(64, 17)
    critic = lambda policy, x: torch.cat(policy.critic(x, policy.actor(x, deterministic=True)), 1)  # noqa: E731
    assert_same_gradients(sac, module_by_module(sac), obs, critic)
    assert_same_gradients(td3, module_by_module(td3), obs, lambda policy, x: torch.cat(policy.critic(x, policy.actor(x)), 1))
    assert_same_gradients(dqn, module_by_module(dqn), torch.randn(64, 4), lambda policy, x: policy.q_net(x))
    assert_same_gradients(qrdqn, module_by_module(qrdqn), torch.randn(64, 4), lambda policy, x: policy.quantile_net(x))


def two_stacks() -> tuple[FusedSequential, FusedSequential]:
    first = stack(nn.LeakyReLU(), head=1)
    second = stack(nn.LeakyReLU(), head=1, density=0.4)  # another topology, other values
    return first, second


def test_stacks_on_one_input_run_as_one_node():
    """A critic's Q-networks: one autograd node, each stack's results and gradients as on its own."""
    stacks = two_stacks()
    x = torch.randn(40, 30, requires_grad=True)
    y = fused.run_parallel(stacks, x)
    assert y[0].grad_fn is y[1].grad_fn  # one node
    x_ref = x.detach().clone().requires_grad_()
    references = [module_by_module(s) for s in stacks]
    y_ref = [r(x_ref) for r in references]
    for a, b in zip(y, y_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    grads = [torch.randn_like(a) for a in y]
    torch.autograd.backward(y, grads)
    torch.autograd.backward(y_ref, grads)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)  # the sum of both stacks' input gradients
    for network, reference in zip(stacks, references, strict=True):
        for p, q in zip(network.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)


def test_an_unused_stack_output_costs_no_backward():
    stacks = two_stacks()
    x = torch.randn(40, 30, requires_grad=True)
    first, _ = fused.run_parallel(stacks, x)
    first.sum().backward()
    assert all(p.grad is not None for p in stacks[0].parameters())
    assert all(p.grad is None for p in stacks[1].parameters())
    x_ref = x.detach().clone().requires_grad_()
    module_by_module(stacks[0])(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 9])
def test_stacks_on_one_input_without_autograd(rows):
    stacks = two_stacks()
    x = torch.randn(rows, 30)
    with torch.no_grad():
        for y, network in zip(fused.run_parallel(stacks, x), stacks, strict=True):
            assert torch.equal(y, network(x))


def test_stacks_that_cannot_run_fused_run_one_by_one():
    stacks = two_stacks()
    seen = []
    stacks[1].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    x = torch.randn(8, 30)
    y = fused.run_parallel(stacks, x)
    assert seen == [(8, 1)] and y[0].grad_fn is not y[1].grad_fn
    assert len(fused.run_parallel((stacks[0], nn.Linear(30, 2)), x)) == 2  # not a fused stack at all


def test_critics_run_their_q_networks_together():
    """TD3's and SAC's sparse critics run both Q-networks in one node; a critic with its own forward keeps it."""
    from stable_baselines3.common.policies import ContinuousCritic

    from sb3_sparse.networks import SparseCriticMixin, make_sparse_class_

    for algo in (TD3, SAC):
        policy = sparse_policy(algo, CheetahShapes(), preset="tows")
        assert isinstance(policy.critic, SparseCriticMixin) and isinstance(policy.critic_target, SparseCriticMixin)
        q = policy.critic(torch.randn(16, 17), torch.randn(16, 6))
        assert len(q) == 2 and q[0].grad_fn is q[1].grad_fn

    class OwnForward(ContinuousCritic):
        def forward(self, obs, actions):
            return super().forward(obs, actions)

    critic = policy.critic
    critic.__class__ = OwnForward
    assert not isinstance(make_sparse_class_(critic), SparseCriticMixin)
