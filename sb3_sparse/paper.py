"""The papers' setups, read from the hyperparameter files that ship with the package.

The YAML files in ``sb3_sparse/hyperparams`` are rl-zoo3 configuration files (``-conf``) and the
single source of the papers' values: :func:`paper_setup` reads the same entry the zoo would and
turns it into an algorithm's constructor arguments, so the two cannot drift::

    model = TD3(**sb3_sparse.paper_setup("ds-td3", "HalfCheetah-v5"))
    protocol = sb3_sparse.paper_protocol("ds-td3", "HalfCheetah-v5")
    model.learn(protocol.n_timesteps, callback=protocol.callbacks())

and :func:`hyperparams_file` gives the installed path of a file for ``rl_zoo3.train -conf``.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

__all__ = [
    "PAPER_FILES",
    "PaperProtocol",
    "hyperparams_file",
    "hyperparams_names",
    "paper_protocol",
    "paper_setup",
]

HYPERPARAMS_DIR = Path(__file__).parent / "hyperparams"

# Preset name -> the file holding that paper's setup (any file name is accepted as well).
PAPER_FILES = {
    "ds-td3": "ds_td3",
    "ds-sac": "ds_sac",
    "static": "static_td3",
    "tows": "tows90_td3",
    "dqn-rigl": "rigl_dqn",
    "dqn-rigl-nobias": "rigl_nobias_dqn",
    "dqn-set": "set_dqn",
    "dqn-gmp": "gmp_dqn",
}
# File-name suffix -> (module, algorithm class).
_ALGORITHMS = {
    "td3": ("stable_baselines3", "TD3"),
    "ddpg": ("stable_baselines3", "DDPG"),
    "sac": ("stable_baselines3", "SAC"),
    "dqn": ("stable_baselines3", "DQN"),
    "tqc": ("sb3_contrib", "TQC"),
    "qrdqn": ("sb3_contrib", "QRDQN"),
    "crossq": ("sb3_contrib", "CrossQ"),
    "ppo": ("stable_baselines3", "PPO"),
    "a2c": ("stable_baselines3", "A2C"),
}
# Keys rl-zoo3 consumes itself (not the algorithm's constructor): they go to PaperProtocol.
_RUN_KEYS = ("n_timesteps", "callback")
_ENV_KEYS = ("n_envs", "env_wrapper", "frame_stack", "normalize", "vec_env_wrapper", "env_kwargs")
_NOISE_KEYS = ("noise_type", "noise_std")
# Names available to ``policy_kwargs`` strings, as in rl-zoo3's exp_manager (``nn``, ``th``, ``np``).
_EVAL_NAMESPACE = {"nn": nn, "th": torch, "torch": torch, "np": np}


def read_policy_kwargs(value: str | dict[str, Any] | None) -> dict[str, Any]:
    """A file's ``policy_kwargs`` as rl-zoo3 reads it: a string is evaluated with ``nn``, ``th``, ``np``.

    :param value: the entry's ``policy_kwargs`` (a dict, a Python expression, or ``None``).
    """
    if isinstance(value, str):
        return eval(value, dict(_EVAL_NAMESPACE))
    return dict(value or {})


def hyperparams_names() -> list[str]:
    """The names of the shipped hyperparameter files (``"ds_td3"``, ``"rigl_dqn"``, ...), sorted."""
    return sorted(p.stem for p in HYPERPARAMS_DIR.glob("*.yml"))


def hyperparams_file(name: str) -> Path:
    """The installed path of a hyperparameter file, for ``python -m rl_zoo3.train -conf PATH``.

    :param name: a file name with or without ``.yml`` (``"ds_td3"``) or a preset named in
        :data:`PAPER_FILES` (``"ds-td3"``, ``"tows"``, ...).
    :return: the absolute path of the YAML file inside the installed package.
    """
    stem = PAPER_FILES.get(name, name.removesuffix(".yml"))
    path = HYPERPARAMS_DIR / f"{stem}.yml"
    if not path.is_file():
        names = [*hyperparams_names(), *PAPER_FILES]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"No hyperparameter file {name!r}.{hint} Available: {names}")
    return path


@dataclass(frozen=True)
class PaperProtocol:
    """What a paper's run needs besides the constructor arguments of :func:`paper_setup`.

    The evaluation protocol is Sokar et al.'s (DS-TD3), used for every file: evaluate the
    deterministic policy every ``eval_freq`` environment steps over ``n_eval_episodes`` episodes;
    the final score is the mean of the last ``final_evaluations`` evaluations.

    :param name: the preset or file name asked for.
    :param env_id: the environment.
    :param file: the YAML file the values come from.
    :param entry: the file's entry used for ``env_id`` (``"atari"`` for every Atari game).
    :param algo: the algorithm class (``TD3``, ``SAC``, ``DQN``, ...).
    :param n_timesteps: environment steps of a run.
    :param callback: the file's ``callback`` entries (dotted names, or ``{name: kwargs}``).
    :param env_options: the file's environment keys that rl-zoo3 applies (``env_wrapper``,
        ``frame_stack``, ``n_envs``, ...); :meth:`make_env` (and so :func:`paper_setup`) applies them.
    """

    name: str
    env_id: str
    file: Path
    entry: str
    algo: type
    n_timesteps: int
    callback: tuple[Any, ...] = ()
    env_options: dict[str, Any] = field(default_factory=dict)
    eval_freq: int = 5000
    n_eval_episodes: int = 10
    final_evaluations: int = 10

    def callbacks(self) -> list[BaseCallback]:
        """Fresh instances of the file's callbacks, in order (what rl-zoo3 passes to ``learn``)."""
        made = []
        for item in self.callback:
            name, kwargs = next(iter(item.items())) if isinstance(item, dict) else (item, {})
            made.append(_import(name)(**(kwargs or {})))
        return made

    def make_env(self, seed: int | None = None) -> Any:
        """The training environment as rl-zoo3 builds it for this entry (``n_envs``, wrappers, frame stack).

        :param seed: the environments' seed.
        :return: a ``VecEnv``, or the environment id when the entry needs no wrapping.
        """
        options = self.env_options
        if not options:
            return self.env_id
        unsupported = sorted(set(options) - {"n_envs", "env_wrapper", "frame_stack", "env_kwargs"})
        if unsupported:  # no shipped file uses them; rl_zoo3.train runs such entries
            raise NotImplementedError(f"{self.file.name}: {unsupported} are applied by rl_zoo3.train only")
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecFrameStack

        wrapper = options.get("env_wrapper") or []
        wrappers = [_import(w) for w in (wrapper if isinstance(wrapper, list) else [wrapper])]

        def wrap(env: gym.Env) -> gym.Env:
            for w in wrappers:
                env = w(env)
            return env

        env = make_vec_env(
            self.env_id, n_envs=options.get("n_envs", 1), seed=seed, wrapper_class=wrap, env_kwargs=options.get("env_kwargs")
        )
        if options.get("frame_stack"):
            env = VecFrameStack(env, options["frame_stack"])  # SB3 adds VecTransposeImage itself
        return env


