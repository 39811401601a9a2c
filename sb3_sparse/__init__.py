"""sb3-sparse: dynamic sparse training for Stable-Baselines3's own off-policy algorithms.

Importing this package registers the ``"SparseMlpPolicy"`` alias on TD3, DDPG, SAC and DQN
(``"SparseCnnPolicy"`` too on DQN), and on sb3-contrib's QR-DQN, TQC and CrossQ when installed.
"""

from stable_baselines3 import DQN, SAC, TD3

from .callback import SparseTrainingCallback
from .core.config import PRESETS, SparseConfig
from .denormal import FlushDenormalCallback, flush_denormal
from .exporter import export
from .paper import PaperProtocol, hyperparams_file, hyperparams_names, paper_protocol, paper_setup
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

__all__ = [
    "PRESETS",
    "FlushDenormalCallback",
    "PaperProtocol",
    "SparseConfig",
    "SparseDQNCnnPolicy",
    "SparseDQNPolicy",
    "SparseSACPolicy",
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
