"""Parameter and FLOPs accounting against the DS-TD3 paper's Table 2 (HalfCheetah)."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import TD3

import sb3_sparse


class CheetahShapes(gym.Env):
    """HalfCheetah's spaces (17-dim observation, 6-dim action) without the simulator."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (17,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (6,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(17, np.float32), {}

    def step(self, action):
        return np.zeros(17, np.float32), 0.0, False, False, {}


def test_table2_dense_and_ds_td3():
    kwargs = dict(net_arch=[256, 256], method="static", lambdas=(7, 64))
    model = TD3("SparseMlpPolicy", CheetahShapes(), batch_size=100, policy_kwargs=kwargs, seed=0)
    info = sb3_sparse.summary(model, n_updates=1_000_000)
    assert info["dense_weights"] == 214_784
    assert info["active_weights"] == 106_169
    assert info["dense_train_flops"] == pytest.approx(1.07e14, rel=5e-3)
    assert info["train_flops"] / info["dense_train_flops"] == pytest.approx(0.49, abs=0.005)
    actor = info["networks"]["actor"]["layers"]
    assert actor["mu.0"]["active_weights"] == 7 * (17 + 256)
    assert actor["mu.2"]["active_weights"] == 64 * (256 + 256)
    assert actor["mu.4"]["sparsity"] == 0.0


def test_global_sparsity_is_reached_per_network():
    kwargs = dict(net_arch=[256, 256], actor_sparsity=0.9, critic_sparsity=0.7)
    model = TD3("SparseMlpPolicy", CheetahShapes(), policy_kwargs=kwargs, seed=0)
    info = sb3_sparse.summary(model)
    assert info["networks"]["actor"]["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert info["networks"]["critic"]["sparsity"] == pytest.approx(0.7, abs=1e-4)
