"""The denormal switch: on while learn runs, restored after, for sparse and dense models."""

import pytest
import torch
from stable_baselines3 import TD3
from stable_baselines3.common.callbacks import BaseCallback

from sb3_sparse import FlushDenormalCallback, SparseTrainingCallback, flush_denormal
from sb3_sparse.denormal import flush_denormal_enabled


class Probe(BaseCallback):
    """Records whether denormals were flushed at each environment step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[bool] = set()

    def _on_step(self) -> bool:
        self.seen.add(flush_denormal_enabled())
        return True


@pytest.fixture(autouse=True)
def _unflushed():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_probe_reads_the_cpu_flag():
    assert not flush_denormal_enabled()
    torch.set_flush_denormal(True)
    assert flush_denormal_enabled()


def test_context_manager_restores_the_previous_state():
    with flush_denormal():
        assert flush_denormal_enabled()
        with flush_denormal(False):
            assert not flush_denormal_enabled()
        assert flush_denormal_enabled()
    assert not flush_denormal_enabled()
    torch.set_flush_denormal(True)
    with flush_denormal():
        pass
    assert flush_denormal_enabled()  # it was on before: still on


def test_context_manager_warns_when_other_threads_would_keep_denormals():
    torch.set_num_threads(2)
    with pytest.warns(UserWarning, match="calling thread only"), flush_denormal():
        pass


def _learn(policy: str, *callbacks: BaseCallback) -> set[bool]:
    probe = Probe()
    kwargs = dict(policy_kwargs=dict(net_arch=[16, 16], sparsity=0.5)) if policy != "MlpPolicy" else {}
    model = TD3(policy, "Pendulum-v1", learning_starts=50, batch_size=16, seed=0, **kwargs)
    model.learn(120, callback=[*callbacks, probe])
    return probe.seen


@pytest.mark.parametrize("flush", [True, False])
def test_sparse_callback_flushes_during_learn_only(flush):
    assert _learn("SparseMlpPolicy", SparseTrainingCallback(flush_denormal=flush)) == {flush}
    assert not flush_denormal_enabled()


def test_sparse_callback_flushes_by_default():
    assert _learn("SparseMlpPolicy", SparseTrainingCallback()) == {True}


def test_dense_callback_flushes_during_learn_only():
    assert _learn("MlpPolicy", FlushDenormalCallback()) == {True}
    assert not flush_denormal_enabled()
    assert _learn("MlpPolicy", FlushDenormalCallback(enabled=False)) == {False}
