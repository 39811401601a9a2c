"""sb3-sparse: dynamic sparse training for Stable-Baselines3's own off-policy algorithms.

Importing this package registers the ``"SparseMlpPolicy"`` alias on TD3, DDPG, SAC and DQN
(``"SparseCnnPolicy"`` too on DQN), and on sb3-contrib's QR-DQN, TQC and CrossQ when installed.
"""

import sys

from stable_baselines3 import DQN, SAC, TD3

from .callback import SparseTrainingCallback
from .core.config import PRESETS, SparseConfig
from .denormal import FlushDenormalCallback, flush_denormal
from .policies import SparseDQNCnnPolicy, SparseDQNPolicy, SparseSACPolicy, SparseTD3Policy
from .summary import summary

__version__ = "0.1.0"

TD3.policy_aliases["SparseMlpPolicy"] = SparseTD3Policy  # DDPG shares TD3's alias table
SAC.policy_aliases["SparseMlpPolicy"] = SparseSACPolicy
DQN.policy_aliases["SparseMlpPolicy"] = SparseDQNPolicy
DQN.policy_aliases["SparseCnnPolicy"] = SparseDQNCnnPolicy

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
    "SparseConfig",
    "SparseDQNCnnPolicy",
    "SparseDQNPolicy",
    "SparseSACPolicy",
    "SparseTD3Policy",
    "SparseTrainingCallback",
    "flush_denormal",
    "summary",
]
