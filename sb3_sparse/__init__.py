"""sb3-sparse: dynamic sparse training for Stable-Baselines3's own off-policy algorithms.

Importing this package registers the ``"SparseMlpPolicy"`` alias on TD3, DDPG and SAC.
"""

from stable_baselines3 import SAC, TD3

from .callback import SparseTrainingCallback
from .core.config import PRESETS, SparseConfig
from .policies import SparseSACPolicy, SparseTD3Policy
from .summary import summary

__version__ = "0.1.0"

TD3.policy_aliases["SparseMlpPolicy"] = SparseTD3Policy  # DDPG shares TD3's alias table
SAC.policy_aliases["SparseMlpPolicy"] = SparseSACPolicy

__all__ = [
    "PRESETS",
    "SparseConfig",
    "SparseSACPolicy",
    "SparseTD3Policy",
    "SparseTrainingCallback",
    "summary",
]
