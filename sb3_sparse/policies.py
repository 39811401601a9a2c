"""Sparse versions of SB3's TD3 and SAC policies: thin subclasses that sparsify what SB3 builds."""

from __future__ import annotations

import difflib
import inspect
import warnings
import weakref
from typing import Any, ClassVar

from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from .algorithms import calling_algorithm, check_algorithm, ensure_zoo_patch
from .core.config import FIELDS, SparseConfig, preset_policy_defaults, resolve_config
from .core.controller import SparseController
from .core.sparse_layer import swap_parameters_, to_sparse_
from .core.sparsify import record_output_positions, sparsify_
from .networks import make_sparse_class_

# Attributes an algorithm reads from its policy, and the policies that have them.
_ALGORITHM_ATTRIBUTES = {
    "actor_target": "TD3/DDPG (SparseTD3Policy)",
    "q_net": "DQN (SparseDQNPolicy)",
    "q_net_target": "DQN (SparseDQNPolicy)",
    "quantile_net": "QR-DQN",
}
SHARED_EXTRACTOR_DENSE = (
    "sb3_sparse: the features extractor shared by actor and critic (share_features_extractor=True) stays dense; "
    "only the actor's and critics' own layers are sparse. Pass share_features_extractor=False for sparse extractors."
)


class SparsePolicyMixin:
    """Shared by the sparse policies: reads the sparse ``policy_kwargs``, sparsifies, installs hooks.

    Subclasses set ``algorithm_family`` (which paper defaults apply) and ``fits`` (the algorithms
    they serve), and call :meth:`_sparse` on each network their factories build.
    """

    algorithm_family: ClassVar[str]
    fits: ClassVar[str]
    class_defaults: ClassVar[dict[str, Any]] = {}  # sparse settings this policy class changes
    paper_network: ClassVar[bool] = False  # a named preset gives the papers' 256-256 net_arch
    sparse_networks: ClassVar[tuple[tuple[str, str | None], ...]]  # (network, its target) attribute names
    # Off-policy actor-critics: actor and critic have their own optimizers and targets, so an
    # extractor shared by both cannot be kept sparse by either (see _sparse).
    shared_extractor_stays_dense: ClassVar[bool] = True
    action_space_type: ClassVar[type[spaces.Space]]
    sparse_config: SparseConfig
    sparse_controller: SparseController

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        check_algorithm(type(self), calling_algorithm())
        ensure_zoo_patch()
        if not isinstance(action_space, self.action_space_type):
            raise TypeError(f"{type(self).__name__} fits {self.fits}; it cannot act in {action_space}")
        check_observation_space(type(self).__name__, observation_space, kwargs)
        preset = kwargs.pop("preset", None)
        sparse = {k: kwargs.pop(k) for k in list(kwargs) if k in FIELDS}
        owner = f"{type(self).__name__} ({self.fits})"
        self.sparse_config = resolve_config(preset, self.algorithm_family, self.class_defaults | sparse, owner)
        self._sparse_kwargs = {"preset": preset, **sparse}
        for key, value in preset_policy_defaults(preset, self.paper_network).items():
            kwargs.setdefault(key, value)
        self._check_kwargs(kwargs)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]

    def _check_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Fail early, with a suggestion, on a misspelt ``policy_kwargs`` key."""
        sb3_policy = next(c for c in type(self).__mro__ if c.__module__.startswith(("stable_baselines3", "sb3_contrib")))
        allowed = list(inspect.signature(sb3_policy.__init__).parameters)[4:]
        for key in kwargs:
            if key not in allowed:
                close = difflib.get_close_matches(key, [*FIELDS, "preset", *allowed], n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise TypeError(f"{type(self).__name__} got an unknown policy_kwargs key {key!r}.{hint}")

    def make_q_net(self):
        return self._sparse(super().make_q_net(), "critic")  # type: ignore[misc]

    def make_quantile_net(self):
        return self._sparse(super().make_quantile_net(), "critic")  # type: ignore[misc]

    def make_actor(self, features_extractor=None):
        return self._sparse(super().make_actor(features_extractor), "actor")  # type: ignore[misc]

    def make_critic(self, features_extractor=None):
        return self._sparse(super().make_critic(features_extractor), "critic")  # type: ignore[misc]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update({k: v for k, v in self._sparse_kwargs.items() if v is not None})
        return data

    def _sparse(self, network: nn.Module, role: str) -> nn.Module:
        """Make ``network`` sparse at the configured sparsity of ``role`` (``"actor"``/``"critic"``).

        A features extractor shared by actor and critic stays dense: one network's optimizer
        trains it while the other reads it, and its target copy follows both, so no network
        could keep it sparse on its own (its layers would be masked and evolved twice).
        """
        shared = self.shared_extractor_stays_dense and getattr(self, "share_features_extractor", False)
        dense = ("features_extractor",) if shared else ()
        if dense and role == "actor" and not getattr(self, "_warned_shared", False):
            self._warned_shared = any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in network.features_extractor.modules())
            if self._warned_shared:  # an extractor without weights (the default) loses nothing
                warnings.warn(SHARED_EXTRACTOR_DENSE, stacklevel=4)
        sparsify_(network, self.sparse_config, self.sparse_config.network_sparsity(role), dense=dense)
        if self.sparse_config.backend == "sparse":
            # The masked network's weights and masks, stored as values at positions; an optimizer
            # SB3 built already (on-policy algorithms) gets the new Parameters in _install_controller.
            self.__dict__.setdefault("_converted", {}).update(to_sparse_(network))
        return make_sparse_class_(network)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        self._install_controller()

    def _install_controller(self) -> None:
        """Create the controller for the ``sparse_networks``; the first one's optimizer steps are the clock."""
        self.sparse_controller = SparseController(self.sparse_config)
        algorithm = calling_algorithm()
        if algorithm is not None:  # a target rule may need tau when a target update starts (read then)
            owner = weakref.ref(algorithm)
            self.sparse_controller.tau_source = lambda: float(owner().tau)  # type: ignore[union-attr]
        example, _ = self.obs_to_tensor(self.observation_space.sample())  # type: ignore[attr-defined]
        for i, (name, target_name) in enumerate(self.sparse_networks):
            online = getattr(self, name)
            target = getattr(self, target_name) if target_name else None
            # Actor-critic networks carry their own optimizer; DQN-style policies have one.
            optimizer = getattr(online, "optimizer", None) or self.optimizer  # type: ignore[attr-defined]
            extractor = getattr(online, "features_extractor", None)
            if extractor is not None and any(isinstance(m, nn.Conv2d) for m in extractor.modules()):
                record_output_positions(extractor, preprocess_obs(example, self.observation_space))
            swap_parameters_(optimizer, self.__dict__.get("_converted", {}))
            self.sparse_controller.add_network(name, online, target, clock=i == 0)
            self.sparse_controller.attach_optimizer(name, optimizer)
        self.__dict__.pop("_converted", None)  # the dense weights it names are gone from the networks
        self.register_state_dict_pre_hook(_before_state_dict)  # type: ignore[attr-defined]
        self.register_load_state_dict_post_hook(_after_load_state_dict)  # type: ignore[attr-defined]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        controller = state.get("_modules", {}).get("sparse_controller")
        if controller is not None:  # a copy: optimizers are copied without their hooks
            controller.reattach()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # type: ignore[misc]
        except AttributeError:
            if name in _ALGORITHM_ATTRIBUTES:
                raise AttributeError(
                    f"{type(self).__name__} fits {self.fits}; this algorithm needs a policy with "
                    f"'{name}', i.e. {_ALGORITHM_ATTRIBUTES[name]}. Pass 'SparseMlpPolicy' and let "
                    "the algorithm pick its own sparse policy."
                ) from None
            raise


