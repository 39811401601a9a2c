"""PPO and A2C with sparse actor and critic: every method, the optimizer-step clock, save/load, CNN, Dict, dormant."""

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from invariants import InvariantProbe, check_online
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.envs import BitFlippingEnv, FakeImageEnv
from stable_baselines3.common.logger import configure
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecNormalize

import sb3_sparse
from sb3_sparse import SparseTrainingCallback
from sb3_sparse.__main__ import info
from sb3_sparse.hub_utils import algorithm_of

ALGOS = {"ppo": PPO, "a2c": A2C}
METHODS = {
    "static": dict(preset="ppo-static", sparsity=0.8),
    "set": dict(preset="ppo-set", sparsity=0.8),
    "tows": dict(preset="ppo-set", sparsity=0.8, mask_optimizer_moments=True),
    "rigl": dict(preset="ppo-rigl", sparsity=0.8),
    "gmp": dict(preset="ppo-gmp", sparsity=0.8, prune_start_fraction=0.1, prune_end_fraction=0.6),
}
N_STEPS, BATCH, EPOCHS = 32, 16, 2


def make(algo, env="Pendulum-v1", policy="SparseMlpPolicy", **policy_kwargs):
    kwargs = {"n_steps": N_STEPS, "seed": 0}
    if algo == "ppo":
        kwargs |= {"batch_size": BATCH, "n_epochs": EPOCHS}
    policy_kwargs = {"net_arch": [16, 16], "update_interval": 4, "end_fraction": 1.0, **policy_kwargs}
    return ALGOS[algo](policy, env, policy_kwargs=policy_kwargs, **kwargs)


def optimizer_steps(algo, timesteps):
    iterations = math.ceil(timesteps / N_STEPS)
    return iterations * (EPOCHS * math.ceil(N_STEPS / BATCH) if algo == "ppo" else 1)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("algo", list(ALGOS))
def test_invariants_every_method_and_optimizer_step_clock(algo, method):
    model = make(algo, **METHODS[method])
    controller = model.policy.sparse_controller
    assert list(controller.networks) == ["actor", "critic"]
    probe = InvariantProbe(controller)
    model.learn(8 * N_STEPS, callback=SparseTrainingCallback())
    probe.remove()
    steps = optimizer_steps(algo, 8 * N_STEPS)
    assert controller.clock == steps and probe.steps == 2 * steps  # both networks hook the one optimizer
    check_online(controller)
    assert (controller.n_topology_updates > 0) == (method != "static")
    if method == "gmp":  # pruning is over at 60% of training
        assert sb3_sparse.summary(model)["sparsity"] == pytest.approx(0.8, abs=0.02)


def test_output_layers_follow_the_setting_and_state_dict_has_no_views():
    dense_out = make("ppo", preset="ppo-set", sparse_output_layer=False).policy
    assert not hasattr(dense_out.action_net, "weight_mask") and not hasattr(dense_out.value_net, "weight_mask")
    assert not any(key.startswith(("actor.", "critic.")) for key in dense_out.state_dict())
    sparse_out = make("ppo", preset="ppo-set").policy  # Graesser et al.: outputs sparse too
    assert not sparse_out.action_net.weight_mask.all()
    assert sparse_out.actor["action_net"] is sparse_out.action_net


def test_ppo_save_load_continues_the_clock(tmp_path):
    model = make("ppo", **METHODS["rigl"])
    model.learn(4 * N_STEPS, callback=SparseTrainingCallback())
    controller = model.policy.sparse_controller
    obs = model.env.reset()
    action = model.predict(obs, deterministic=True)[0]
    model.save(tmp_path / "model")
    loaded = PPO.load(tmp_path / "model", env=model.env)
    loaded_controller = loaded.policy.sparse_controller
    check_online(loaded_controller)
    assert loaded_controller.clock == controller.clock == optimizer_steps("ppo", 4 * N_STEPS)
    assert loaded_controller.n_topology_updates == controller.n_topology_updates
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action)
    loaded.learn(2 * N_STEPS, callback=SparseTrainingCallback(), reset_num_timesteps=False)
    assert loaded_controller.clock == optimizer_steps("ppo", 6 * N_STEPS)
    check_online(loaded_controller)


