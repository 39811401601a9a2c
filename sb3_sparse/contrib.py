"""Sparse policies for sb3-contrib's QR-DQN, TQC and CrossQ (imported only when sb3-contrib is installed)."""

from __future__ import annotations

from typing import Any, ClassVar

from gymnasium import spaces
from sb3_contrib import QRDQN, TQC, CrossQ
from sb3_contrib.crossq.policies import CrossQPolicy
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from sb3_contrib.tqc.policies import TQCPolicy
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.type_aliases import Schedule

from .policies import SparsePolicyMixin


class SparseQRDQNPolicy(SparsePolicyMixin, QRDQNPolicy):
    """QR-DQN policy with a sparse quantile network (same settings as :class:`sb3_sparse.SparseDQNPolicy`)."""

    algorithm_family = "dqn"
    fits = "QR-DQN"
    action_space_type = spaces.Discrete

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self._install_controller([("quantile_net", self.quantile_net, self.quantile_net_target, self.optimizer)])


class SparseQRDQNCnnPolicy(SparseQRDQNPolicy):
    """:class:`SparseQRDQNPolicy` with NatureCNN; convolutions are sparse, spread by ERK."""

    class_defaults: ClassVar[dict[str, Any]] = {"distribution": "erk"}

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class SparseTQCPolicy(SparsePolicyMixin, TQCPolicy):
    """TQC policy with sparse actor and quantile critics (SAC's defaults: eta 0.1)."""

    algorithm_family = "sac"
    fits = "TQC"
    action_space_type = spaces.Box

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self._install_controller(
            [
                ("critic", self.critic, self.critic_target, self.critic.optimizer),
                ("actor", self.actor, None, self.actor.optimizer),
            ]
        )


class SparseCrossQPolicy(SparsePolicyMixin, CrossQPolicy):
    """CrossQ policy with sparse actor and critics; its BatchRenorm layers stay dense. CrossQ has no targets."""

    algorithm_family = "sac"
    fits = "CrossQ"
    action_space_type = spaces.Box

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self._install_controller(
            [("critic", self.critic, None, self.critic.optimizer), ("actor", self.actor, None, self.actor.optimizer)]
        )


QRDQN.policy_aliases["SparseMlpPolicy"] = SparseQRDQNPolicy
QRDQN.policy_aliases["SparseCnnPolicy"] = SparseQRDQNCnnPolicy
TQC.policy_aliases["SparseMlpPolicy"] = SparseTQCPolicy
CrossQ.policy_aliases["SparseMlpPolicy"] = SparseCrossQPolicy
