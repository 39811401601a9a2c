"""DQN/QR-DQN soft target updates: the magnitude rule runs after every target update, also
when several happen between two target forwards (issue #11, defect 5; Sokar et al.,
Algorithm 1 l. 31)."""

import pytest
import stable_baselines3.common.utils as sb3_utils
import torch
from sb3_contrib import QRDQN
from sb3_contrib.qrdqn import qrdqn
from stable_baselines3 import DQN
from stable_baselines3.dqn import dqn

from sb3_sparse import SparseTrainingCallback

ALGOS = {"dqn": (DQN, dqn), "qrdqn": (QRDQN, qrdqn)}


@pytest.mark.parametrize("algo", list(ALGOS))
def test_soft_target_updates_are_pruned_after_each_update(algo, monkeypatch):
    cls, module = ALGOS[algo]
    model = cls("SparseMlpPolicy", "CartPole-v1", learning_starts=64, batch_size=32, train_freq=4, target_update_interval=1,
                tau=0.3, seed=0, policy_kwargs=dict(net_arch=[64, 64], method="set", sparsity=0.8, update_interval=5,
                                                    drop_fraction=0.3, sparse_output_layer=True))  # fmt: skip
    net = next(iter(model.policy.sparse_controller.networks.values()))
    # The rule applied by hand after every update: polyak as SB3 does it, then keep the count largest.
    reference = [t.weight.detach().clone() for t in net.target_layers]
    checked = []

    def polyak_then_prune(params, target_params, tau):
        params, target_params = list(params), list(target_params)
        sb3_utils.polyak_update(params, target_params, tau)
        if not target_params:
            return  # the batch-norm statistics (none here)
        for ref, online, count in zip(reference, net.layers, net.counts, strict=True):
            ref.mul_(1 - tau)
            torch.add(ref, online.weight.detach(), alpha=tau, out=ref)
            keep = torch.zeros(ref.numel())
            keep[torch.topk(ref.abs().view(-1), count).indices] = 1.0
            ref.mul_(keep.view_as(ref))

    def compare(module_, args):
        checked.append([torch.equal(t.weight, ref) for t, ref in zip(net.target_layers, reference, strict=True)])

    monkeypatch.setattr(module, "polyak_update", polyak_then_prune)
    handle = net.target.register_forward_pre_hook(compare)  # after the controller's hook
    model.learn(300, callback=SparseTrainingCallback())
    handle.remove()
    assert model.policy.sparse_controller.n_topology_updates > 5 and len(checked) > 50
    assert all(all(layers) for layers in checked)
