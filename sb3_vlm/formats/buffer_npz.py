"""Replay-buffer checkpoints without pickle: only the filled rows, as ``.npz`` arrays + a JSON header.

SB3's ``save_replay_buffer`` pickles the whole preallocated buffer (1.2 GB for 200k laser transitions however
few are stored) and loading it runs a pickle. Here a checkpoint costs what is stored, and loading only reads arrays.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

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


class _LayoutError(ValueError):
    """The file is an ``.npz`` but its header or arrays do not fit the buffer (the message names the file)."""


def _header(data: Any, path: Path) -> dict[str, Any]:
    header = json.loads(bytes(data[_HEADER]).decode())
    valid = isinstance(header, dict) and isinstance(header.get("full"), bool)
    for key in ("pos", "buffer_size", "n_envs"):
        value = header.get(key) if isinstance(header, dict) else None
        valid = valid and isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if not valid:
        raise _LayoutError(
            f"{path}: header must hold ints pos, buffer_size, n_envs and a bool full, got {header!r:.200}"
        )
    return header


def load_replay_buffer(buffer: ReplayBuffer | DictReplayBuffer, path: str | os.PathLike) -> None:
    """Fill ``buffer`` (already built with the model's spaces) from :func:`save_replay_buffer`'s file. Nothing in
    the file is unpickled.

    :raises FileNotFoundError: if ``path`` is missing.
    :raises ValueError: naming the file (and the field) when it is not such a file or its layout does not match
        ``buffer``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"replay buffer {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = _header(data, path)
            rows = header["buffer_size"] if header["full"] else header["pos"]
            if (
                header["n_envs"] != buffer.n_envs
                or header["buffer_size"] > buffer.buffer_size
                or rows > buffer.buffer_size
            ):
                raise _LayoutError(
                    f"{path}: saved for n_envs={header['n_envs']}, buffer_size={header['buffer_size']} ({rows} rows); "
                    f"this buffer has n_envs={buffer.n_envs}, buffer_size={buffer.buffer_size}"
                )
            fields = _fields(buffer)
            if set(fields) != set(data.files) - {_HEADER}:
                raise _LayoutError(f"{path}: fields {sorted(set(data.files) - {_HEADER})}, expected {sorted(fields)}")
            for name, target in fields.items():
                saved = data[name]
                if saved.shape != (rows, *target.shape[1:]) or saved.dtype != target.dtype:
                    raise _LayoutError(
                        f"{path}: field {name!r} expected {rows} {target.dtype} rows of {target.shape[1:]}, "
                        f"got {saved.dtype} {saved.shape}"
                    )
                target[:rows] = saved
    except _LayoutError:
        raise
    except (ValueError, KeyError, TypeError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a replay-buffer checkpoint (.npz + JSON header): {type(e).__name__}: {e}") from e
    buffer.pos = header["pos"] % buffer.buffer_size if header["full"] else header["pos"]
    buffer.full = header["full"] and header["buffer_size"] == buffer.buffer_size
