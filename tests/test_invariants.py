"""The invariants on SB3's own TD3, DDPG and SAC, checked after every optimizer step and before
every target forward, on both backends, with a negative control (masked backend: a truly sparse
layer has no absent weights to keep at zero)."""

import pytest
from invariants import InvariantProbe, check_online, check_target
from stable_baselines3 import DDPG, DQN, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env

from sb3_sparse import SparseTrainingCallback

ALGOS = {"td3": TD3, "ddpg": DDPG, "sac": SAC}
FAST = dict(net_arch=[64, 64], update_interval=25, drop_fraction=0.3)


def make(algo, env="Pendulum-v1", n_envs=1, **policy_kwargs):
    env = make_vec_env(env, n_envs=n_envs, seed=0)
    kwargs = {"learning_starts": 64, "batch_size": 32, "seed": 0}
    return ALGOS[algo]("SparseMlpPolicy", env, policy_kwargs={**FAST, **policy_kwargs}, **kwargs)


def train_checked(model, steps, **learn_kwargs):
    probe = InvariantProbe(model.policy.sparse_controller)
    model.learn(steps, callback=SparseTrainingCallback(), **learn_kwargs)
    probe.remove()
    return probe


# The sparse backend on every algorithm and preset would double the time for little: each
# preset on one algorithm, TowS on each algorithm.
CASES = [(algo, preset, "masked") for algo in ("td3", "ddpg", "sac") for preset in ("static", "set", "tows")]
CASES += [("td3", "static", "sparse"), ("td3", "set", "sparse"), ("ddpg", "tows", "sparse"), ("sac", "tows", "sparse")]


@pytest.mark.parametrize("algo, preset, backend", CASES)
def test_invariants_hold_at_every_step(algo, preset, backend):
    model = make(algo, preset=preset, sparsity=0.8, backend=backend)
    probe = train_checked(model, 400)
    controller = model.policy.sparse_controller
    assert probe.steps > 300 and probe.target_forwards > 300
    if preset == "static":
        assert controller.n_topology_updates == 0
    else:
        assert controller.n_topology_updates == model._n_updates // 25 > 5


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_online_mask_target_rule(algo, backend):
    model = make(algo, preset="set", target_sparsity="online_mask", backend=backend)
    train_checked(model, 300)
    net = model.policy.sparse_controller.networks["critic"]
    model.policy.sparse_controller.refresh_targets()
    for target, online in zip(net.target_layers, net.layers, strict=False):
        # after a target update, the target's support is the online support
        assert ((target.to_dense_weight() != 0) & (online.dense_mask() == 0)).sum() == 0


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize("algo", ["td3", "sac"])
def test_invariants_with_several_gradient_steps_envs_and_delay(algo, backend):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    extra = {"policy_delay": 3} if algo == "td3" else {"target_update_interval": 2}
    model = ALGOS[algo](
        "SparseMlpPolicy",
        env,
        learning_starts=64,
        batch_size=32,
        train_freq=4,
        gradient_steps=6,
        seed=0,
        policy_kwargs={**FAST, "preset": "tows", "update_interval": 7, "backend": backend},
        **extra,
    )
    probe = train_checked(model, 400)
    assert probe.steps > 200
    controller = model.policy.sparse_controller
    # Topology updates happen inside train() at exactly every 7th update, not once per train() call.
    assert controller.n_topology_updates == model._n_updates // 7
    assert controller.networks["critic"].epoch == model._n_updates // 7


@pytest.mark.parametrize("algo", ["td3", "sac", "dqn"])
def test_negative_control_checks_fail_without_hooks(algo):
    if algo == "dqn":
        model = DQN("SparseMlpPolicy", "CartPole-v1", learning_starts=64, train_freq=1, target_update_interval=10,
                    policy_kwargs={**FAST, "preset": "dqn-rigl", "mask_optimizer_moments": True})  # fmt: skip
    else:
        model = make(algo, preset="tows")
    model.policy.sparse_controller.detach()
    model.learn(300, callback=None)
    controller = model.policy.sparse_controller
    with pytest.raises(AssertionError, match="absent weights are not zero"):
        check_online(controller)
    with pytest.raises(AssertionError, match="weights outside the target support"):
        check_target(controller, "q_net" if algo == "dqn" else "critic")


def test_callback_refuses_missing_hooks():
    model = make("td3", preset="set")
    model.policy.sparse_controller.detach()
    with pytest.raises(RuntimeError, match="hooks are not installed"):
        model.learn(10, callback=SparseTrainingCallback())