def paper_protocol(name: str, env_id: str) -> PaperProtocol:
    """The run settings of a paper's setup that are not constructor arguments.

    :param name: a preset (``"ds-td3"``, ``"ds-sac"``, ``"static"``, ``"tows"``, ``"dqn-rigl"``,
        ...) or any hyperparameter file name (``"tows70_sac"``, ``"dense_td3"``, ...).
    :param env_id: the environment, as in the file (``"HalfCheetah-v5"``; any Atari game for the
        DQN files' ``atari`` entry).
    :return: the algorithm, ``n_timesteps``, callbacks, environment options and evaluation protocol.
    """
    path = hyperparams_file(name)
    entries = _read_yaml(path)
    if env_id in entries:
        entry = env_id
    elif "atari" in entries and _is_atari(env_id):
        entry = "atari"
    else:
        raise ValueError(f"{path.name} has no entry for {env_id!r}; it has {sorted(entries)}")
    values = entries[entry]
    callback = values.get("callback") or ()
    module, cls = _ALGORITHMS[path.stem.rsplit("_", 1)[-1]]
    return PaperProtocol(
        name=name,
        env_id=env_id,
        file=path,
        entry=entry,
        algo=getattr(importlib.import_module(module), cls),
        n_timesteps=int(values["n_timesteps"]),
        callback=tuple(callback if isinstance(callback, list) else [callback]),
        env_options={k: values[k] for k in _ENV_KEYS if k in values},
    )


