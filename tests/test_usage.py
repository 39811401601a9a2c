"""What a user touches: errors for bad input, the callback's logging, progress bars, warnings."""

import pytest
from gymnasium import spaces
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.logger import configure

import sb3_sparse
from sb3_sparse import SparseSACPolicy, SparseTD3Policy, SparseTrainingCallback

SMALL = dict(net_arch=[32, 32])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(sparsity=1.2), ValueError, r"sparsity must be in \[0, 1\), got 1.2"),
        (dict(drop_fraction=1.5), ValueError, r"drop_fraction must be in \(0, 1\)"),
        (dict(update_interval=0), ValueError, "update_interval must be an integer >= 1"),
        (dict(method="magic"), ValueError, "Unknown method='magic'"),
        (dict(distribution="normal"), ValueError, "Unknown distribution='normal'"),
        (dict(preset="dense"), ValueError, "Unknown preset='dense'"),
        (dict(sparsty=0.5), TypeError, "Did you mean 'sparsity'"),
        (dict(lambdas=(7, 64)), ValueError, r"lambdas\[0\]=7 gives density"),  # Pendulum: 3 inputs
        (dict(lambdas=(7, 64, 3)), ValueError, "lambdas needs one value per sparse layer"),
        (dict(sparsity=0.99, net_arch=[8]), ValueError, "dense layers alone hold more"),
    ],
)
def test_bad_policy_kwargs_fail_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        TD3("SparseMlpPolicy", "Pendulum-v1", policy_kwargs={**SMALL, **kwargs})


def test_sparse_policy_on_the_wrong_algorithm_fails_clearly():
    with pytest.raises(TypeError, match="SparseTD3Policy fits TD3 and DDPG, not SAC"):
        SAC(SparseTD3Policy, "Pendulum-v1", policy_kwargs={**SMALL})
    with pytest.raises(TypeError, match="SparseSACPolicy fits SAC, not TD3; TD3 takes 'SparseMlpPolicy'"):
        TD3(SparseSACPolicy, "Pendulum-v1", policy_kwargs={**SMALL})
    with pytest.raises(TypeError, match="cannot act in Discrete"):
        SparseTD3Policy(spaces.Box(-1, 1, (3,)), spaces.Discrete(2), lambda _: 1e-3)


def test_callback_needs_a_sparse_policy():
    model = TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={**SMALL}, learning_starts=10)
    with pytest.raises(TypeError, match="needs a sparse policy"):
        model.learn(20, callback=SparseTrainingCallback())


def test_alias_registered_on_td3_ddpg_sac():
    assert TD3.policy_aliases["SparseMlpPolicy"] is SparseTD3Policy
    assert DDPG.policy_aliases["SparseMlpPolicy"] is SparseTD3Policy
    assert SAC.policy_aliases["SparseMlpPolicy"] is SparseSACPolicy


def test_training_without_callback_warns_once_and_stays_static():
    model = TD3("SparseMlpPolicy", "Pendulum-v1", learning_starts=20, policy_kwargs={**SMALL, "update_interval": 5})
    mask = model.policy.actor.mu[2].weight_mask.clone()
    with pytest.warns(UserWarning, match="SparseTrainingCallback") as record:
        model.learn(120)
    assert sum("SparseTrainingCallback" in str(w.message) for w in record) == 1
    assert (model.policy.actor.mu[2].weight_mask == mask).all()


def test_callback_logs_sparse_keys_to_tensorboard(tmp_path):
    model = SAC("SparseMlpPolicy", "Pendulum-v1", learning_starts=20, policy_kwargs={**SMALL, "update_interval": 10})
    model.set_logger(configure(str(tmp_path), ["tensorboard"]))
    recorded = {}
    original = model.logger.record

    def spy(key, value, exclude=None):
        recorded[key] = value
        original(key, value, exclude)

    model.logger.record = spy
    model.learn(200, callback=SparseTrainingCallback(), progress_bar=True)
    for key in (
        "sparse/sparsity",
        "sparse/actor/sparsity",
        "sparse/critic/sparsity",
        "sparse/actor/latent_pi.2/sparsity",
        "sparse/active_weights",
        "sparse/topology_updates",
        "sparse/changed_fraction",
        "sparse/train_flops",
        "sparse/train_flops_vs_dense",
    ):
        assert key in recorded, key
    assert recorded["sparse/topology_updates"] == model._n_updates // 10 > 0
    assert recorded["sparse/sparsity"] == pytest.approx(sb3_sparse.summary(model)["sparsity"])
    assert 0 < recorded["sparse/train_flops_vs_dense"] < 1
    assert recorded["sparse/train_flops"] == pytest.approx(sb3_sparse.summary(model, model._n_updates)["train_flops"])
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_drop_fraction_cosine_and_end_fraction_freeze_topology():
    model = TD3(
        "SparseMlpPolicy",
        "Pendulum-v1",
        learning_starts=20,
        policy_kwargs={**SMALL, "update_interval": 5, "drop_schedule": "cosine", "end_fraction": 0.5},
    )
    model.learn(300, callback=SparseTrainingCallback())
    controller = model.policy.sparse_controller
    # updates happen every 5 gradient updates until half of the 300 steps, then the topology freezes
    assert 0 < controller.n_topology_updates <= (150 - 20) // 5 + 1
    assert controller.n_topology_updates < model._n_updates // 5


def test_works_without_sb3_contrib():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['sb3_contrib'] = None\n"
        "import sb3_sparse\n"
        "from stable_baselines3 import DQN, TD3\n"
        "assert sb3_sparse.contrib is None\n"
        "m = TD3('SparseMlpPolicy', 'Pendulum-v1', learning_starts=10, policy_kwargs=dict(net_arch=[16, 16]))\n"
        "m.learn(30, callback=sb3_sparse.SparseTrainingCallback())\n"
        "DQN('SparseMlpPolicy', 'CartPole-v1', policy_kwargs=dict(net_arch=[16, 16]))\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