def check_observation_space(policy: str, observation_space: spaces.Space, kwargs: dict[str, Any]) -> None:
    """Refuse a Dict observation space with a features extractor that takes one tensor (SB3's check).

    SB3 raises the same error for ``"MlpPolicy"``/``"CnnPolicy"`` on a Dict space; without it
    the policy builds and ``learn`` fails in ``nn.Flatten`` (``'dict' object has no attribute 'flatten'``).
    """
    extractor = kwargs.get("features_extractor_class", FlattenExtractor)
    if isinstance(observation_space, spaces.Dict) and extractor in (FlattenExtractor, NatureCNN):
        raise ValueError(
            f"You must use `SparseMultiInputPolicy` when working with dict observation space, not {policy} "
            f"(with {extractor.__name__}); it is the sparse counterpart of SB3's `MultiInputPolicy`"
        )


def _before_state_dict(policy: SparsePolicyMixin, prefix: str, keep_vars: bool) -> None:
    policy.sparse_controller.refresh_targets()
    policy.sparse_controller.write_state()


def _after_load_state_dict(policy: SparsePolicyMixin, incompatible_keys: Any) -> None:
    policy.sparse_controller.read_state()


class SparseTD3Policy(SparsePolicyMixin, TD3Policy):
    """TD3/DDPG policy with sparse actor and critics.

    Takes every ``TD3Policy`` argument plus, in ``policy_kwargs``, ``preset`` (``"static"``,
    ``"set"``/``"ds-td3"``, ``"tows"``) and the fields of :class:`sb3_sparse.core.SparseConfig`.
    """

    paper_network = True
    algorithm_family = "td3"
    fits = "TD3 and DDPG"
    action_space_type = spaces.Box
    sparse_networks = (("critic", "critic_target"), ("actor", "actor_target"))


class SparseSACPolicy(SparsePolicyMixin, SACPolicy):
    """SAC policy with sparse actor and critics (same ``policy_kwargs`` as :class:`SparseTD3Policy`)."""

    paper_network = True
    algorithm_family = "sac"
    fits = "SAC"
    action_space_type = spaces.Box
    sparse_networks = (("critic", "critic_target"), ("actor", None))


class SparseDQNPolicy(SparsePolicyMixin, DQNPolicy):
    """DQN policy with a sparse Q-network (its sparsity is ``critic_sparsity`` or ``sparsity``).

    The default preset is ``"dqn-rigl"``; see :data:`sb3_sparse.core.config.PRESETS`.
    """

    algorithm_family = "dqn"
    fits = "DQN"
    action_space_type = spaces.Discrete
    sparse_networks = (("q_net", "q_net_target"),)


class SparseCnnMixin:
    """NatureCNN by default, with its convolutions sparse too and sparsity spread by ERK."""

    class_defaults: ClassVar[dict[str, Any]] = {"distribution": "erk"}

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]


class SparseDQNCnnPolicy(SparseCnnMixin, SparseDQNPolicy):
    """:class:`SparseDQNPolicy` with SB3's NatureCNN; convolutions are sparse too, spread by ERK."""