def paper_setup(name: str, env_id: str, **overrides: Any) -> dict[str, Any]:
    """The constructor arguments of a paper's whole algorithm setup for an environment.

    Reads the entry of the shipped YAML file that ``rl_zoo3.train -conf`` would read and converts
    it as rl-zoo3 does: the ``policy`` dotted path is imported, a ``policy_kwargs`` string is
    evaluated (with ``nn``, ``th`` and ``np`` in scope), ``noise_type``/``noise_std`` become an
    ``action_noise`` object, ``lin_X`` learning rates a linear schedule. The keys the zoo consumes
    itself (``n_timesteps``, ``callback``, environment wrappers) are in :func:`paper_protocol`;
    when the entry has environment wrappers (Atari), ``env`` is the wrapped ``VecEnv``.

    Example: ``TD3(**paper_setup("ds-td3", "HalfCheetah-v5"))`` is Sokar et al.'s DS-TD3 (λ = (7,
    64) on 256-256 networks, batch 100, lr 1e-3, weight decay 2e-4, N(0, 0.1) exploration noise,
    25,000 random steps).

    :param name: a preset (``"ds-td3"``, ``"ds-sac"``, ``"static"``, ``"tows"``, ``"dqn-rigl"``,
        ``"dqn-rigl-nobias"``, ``"dqn-gmp"``) or a hyperparameter file name (``"tows70_sac"``).
    :param env_id: the environment (see :func:`paper_protocol`).
    :param overrides: constructor arguments that replace the file's (``seed``, ``buffer_size``,
        ``verbose``, ...); a ``policy_kwargs`` dict is merged into the file's.
    :return: keyword arguments for the algorithm (``policy`` and ``env`` included).
    """
    protocol = paper_protocol(name, env_id)
    values = dict(_read_yaml(protocol.file)[protocol.entry])
    for key in (*_RUN_KEYS, *_ENV_KEYS):
        values.pop(key, None)
    policy = values.pop("policy")
    env = overrides.pop("env", None) or protocol.make_env(seed=overrides.get("seed"))
    kwargs: dict[str, Any] = {"policy": _import(policy) if "." in policy else policy, "env": env}
    policy_kwargs = read_policy_kwargs(values.pop("policy_kwargs", None))
    noise = {key: values.pop(key) for key in _NOISE_KEYS if key in values}
    if isinstance(values.get("learning_rate"), str):
        start = float(values["learning_rate"].split("_")[1])  # rl-zoo3's "lin_X": X * progress remaining
        values["learning_rate"] = LinearSchedule(start, 0.0, 1.0)
    if isinstance(values.get("train_freq"), list):
        values["train_freq"] = tuple(values["train_freq"])
    kwargs |= values
    if noise.get("noise_type"):
        kwargs["action_noise"] = _action_noise(noise["noise_type"], noise["noise_std"], env_id)
    policy_kwargs = {**policy_kwargs, **overrides.pop("policy_kwargs", {})}
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    return kwargs | overrides


def _action_noise(noise_type: str, noise_std: float, env_id: str) -> NormalActionNoise | OrnsteinUhlenbeckActionNoise:
    env = gym.make(env_id)
    n_actions = env.action_space.shape[0]
    env.close()
    mean, sigma = np.zeros(n_actions), noise_std * np.ones(n_actions)
    if "normal" in noise_type:
        return NormalActionNoise(mean=mean, sigma=sigma)
    if "ornstein-uhlenbeck" in noise_type:
        return OrnsteinUhlenbeckActionNoise(mean=mean, sigma=sigma)
    raise ValueError(f"Unknown noise_type={noise_type!r}; allowed: 'normal', 'ornstein-uhlenbeck'")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # PyYAML: imported here so that importing sb3_sparse stays light

    with open(path) as f:
        return yaml.safe_load(f)


def _import(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _is_atari(env_id: str) -> bool:
    try:
        return "AtariEnv" in str(gym.spec(env_id).entry_point)
    except gym.error.Error:
        try:
            import ale_py

            gym.register_envs(ale_py)
            return "AtariEnv" in str(gym.spec(env_id).entry_point)
        except (ImportError, gym.error.Error):
            return False
