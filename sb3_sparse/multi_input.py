"""Sparse policies for Dict observation spaces (``"SparseMultiInputPolicy"``, SB3's ``MultiInputPolicy`` parity).

As in SB3, a multi-input policy is the algorithm's policy with :class:`CombinedExtractor` as
its default features extractor: vector entries are flattened and concatenated, image entries go
through a NatureCNN each (whose layers are made sparse with the rest of the network). They work
with :class:`stable_baselines3.HerReplayBuffer`.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from stable_baselines3.common.torch_layers import CombinedExtractor
from stable_baselines3.common.type_aliases import Schedule

from .policies import SparseDQNPolicy, SparseSACPolicy, SparseTD3Policy


class SparseMultiInputMixin:
    """:class:`CombinedExtractor` by default, for ``spaces.Dict`` observations."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]


class SparseTD3MultiInputPolicy(SparseMultiInputMixin, SparseTD3Policy):
    """:class:`sb3_sparse.SparseTD3Policy` for Dict observations (TD3 and DDPG)."""


class SparseSACMultiInputPolicy(SparseMultiInputMixin, SparseSACPolicy):
    """:class:`sb3_sparse.SparseSACPolicy` for Dict observations."""


class SparseDQNMultiInputPolicy(SparseMultiInputMixin, SparseDQNPolicy):
    """:class:`sb3_sparse.SparseDQNPolicy` for Dict observations."""