def test_cnn_policy_sparsifies_the_shared_convolutions():
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    model = make("ppo", env, "SparseCnnPolicy", preset="ppo-set", features_extractor_kwargs={"features_dim": 16})
    assert model.policy.sparse_config.distribution == "erk"
    names = model.policy.sparse_controller.networks["actor"].layer_names
    assert any(name.startswith("features_extractor.cnn") for name in names)
    model.learn(2 * N_STEPS, callback=SparseTrainingCallback())
    check_online(model.policy.sparse_controller)


def test_dict_observations_and_dormant_neurons():
    env = BitFlippingEnv(n_bits=4, max_steps=4)
    with pytest.raises(ValueError, match="SparseMultiInputPolicy"):
        make("a2c", env)
    model = make("a2c", env, "SparseMultiInputPolicy", preset="ppo-set", dormant_interval=2)
    model.set_logger(configure(None, []))
    recorded = []
    record = model.logger.record
    model.logger.record = lambda key, *args, **kwargs: (recorded.append(key), record(key, *args, **kwargs))
    model.learn(6 * N_STEPS, callback=SparseTrainingCallback())
    check_online(model.policy.sparse_controller)
    assert {"sparse/dormant/actor", "sparse/dormant/critic", "sparse/train_flops"} <= set(recorded)


# Graesser et al.'s PPO MuJoCo values (google-research/rigl, ppo_train_eval.py and ppo_mujoco_*_config.gin), restated.
GRAESSER_PPO = dict(
    n_timesteps=1_001_472, n_envs=1, n_steps=2048, batch_size=64, n_epochs=10, learning_rate="lin_3e-4", gamma=0.99,
    gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, normalize=True,
)  # fmt: skip


def test_rigl_ppo_file_carries_graesser_et_al_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its log file to the working directory
    path = Path(sb3_sparse.__file__).parent / "hyperparams" / "rigl_ppo.yml"
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == {"HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5"}
    assert {k: raw["HalfCheetah-v5"][k] for k in GRAESSER_PPO} == GRAESSER_PPO
    manager = ExperimentManager(
        argparse.Namespace(), "ppo", "HalfCheetah-v5", str(tmp_path), n_timesteps=1000, config=str(path), eval_freq=-1, seed=0
    )
    model, _ = manager.setup_experiment()
    assert type(model.policy) is sb3_sparse.SparseActorCriticPolicy and isinstance(model.env, VecNormalize)
    assert model.policy.sparse_config == sb3_sparse.SparseConfig(**sb3_sparse.PRESETS["ppo-rigl"])
    assert (model.policy.net_arch, model.policy.optimizer.defaults["eps"]) == (dict(pi=[64, 64], vf=[64, 64]), 1e-5)
    assert sb3_sparse.summary(model)["sparsity"] == pytest.approx(0.9, abs=0.002)
    assert SparseTrainingCallback in {type(c) for c in manager.callbacks}
    model.env.close()


@pytest.mark.parametrize("algo", list(ALGOS))
def test_saved_on_policy_model_names_its_algorithm_and_updates(tmp_path, capsys, algo):
    model = make(algo, "CartPole-v1", preset="ppo-static")
    model.learn(N_STEPS)
    model.save(tmp_path / "model")
    data, _, _ = load_from_zip_file(tmp_path / "model.zip", load_data=True)
    assert algorithm_of(data) is ALGOS[algo]
    info(str(tmp_path / "model.zip"))
    assert f"{optimizer_steps(algo, N_STEPS)} gradient updates" in capsys.readouterr().out
