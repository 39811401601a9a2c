"""Sparse policies for sb3-contrib's QR-DQN, TQC and CrossQ (imported only when sb3-contrib is installed)."""

from __future__ import annotations

from gymnasium import spaces
from sb3_contrib import QRDQN, TQC, CrossQ
from sb3_contrib.crossq.policies import CrossQPolicy
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from sb3_contrib.tqc.policies import TQCPolicy

from .multi_input import SparseMultiInputMixin
from .policies import SparseCnnMixin, SparsePolicyMixin


class SparseQRDQNPolicy(SparsePolicyMixin, QRDQNPolicy):
    """QR-DQN policy with a sparse quantile network (same settings as :class:`sb3_sparse.SparseDQNPolicy`)."""

    algorithm_family = "dqn"
    fits = "QR-DQN"
    action_space_type = spaces.Discrete
    sparse_networks = (("quantile_net", "quantile_net_target"),)


class SparseQRDQNCnnPolicy(SparseCnnMixin, SparseQRDQNPolicy):
    """:class:`SparseQRDQNPolicy` with NatureCNN; convolutions are sparse, spread by ERK."""


class SparseQRDQNMultiInputPolicy(SparseMultiInputMixin, SparseQRDQNPolicy):
    """:class:`SparseQRDQNPolicy` for Dict observations."""


class SparseTQCPolicy(SparsePolicyMixin, TQCPolicy):
    """TQC policy with sparse actor and quantile critics (SAC's defaults: eta 0.1)."""

    paper_network = True
    algorithm_family = "sac"
    fits = "TQC"
    action_space_type = spaces.Box
    sparse_networks = (("critic", "critic_target"), ("actor", None))


class SparseTQCMultiInputPolicy(SparseMultiInputMixin, SparseTQCPolicy):
    """:class:`SparseTQCPolicy` for Dict observations."""


class SparseCrossQPolicy(SparsePolicyMixin, CrossQPolicy):
    """CrossQ policy with sparse actor and critics; its BatchRenorm layers stay dense. CrossQ has no targets."""

    algorithm_family = "sac"
    fits = "CrossQ"
    action_space_type = spaces.Box
    sparse_networks = (("critic", None), ("actor", None))


QRDQN.policy_aliases["SparseMlpPolicy"] = SparseQRDQNPolicy
QRDQN.policy_aliases["SparseCnnPolicy"] = SparseQRDQNCnnPolicy
TQC.policy_aliases["SparseMlpPolicy"] = SparseTQCPolicy
# CrossQ has no MultiInputPolicy in sb3-contrib 2.9, so no "SparseMultiInputPolicy" either.
QRDQN.policy_aliases["SparseMultiInputPolicy"] = SparseQRDQNMultiInputPolicy
TQC.policy_aliases["SparseMultiInputPolicy"] = SparseTQCMultiInputPolicy
CrossQ.policy_aliases["SparseMlpPolicy"] = SparseCrossQPolicy
