"""Bad inputs and their messages (issue #11): lambdas rules, NumPy scalars, algorithm and preset checks."""

from typing import ClassVar

import numpy as np
import pytest
from sb3_contrib import QRDQN, TQC, TRPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.td3.policies import TD3Policy

from sb3_sparse import SparseSACPolicy, SparseTD3Policy
from sb3_sparse.contrib import SparseQRDQNPolicy
from sb3_sparse.core.config import SparseConfig, resolve_config

SMALL = dict(net_arch=[32, 32])


def test_one_lambda_on_two_different_sparse_layers_is_an_error():
    # Pendulum's actor has two sparse layers of different shapes: one lambda cannot be meant for both.
    with pytest.raises(ValueError, match=r"2 sparse layers here.*got lambdas=\[2\]"):
        TD3("SparseMlpPolicy", "Pendulum-v1", policy_kwargs={**SMALL, "lambdas": (2,)})


def test_lambdas_repeat_over_identical_q_networks():
    model = TD3("SparseMlpPolicy", "Pendulum-v1", policy_kwargs={**SMALL, "lambdas": (2, 8)})
    critic = model.policy.sparse_controller.networks["critic"]
    assert critic.counts == [2 * (4 + 32), 8 * (32 + 32)] * 2


@pytest.mark.parametrize("key", ["sparsity", "actor_sparsity", "critic_sparsity"])
def test_lambdas_with_a_sparsity_is_an_error(key):
    with pytest.raises(ValueError, match=rf"lambdas=\(4, 16\) and {key}=0.7"):
        resolve_config(None, "td3", {"lambdas": (4, 16), key: 0.7})


def test_lambdas_with_a_presets_sparsity_is_fine():
    assert resolve_config("tows", "td3", {"lambdas": (4, 16)}).lambdas == (4, 16)


@pytest.mark.parametrize(
    "settings",
    [
        dict(sparsity=np.float32(0.5), drop_fraction=np.float64(0.1), update_interval=np.int64(50)),
        dict(end_fraction=np.float32(0.5), dormant_interval=np.int32(10), dormant_threshold=np.float32(0.2)),
        dict(method="gmp", initial_sparsity=np.float32(0.1), prune_start_fraction=np.float16(0.1)),
        dict(lambdas=(np.int64(4), np.float32(16.0))),
        dict(mask_optimizer_moments=np.bool_(True)),
    ],
)
def test_numpy_scalars_are_numbers(settings):
    config = SparseConfig(**settings)
    for key, value in settings.items():
        if key == "lambdas":
            assert all(type(v) in (int, float) for v in config.lambdas)
        elif isinstance(value, np.generic):
            assert type(getattr(config, key)) in (int, float, bool) and getattr(config, key) == value


def test_numpy_scalars_in_policy_kwargs():
    kwargs = dict(sparsity=np.float32(0.5), update_interval=np.int64(50), drop_fraction=np.float32(0.2))
    model = SAC("SparseMlpPolicy", "Pendulum-v1", policy_kwargs={**SMALL, **kwargs})
    assert model.policy.sparse_config.update_interval == 50


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(update_interval=np.float32(5.0)), "update_interval must be an integer >= 1, got 5.0"),
        (dict(sparsity=np.bool_(True)), r"sparsity must be in \[0, 1\), got True"),
        (dict(sparsity=np.float32(1.5)), r"sparsity must be in \[0, 1\), got 1.5"),
    ],
)
def test_numpy_scalars_are_checked_like_python_numbers(settings, message):
    with pytest.raises(ValueError, match=message):
        SparseConfig(**settings)


@pytest.mark.parametrize(
    "algo, policy, message",
    [
        (PPO, SparseSACPolicy, r"SparseSACPolicy fits SAC, not PPO; PPO takes 'SparseMlpPolicy' \(SparseActorCriticPolicy\)"),
        (A2C, SparseTD3Policy, r"SparseTD3Policy fits TD3 and DDPG, not A2C; A2C takes 'SparseMlpPolicy'"),
        (TRPO, SparseTD3Policy, "SparseTD3Policy fits TD3 and DDPG, not TRPO; TRPO has no sparse policy"),
        (SAC, SparseTD3Policy, r"SparseTD3Policy fits TD3 and DDPG, not SAC; SAC takes 'SparseMlpPolicy' \(SparseSACPolicy\)"),
        (TD3, SparseSACPolicy, r"SparseSACPolicy fits SAC, not TD3; TD3 takes 'SparseMlpPolicy' \(SparseTD3Policy\)"),
        (DDPG, SparseSACPolicy, r"SparseSACPolicy fits SAC, not DDPG; DDPG takes 'SparseMlpPolicy' \(SparseTD3Policy\)"),
        (TQC, SparseSACPolicy, r"SparseSACPolicy fits SAC, not TQC; TQC takes 'SparseMlpPolicy' \(SparseTQCPolicy\)"),
    ],
)
def test_a_sparse_policy_names_the_algorithm_it_is_used_with(algo, policy, message):
    with pytest.raises(TypeError, match=message):
        algo(policy, "Pendulum-v1", policy_kwargs={**SMALL})


class OwnAlgorithm(TD3):
    """A user's algorithm without sparse aliases: its policy is the user's business."""

    policy_aliases: ClassVar[dict] = {"MlpPolicy": TD3Policy}


def test_the_right_policy_class_passes_the_check():
    assert type(OwnAlgorithm(SparseTD3Policy, "Pendulum-v1", policy_kwargs={**SMALL}).policy) is SparseTD3Policy
    assert type(DDPG(SparseTD3Policy, "Pendulum-v1", policy_kwargs={**SMALL}).policy) is SparseTD3Policy
    assert type(QRDQN("SparseMlpPolicy", "CartPole-v1", policy_kwargs={**SMALL}).policy) is SparseQRDQNPolicy


@pytest.mark.parametrize(
    "algo, env, preset, allowed",
    [
        (TD3, "Pendulum-v1", "dqn-rigl", "'ds', 'ds-td3', 'set', 'static', 'tows'"),
        (TD3, "Pendulum-v1", "ds-sac", "'ds', 'ds-td3', 'set', 'static', 'tows'"),
        (SAC, "Pendulum-v1", "dqn-gmp", "'ds', 'ds-sac', 'set', 'static', 'tows'"),
        (DQN, "CartPole-v1", "tows", "'dqn-gmp', 'dqn-rigl', 'dqn-rigl-nobias', 'dqn-set', 'static'"),
        (DQN, "CartPole-v1", "set", "'dqn-gmp', 'dqn-rigl', 'dqn-rigl-nobias', 'dqn-set', 'static'"),
    ],
)
def test_a_preset_of_another_algorithm_is_an_error(algo, env, preset, allowed):
    policy = algo.policy_aliases["SparseMlpPolicy"].__name__
    with pytest.raises(ValueError, match=rf"preset='{preset}' is for .*; {policy} \(.*\) takes preset in \[{allowed}\]"):
        algo("SparseMlpPolicy", env, policy_kwargs={**SMALL, "preset": preset})
