"""Resumable job state: atomic checkpoints and the evaluation history of one job folder.

A checkpoint is a folder ``checkpoints/<timesteps>/`` (model zip with the sparse state, replay
buffer, random generators, counters). It is written under a temporary name and renamed when
complete; ``checkpoints/latest.json`` (also written to a temporary file and renamed) names the
newest. A job killed at any moment leaves either the previous or the new checkpoint, never a
half-written one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

EVALUATION_FIELDS = ("timesteps", "n_updates", "train_seconds", "return_mean", "return_std", "returns")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file under a temporary name and rename it, so readers never see half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


class Checkpoints:
    """The checkpoints of one job: save, find the latest, restore.

    :param folder: the job's ``checkpoints`` folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pointer = folder / "latest.json"

    def latest(self) -> dict[str, Any] | None:
        """The newest complete checkpoint's state (``timesteps``, ``train_seconds``, ...), or ``None``."""
        return read_json(self.pointer)

    def save(self, model: Any, state: dict[str, Any]) -> None:
        """Write a checkpoint of ``model`` at ``state["timesteps"]`` and make it the latest."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{state['timesteps']:010d}"
        tmp = self.folder / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        model.save(tmp / "model.zip")
        if getattr(model, "replay_buffer", None) is not None:
            model.save_replay_buffer(tmp / "replay_buffer.pkl")
        torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
                   tmp / "rng.pt")  # fmt: skip
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_json(self.pointer, {**state, "folder": final.name})
        for old in self.folder.iterdir():  # only the latest is needed to resume
            if old.is_dir() and old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, algo_class: type, env: Any, device: str, buffer_size: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Load the latest checkpoint: the model (replay buffer included) and its state.

        :param buffer_size: enlarge the restored replay buffer to this size (a grown budget).
        """
        state = self.latest()
        assert state is not None, "no checkpoint to restore"
        folder = self.folder / state["folder"]
        model = algo_class.load(folder / "model.zip", env=env, device=device)
        if (folder / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(folder / "replay_buffer.pkl")
            if buffer_size is not None and buffer_size > model.replay_buffer.buffer_size:
                grow_buffer(model.replay_buffer, buffer_size)
                model.buffer_size = buffer_size
        rng = torch.load(folder / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        return model, state


_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def grow_buffer(buffer: Any, size: int) -> None:
    """Enlarge a replay buffer that has not wrapped around (the sweep sizes it to the step budget).

    The stored transitions keep their order and the buffer goes on filling after them, as a
    buffer of ``size`` would have from the start.
    """
    if buffer.full and buffer.pos != 0:
        raise ValueError("cannot enlarge a replay buffer that has wrapped around")
    filled = buffer.buffer_size if buffer.full else buffer.pos

    def grown(old: np.ndarray) -> np.ndarray:
        new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
        new[:filled] = old[:filled]
        return new

    for name in _BUFFER_ARRAYS:
        old = getattr(buffer, name, None)
        if isinstance(old, dict):  # DictReplayBuffer
            setattr(buffer, name, {key: grown(value) for key, value in old.items()})
        elif isinstance(old, np.ndarray):
            setattr(buffer, name, grown(old))
    buffer.buffer_size, buffer.pos, buffer.full = size, filled, False


class Evaluations:
    """The evaluation history of a job (``evaluations.csv``), cut back to a checkpoint on resume.

    :param path: the CSV file.
    :param until: keep only rows at or before this many timesteps (the restored checkpoint).
    """

    def __init__(self, path: Path, until: int) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, newline="") as f:
                self.rows = [row for row in csv.DictReader(f) if int(row["timesteps"]) <= until]
        self.write()

    @property
    def last_timesteps(self) -> int:
        return int(self.rows[-1]["timesteps"]) if self.rows else 0

    def add(self, timesteps: int, n_updates: int, train_seconds: float, returns: list[float]) -> None:
        row = {
            "timesteps": timesteps,
            "n_updates": n_updates,
            "train_seconds": f"{train_seconds:.3f}",
            "return_mean": f"{np.mean(returns):.4f}",
            "return_std": f"{np.std(returns):.4f}",
            "returns": " ".join(f"{r:.3f}" for r in returns),
        }
        self.rows.append(row)
        self.write()

    def write(self) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EVALUATION_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, out.getvalue())
