"""Replay-buffer checkpoints without pickle: only the filled rows, as ``.npz`` arrays + a JSON header.

SB3's ``save_replay_buffer`` pickles the whole preallocated buffer (1.2 GB for 200k laser transitions however
few are stored) and loading it runs a pickle. Here a checkpoint costs what is stored, and loading only reads arrays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

__all__ = ["load_replay_buffer", "save_replay_buffer"]

_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
_HEADER = "header"


def _fields(buffer: ReplayBuffer | DictReplayBuffer) -> dict[str, np.ndarray]:
    fields: dict[str, np.ndarray] = {}
    for name in _ARRAYS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            fields.update({f"{name}/{k}": v for k, v in value.items()})
        elif value is not None:
            fields[name] = value
    return fields


def save_replay_buffer(buffer: ReplayBuffer | DictReplayBuffer, path: str | os.PathLike) -> Path:
    """Write the filled rows of ``buffer`` to ``path`` (``.npz``)."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    header = {"pos": buffer.pos, "full": buffer.full, "buffer_size": buffer.buffer_size, "n_envs": buffer.n_envs}
    arrays = {k: v[:n] for k, v in _fields(buffer).items()}
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays, **{_HEADER: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)})
    return path


def load_replay_buffer(buffer: ReplayBuffer | DictReplayBuffer, path: str | os.PathLike) -> None:
    """Fill ``buffer`` (already built with the model's spaces) from :func:`save_replay_buffer`'s file.

    :raises ValueError: naming the file and the field when its layout does not match ``buffer``.
    """
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(bytes(data[_HEADER]).decode())
        if header["n_envs"] != buffer.n_envs or header["buffer_size"] > buffer.buffer_size:
            raise ValueError(
                f"{path}: saved for n_envs={header['n_envs']}, buffer_size={header['buffer_size']}; this buffer has "
                f"n_envs={buffer.n_envs}, buffer_size={buffer.buffer_size}"
            )
        fields = _fields(buffer)
        if set(fields) != set(data.files) - {_HEADER}:
            raise ValueError(f"{path}: fields {sorted(set(data.files) - {_HEADER})}, expected {sorted(fields)}")
        for name, target in fields.items():
            saved = data[name]
            if saved.shape[1:] != target.shape[1:] or saved.dtype != target.dtype:
                raise ValueError(
                    f"{path}: field {name!r} expected {target.dtype} rows of {target.shape[1:]}, "
                    f"got {saved.dtype} {saved.shape[1:]}"
                )
            target[: len(saved)] = saved
    buffer.pos = header["pos"] % buffer.buffer_size if header["full"] else header["pos"]
    buffer.full = header["full"] and header["buffer_size"] == buffer.buffer_size
