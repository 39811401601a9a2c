"""Dict observations: "SparseMultiInputPolicy" on every algorithm that has a MultiInputPolicy, with HER."""

import numpy as np
import pytest
from invariants import check_online, check_target
from sb3_contrib import QRDQN, TQC
from stable_baselines3 import DDPG, DQN, SAC, TD3, HerReplayBuffer
from stable_baselines3.common.envs import BitFlippingEnv, SimpleMultiObsEnv

from sb3_sparse import SparseTrainingCallback

ALGOS = {"td3": TD3, "ddpg": DDPG, "sac": SAC, "tqc": TQC, "dqn": DQN, "qrdqn": QRDQN}
CONTINUOUS = ("td3", "ddpg", "sac", "tqc")


def make(algo, env, replay_buffer_class=None, replay_buffer_kwargs=None, **policy_kwargs):
    kwargs = {"learning_starts": 32, "batch_size": 16, "seed": 0, "train_freq": 1}
    kwargs |= {"replay_buffer_class": replay_buffer_class, "replay_buffer_kwargs": replay_buffer_kwargs}
    if algo in ("dqn", "qrdqn"):
        kwargs["target_update_interval"] = 7
    policy_kwargs = {"net_arch": [16, 16], "method": "set", "sparsity": 0.7, "update_interval": 10, **policy_kwargs}
    if algo in ("qrdqn", "tqc"):  # quantile outputs: keep the dense output layer from dominating the count
        policy_kwargs.setdefault("sparse_output_layer", True)
    return ALGOS[algo]("SparseMultiInputPolicy", env, policy_kwargs=policy_kwargs, **kwargs)


def check_all(model):
    controller = model.policy.sparse_controller
    check_online(controller)
    for name, net in controller.networks.items():
        if net.target is not None:
            check_target(controller, name)


@pytest.mark.parametrize("algo", ["dqn", "td3"])
def test_mlp_policy_on_dict_space_points_to_multi_input(algo):
    env = BitFlippingEnv(n_bits=4, continuous=algo == "td3")
    with pytest.raises(ValueError, match="SparseMultiInputPolicy"):
        ALGOS[algo]("SparseMlpPolicy", env, policy_kwargs={"net_arch": [16, 16]})


@pytest.mark.parametrize("algo", list(ALGOS))
def test_multi_input_with_her_learns_and_reloads(tmp_path, algo):
    env = BitFlippingEnv(n_bits=4, continuous=algo in CONTINUOUS, max_steps=4)
    her = {"n_sampled_goal": 2, "goal_selection_strategy": "future"}
    model = make(algo, env, replay_buffer_class=HerReplayBuffer, replay_buffer_kwargs=her)
    model.learn(200, callback=SparseTrainingCallback())
    controller = model.policy.sparse_controller
    assert model._n_updates > 100 and controller.n_topology_updates > 0
    check_all(model)
    obs = env.reset()[0]
    action = model.predict(obs, deterministic=True)[0]
    model.save(tmp_path / "model")
    loaded = ALGOS[algo].load(tmp_path / "model", env=env)
    check_all(loaded)
    loaded_controller = loaded.policy.sparse_controller
    assert loaded_controller.n_topology_updates == controller.n_topology_updates
    for net, loaded_net in zip(controller.networks.values(), loaded_controller.networks.values(), strict=True):
        assert net.counts == loaded_net.counts
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action)


def test_multi_input_images_are_sparse_too():
    """SimpleMultiObsEnv: a vector and a 64x64 image; the image's NatureCNN is made sparse."""
    env = SimpleMultiObsEnv(random_start=False)
    model = make("dqn", env, features_extractor_kwargs={"cnn_output_dim": 8}, distribution="erk")
    model.learn(60, callback=SparseTrainingCallback())
    check_all(model)
    names = model.policy.sparse_controller.networks["q_net"].layer_names
    assert any("features_extractor.extractors.img" in name for name in names)
