"""Bad inputs and their messages (issue #11): lambdas rules, NumPy scalars, algorithm and preset checks."""

import numpy as np
import pytest
from stable_baselines3 import SAC, TD3

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
        dict(lambdas=(np.int64(4), np.float32(16.0)), sparsity=None),
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
