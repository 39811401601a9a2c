"""Custom features extractors, shared by actor and critic or not, on every algorithm (issue #11, defect 1)."""

import pytest
import torch
from invariants import InvariantProbe, check_online, check_target
from sb3_contrib import QRDQN, TQC, CrossQ
from stable_baselines3 import DDPG, DQN, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_sparse import SparseTrainingCallback
from sb3_sparse.core.layers import MaskedLayerMixin

ALGOS = {"td3": TD3, "ddpg": DDPG, "sac": SAC, "tqc": TQC, "crossq": CrossQ, "dqn": DQN, "qrdqn": QRDQN}


class Extractor(BaseFeaturesExtractor):
    """One Linear + ReLU: a features extractor with weights of its own."""

    def __init__(self, observation_space, features_dim: int = 32) -> None:
        super().__init__(observation_space, features_dim)
        self.net = nn.Sequential(nn.Linear(observation_space.shape[0], features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)


def train(algo, **policy_kwargs):
    discrete = algo in ("dqn", "qrdqn")
    env = make_vec_env("CartPole-v1" if discrete else "Pendulum-v1", seed=0)
    extra = {"train_freq": 1, "target_update_interval": 10} if discrete else {}
    kwargs = dict(net_arch=[64, 64], update_interval=20, features_extractor_class=Extractor) | policy_kwargs
    if algo in ("qrdqn", "tqc"):  # quantile outputs: a dense output layer alone exceeds the sparsity budget
        kwargs["sparse_output_layer"] = True
    model = ALGOS[algo]("SparseMlpPolicy", env, learning_starts=64, batch_size=32, seed=0, policy_kwargs=kwargs, **extra)
    probe = InvariantProbe(model.policy.sparse_controller)
    model.learn(300, callback=SparseTrainingCallback())
    probe.remove()
    assert probe.steps >= model._n_updates > 200
    controller = model.policy.sparse_controller
    assert controller.n_topology_updates > 5
    check_online(controller)
    for name, net in controller.networks.items():
        if net.target is not None:
            check_target(controller, name)
    for name, layer in model.policy.named_modules():  # every masked layer anywhere, targets included
        if isinstance(layer, MaskedLayerMixin):
            assert torch.all(layer.weight[layer.weight_mask == 0] == 0), name
    return model


@pytest.mark.parametrize("algo", ["td3", "ddpg", "sac", "tqc", "crossq"])
def test_a_shared_features_extractor_stays_dense_and_the_invariants_hold(algo):
    with pytest.warns(UserWarning, match="shared by actor and critic.*stays dense"):
        model = train(algo, share_features_extractor=True)
    extractor = model.policy.actor.features_extractor
    assert extractor is model.policy.critic.features_extractor
    assert not any(isinstance(m, MaskedLayerMixin) for m in extractor.modules())


@pytest.mark.parametrize("algo", ["td3", "sac", "dqn", "qrdqn"])
def test_own_features_extractors_are_sparse_and_the_invariants_hold(algo):
    model = train(algo)
    name = "q_net" if algo == "dqn" else "quantile_net" if algo == "qrdqn" else "critic"
    extractor = getattr(model.policy, name).features_extractor
    assert isinstance(extractor.net[0], MaskedLayerMixin)
