"""Sparse policies for SB3's on-policy algorithms, PPO and A2C (Graesser et al. 2022 also train PPO sparse).

SB3's :class:`ActorCriticPolicy` builds everything in ``_build`` (no network factories) and
trains it with one optimizer. The sparse policy sees it as two networks: the ``"actor"`` (the
policy latent network of ``mlp_extractor`` and ``action_net``) and the ``"critic"`` (the value
latent network and ``value_net``); the features extractor belongs to the actor (when shared, its
connections serve both). Both networks hook the same optimizer and there are no targets. The
clock is the number of optimizer steps (PPO's ``_n_updates`` counts epochs); see
docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from .multi_input import SparseMultiInputMixin
from .policies import SparseCnnMixin, SparsePolicyMixin


class SparseActorCriticPolicy(SparsePolicyMixin, ActorCriticPolicy):
    """PPO/A2C policy with sparse actor and critic (every ``ActorCriticPolicy`` argument plus the sparse ``policy_kwargs``).

    The default preset is ``"ppo-rigl"`` (Graesser et al.'s PPO MuJoCo configuration); see
    :data:`sb3_sparse.core.config.PRESETS`. Sparse layers keep SB3's orthogonal initialization
    times the mask unless ``init="sparse"``.
    """

    algorithm_family = "ppo"
    fits = "PPO and A2C"
    action_space_type = spaces.Space
    sparse_networks = (("actor", None), ("critic", None))
    shared_extractor_stays_dense = False  # one optimizer, no targets: the actor's view owns a shared extractor

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("preset", "ppo-rigl")
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    @property
    def actor(self) -> nn.Module:
        """The actor's layers as one module (a view: its layers live in ``mlp_extractor`` and ``action_net``)."""
        return self._views["actor"]

    @property
    def critic(self) -> nn.Module:
        """The critic's layers as one module (``mlp_extractor.value_net`` and ``value_net``)."""
        return self._views["critic"]

    def _install_controller(self) -> None:
        """Sparsify the actor and the critic (after SB3's orthogonal init), then hook the optimizer.

        The masked layers reuse the dense layers' parameters, so the optimizer SB3 created stays valid.
        """
        shared = self.share_features_extractor
        actor = {"features_extractor": self.pi_features_extractor, "latent_pi": self.mlp_extractor.policy_net}
        critic = {} if shared else {"features_extractor": self.vf_features_extractor}
        critic["latent_vf"] = self.mlp_extractor.value_net
        # Plain dict attribute: the views are not submodules, so the state_dict has no duplicates.
        self._views = {
            "actor": nn.ModuleDict(actor | {"action_net": self.action_net}),
            "critic": nn.ModuleDict(critic | {"value_net": self.value_net}),
        }
        for role, view in self._views.items():
            self._sparse(view, role)
        # Output layers are direct children of the views: put the (possibly) masked ones back.
        self.action_net = self._views["actor"]["action_net"]
        self.value_net = self._views["critic"]["value_net"]
        super()._install_controller()


class SparseActorCriticCnnPolicy(SparseCnnMixin, SparseActorCriticPolicy):
    """:class:`SparseActorCriticPolicy` with SB3's NatureCNN; convolutions are sparse too, spread by ERK."""


class SparseActorCriticMultiInputPolicy(SparseMultiInputMixin, SparseActorCriticPolicy):
    """:class:`SparseActorCriticPolicy` for Dict observations (``CombinedExtractor``)."""


for _algo in (PPO, A2C):
    _algo.policy_aliases["SparseMlpPolicy"] = SparseActorCriticPolicy
    _algo.policy_aliases["SparseCnnPolicy"] = SparseActorCriticCnnPolicy
    _algo.policy_aliases["SparseMultiInputPolicy"] = SparseActorCriticMultiInputPolicy
