"""Run an agent exported with ``sb3_sparse.export(model, path, format="compact")``: NumPy alone.

This file imports nothing but NumPy and the standard library, so it can be copied anywhere
(``export`` writes a copy next to the ``.npz`` file)::

    from compact_loader import load_compact
    policy = load_compact("agent.npz")
    action = policy.predict(observation)  # what model.predict(observation, deterministic=True)[0] gives

The ``.npz`` file holds, for each linear layer, the active weights (``values``, float32), their
flat row-major positions in the ``(out, in)`` weight matrix (``indices``, int32) and the bias,
plus a JSON ``meta`` entry: the layers, activations and (CrossQ's) normalisations folded into a
per-feature ``affine`` map, in order, and how the output becomes an
action (``box``: SB3's rescaling of a tanh output to the action bounds, or clipping;
``argmax``: DQN; ``quantile_argmax``: QR-DQN, the mean over quantiles). The weight matrices
are rebuilt densely once, at load time.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

FORMAT = "sb3-sparse-compact"
VERSION = 1

ACTIVATIONS = {
    "relu": lambda x, p: np.maximum(x, 0.0),
    "leaky_relu": lambda x, p: np.where(x >= 0.0, x, x * p["negative_slope"]),
    "tanh": lambda x, p: np.tanh(x),
    "elu": lambda x, p: np.where(x > 0.0, x, p["alpha"] * np.expm1(np.minimum(x, 0.0))),
    "sigmoid": lambda x, p: 1.0 / (1.0 + np.exp(-x)),
    "silu": lambda x, p: x / (1.0 + np.exp(-x)),
}


class CompactPolicy:
    """The deterministic policy of an exported agent.

    :param meta: the file's metadata (see the module docstring).
    :param arrays: the file's arrays by name.
    """

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} file: {meta.get('format')} v{meta.get('version')}")
        self.meta = meta
        self.observation_shape = tuple(meta["observation_shape"])
        self.layers: list[tuple[str, Any]] = []
        for op in meta["layers"]:
            if op["op"] == "linear":
                key = op["key"]
                weight = np.zeros(op["out"] * op["in"], dtype=np.float32)
                weight[arrays[f"{key}.indices"]] = arrays[f"{key}.values"]
                bias = arrays.get(f"{key}.bias")
                self.layers.append(("linear", (weight.reshape(op["out"], op["in"]).T.copy(), bias)))
            elif op["op"] == "affine":  # a normalisation layer with its running statistics folded in
                self.layers.append(("affine", (arrays[f"{op['key']}.scale"], arrays[f"{op['key']}.shift"])))
            elif op["op"] in ACTIVATIONS:
                self.layers.append((op["op"], op))
            else:
                raise ValueError(f"unknown operation {op['op']!r}")

    def forward(self, observation: np.ndarray) -> np.ndarray:
        """The network's output for a batch of observations (shape ``(n, *observation_shape)``)."""
        x = np.asarray(observation, dtype=np.float32).reshape(len(observation), -1)
        for op, params in self.layers:
            if op == "linear":
                weight_t, bias = params
                x = x @ weight_t
                if bias is not None:
                    x = x + bias
            elif op == "affine":
                scale, shift = params
                x = x * scale + shift
            else:
                x = ACTIVATIONS[op](x, params).astype(np.float32, copy=False)
        return x

    def predict(self, observation: np.ndarray) -> np.ndarray:
        """The deterministic action for one observation or a batch (like SB3's ``predict``).

        :param observation: shape ``observation_shape`` or ``(n, *observation_shape)``.
        :return: one action, or one per observation.
        """
        observation = np.asarray(observation, dtype=np.float32)
        single = observation.shape == self.observation_shape
        out = self.forward(observation[None] if single else observation)
        head = self.meta["head"]
        if head["type"] == "box":
            low, high = np.asarray(head["low"], dtype=np.float32), np.asarray(head["high"], dtype=np.float32)
            if head["squash"]:
                action = low + 0.5 * (out + 1.0) * (high - low)
            else:
                action = np.clip(out, low, high)
            action = action.reshape(len(out), *head["shape"])
        elif head["type"] == "argmax":
            action = out.argmax(axis=1)
        elif head["type"] == "quantile_argmax":
            action = out.reshape(len(out), head["n_quantiles"], head["n_actions"]).mean(axis=1).argmax(axis=1)
        else:
            raise ValueError(f"unknown head {head['type']!r}")
        return action[0] if single else action


def load_compact(path: str) -> CompactPolicy:
    """Load an exported ``.npz`` file.

    :param path: the file written by ``sb3_sparse.export(..., format="compact")``.
    :return: the policy; call :meth:`CompactPolicy.predict`.
    """
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    return CompactPolicy(meta, arrays)
