"""sb3-sparse: dynamic sparse training for Stable-Baselines3's own off-policy algorithms.

Importing this package registers the ``"SparseMlpPolicy"`` alias on TD3, DDPG, SAC and DQN
(``"SparseCnnPolicy"`` too on DQN), and on sb3-contrib's QR-DQN, TQC and CrossQ when installed;
``"SparseMultiInputPolicy"`` (Dict observations) on all of them but CrossQ; and
``"SparseMlpPolicy"``, ``"SparseCnnPolicy"`` and ``"SparseMultiInputPolicy"`` on PPO and A2C.
"""

import sys

from stable_baselines3 import DQN, SAC, TD3

from .callback import SparseTrainingCallback
from .core.config import PRESETS, SparseConfig
from .denormal import FlushDenormalCallback, flush_denormal
from .exporter import export
from .multi_input import SparseDQNMultiInputPolicy, SparseSACMultiInputPolicy, SparseTD3MultiInputPolicy
from .on_policy import SparseActorCriticCnnPolicy, SparseActorCriticMultiInputPolicy, SparseActorCriticPolicy
from .paper import PaperProtocol, hyperparams_file, hyperparams_names, paper_protocol, paper_setup
from .policies import SparseDQNCnnPolicy, SparseDQNPolicy, SparseSACPolicy, SparseTD3Policy
from .summary import summary

__version__ = "0.1.0"

TD3.policy_aliases["SparseMlpPolicy"] = SparseTD3Policy  # DDPG shares TD3's alias table
SAC.policy_aliases["SparseMlpPolicy"] = SparseSACPolicy
DQN.policy_aliases["SparseMlpPolicy"] = SparseDQNPolicy
DQN.policy_aliases["SparseCnnPolicy"] = SparseDQNCnnPolicy
TD3.policy_aliases["SparseMultiInputPolicy"] = SparseTD3MultiInputPolicy
SAC.policy_aliases["SparseMultiInputPolicy"] = SparseSACMultiInputPolicy
DQN.policy_aliases["SparseMultiInputPolicy"] = SparseDQNMultiInputPolicy

try:  # sb3-contrib is optional
    from . import contrib  # registers the aliases on QR-DQN, TQC and CrossQ
except ImportError:  # pragma: no cover - depends on the environment
    contrib = None

if "rl_zoo3" in sys.modules:  # imported by rl-zoo3 (a file naming sb3_sparse.SparseTD3Policy, --gym-packages sb3_sparse)
    # Without the patch, -optimize would replace the file's sparse policy_kwargs by dense samples.
    from . import zoo  # noqa: F401

__all__ = [
    "PRESETS",
    "FlushDenormalCallback",
    "PaperProtocol",
    "SparseActorCriticCnnPolicy",
    "SparseActorCriticMultiInputPolicy",
    "SparseActorCriticPolicy",
    "SparseConfig",
    "SparseDQNCnnPolicy",
    "SparseDQNMultiInputPolicy",
    "SparseDQNPolicy",
    "SparseSACMultiInputPolicy",
    "SparseSACPolicy",
    "SparseTD3MultiInputPolicy",
    "SparseTD3Policy",
    "SparseTrainingCallback",
    "export",
    "flush_denormal",
    "hyperparams_file",
    "hyperparams_names",
    "paper_protocol",
    "paper_setup",
    "summary",
]
