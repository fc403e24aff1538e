"""Read and write the FTRL supervised checkpoint layout (docs/compat/ftrl.md §3.1, §3.3), plus sb3-vlm's
``actor_head/``, ``critic/`` and ``sb3_vlm_config.json``. Weights are read with ``torch.load(weights_only=True)``;
writes go to a temporary sibling directory that replaces the target only once complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from safetensors.torch import load_file, save_file
from torch import nn

from sb3_vlm._constants import (
    ACTOR_HEAD_DIR,
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CRITIC_DIR,
    HEAD_DIR,
    HISTORY_CONFIG,
    HISTORY_DIR,
    NORMALIZATION_DIR,
    PARAM_MEAN,
    PARAM_STD,
    SAFETENSORS_WEIGHTS,
    SB3_VLM_CONFIG,
    TORCH_WEIGHTS,
)

__all__ = [
    "CheckpointError",
    "FTRLCheckpoint",
    "check_state",
    "is_checkpoint_dir",
    "load_module_state",
    "read_checkpoint",
    "read_state_dict",
    "write_checkpoint",
]

StateDict = dict[str, th.Tensor]


class CheckpointError(ValueError):
    """A checkpoint part is missing or does not match the module it should load into."""


@dataclass
class FTRLCheckpoint:
    """
    The parts of an FTRL-layout checkpoint, in memory.

    :param head_state: ``regression_head`` state dict (DPTHead keys).
    :param history_state: ``history_encoder`` state dict, or None.
    :param history_config: Contents of ``history_config.json`` (empty if absent).
    :param param_mean: SFT parameter mean ``[P]`` (float64), or None.
    :param param_std: SFT parameter std ``[P]`` (float64), or None.
    :param extras: sb3-vlm additions, sub-directory name -> state dict (``actor_head``, ``critic``).
    :param config: Contents of ``sb3_vlm_config.json`` (empty if absent).
    :param adapter_dir: Directory holding the PEFT adapter files when reading, or None.
    """

    head_state: StateDict
    history_state: StateDict | None = None
    history_config: dict[str, Any] = field(default_factory=dict)
    param_mean: np.ndarray | None = None
    param_std: np.ndarray | None = None
    extras: dict[str, StateDict] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    adapter_dir: Path | None = None

    @property
    def num_params(self) -> int:
        """``P``, the rows of the head's last layer ``mlp.6.weight``."""
        return int(self.head_state["mlp.6.weight"].shape[0])


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory in the FTRL layout (has ``regression_head/``)."""
    return (Path(path) / HEAD_DIR / TORCH_WEIGHTS).is_file()


def read_state_dict(file: str | os.PathLike) -> StateDict:
    """
    Load a ``torch.save``-d state dict safely (``weights_only=True``, on CPU), without zero-numel tensors.

    :param file: Path of a ``.bin``/``.pt`` file.
    :return: Key -> tensor.
    """
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: file not found")
    try:
        state = th.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file}: cannot be read as a torch state dict ({e})") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, th.Tensor) for v in state.values()):
        raise CheckpointError(f"{file}: expected a mapping of str -> Tensor, got {type(state).__name__}")
    return {k: v for k, v in state.items() if v.numel() > 0}


def check_state(expected: Mapping[str, th.Tensor], state: Mapping[str, th.Tensor], source: str, what: str) -> None:
    """
    Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of ``expected``.

    :param expected: Reference state dict (e.g. ``module.state_dict()``).
    :param state: State dict read from ``source``.
    :param source: Where ``state`` comes from, for the message (e.g. ``ckpt/regression_head/pytorch_model.bin``).
    :param what: What ``expected`` describes, for the message (e.g. ``DPTHead``).
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: state dict does not match {what}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key {key!r} expected shape {tuple(tensor.shape)}, got {tuple(state[key].shape)}"
            )


def load_module_state(module: nn.Module, state: Mapping[str, th.Tensor], source: str) -> None:
    """
    ``module.load_state_dict(state, strict=True)`` with an error naming the file, the key and both shapes.

    :param module: Target module.
    :param state: State dict to load (cast to the module's dtypes).
    :param source: Where ``state`` comes from, for the message.
    """
    check_state(module.state_dict(), state, source, type(module).__name__)
    module.load_state_dict(state, strict=True)


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise CheckpointError(f"{file}: cannot be read as JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_vector(file: Path, num_params: int) -> np.ndarray:
    try:
        array = np.load(file, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy parses the header with ast: any error of a corrupt file
        raise CheckpointError(f"{file}: cannot be read as a .npy array ({e})") from e
    if array.shape != (num_params,):
        raise CheckpointError(f"{file}: expected shape ({num_params},) to match mlp.6.weight, got {array.shape}")
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise CheckpointError(f"{file}: expected finite numbers, got {array.dtype} {array[:9]}")
    return array.astype(np.float64)


def _read_safetensors(file: Path) -> StateDict:
    try:
        return load_file(file)
    except Exception as e:  # noqa: BLE001 - safetensors' own error type (header, sizes, dtypes) or an OSError
        raise CheckpointError(f"{file}: cannot be read as safetensors ({type(e).__name__}: {e})") from e


def read_checkpoint(path: str | os.PathLike) -> FTRLCheckpoint:
    """
    Read every part of an FTRL-layout checkpoint except the adapter weights (the backbone loads those with PEFT).

    :param path: Checkpoint directory.
    :return: The parts; optional ones are None/empty when absent.
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    head_file = root / HEAD_DIR / TORCH_WEIGHTS
    head_state = read_state_dict(head_file)
    for key in ("projections.0.0.weight", "mlp.6.weight"):
        if key not in head_state:
            raise CheckpointError(f"{head_file}: key {key!r} missing (not a DPTHead state dict)")
    if head_state["mlp.6.weight"].dim() != 2:
        raise CheckpointError(
            f"{head_file}: mlp.6.weight must be a matrix, got {tuple(head_state['mlp.6.weight'].shape)}"
        )
    ckpt = FTRLCheckpoint(head_state=head_state)

    if (root / HISTORY_CONFIG).is_file():
        ckpt.history_config = _read_json(root / HISTORY_CONFIG)
    history_file = root / HISTORY_DIR / TORCH_WEIGHTS
    if ckpt.history_config.get("use_history", False) or history_file.exists():
        ckpt.history_state = read_state_dict(history_file)
        if "history_fusion.0.weight" not in head_state:
            raise CheckpointError(
                f"{head_file}: history encoder present but the head has no history_fusion "
                f"(key 'history_fusion.0.weight' missing)"
            )

    norm = root / NORMALIZATION_DIR
    mean_file, std_file = norm / PARAM_MEAN, norm / PARAM_STD
    if mean_file.exists() != std_file.exists():
        present, absent = (mean_file, std_file) if mean_file.exists() else (std_file, mean_file)
        raise CheckpointError(f"{absent}: file not found (its partner {present.name} exists)")
    if mean_file.exists():
        ckpt.param_mean = _read_vector(mean_file, ckpt.num_params)
        ckpt.param_std = _read_vector(std_file, ckpt.num_params)

    for name in (ACTOR_HEAD_DIR, CRITIC_DIR):
        file = root / name / SAFETENSORS_WEIGHTS
        if file.is_file():
            ckpt.extras[name] = _read_safetensors(file)
    if (root / SB3_VLM_CONFIG).is_file():
        ckpt.config = _read_json(root / SB3_VLM_CONFIG)
    if (root / ADAPTER_CONFIG).is_file():
        if not (root / ADAPTER_WEIGHTS).is_file():
            raise CheckpointError(f"{root / ADAPTER_WEIGHTS}: file not found (adapter_config.json exists)")
        ckpt.adapter_dir = root
    return ckpt


def write_checkpoint(
    path: str | os.PathLike,
    ckpt: FTRLCheckpoint,
    save_adapter: Callable[[Path], None] | None = None,
) -> Path:
    """
    Write ``ckpt`` in the FTRL layout, atomically: everything goes to a temporary sibling directory, which then
    replaces ``path``. A crash before the swap leaves the previous checkpoint untouched.

    :param path: Target directory (created or replaced).
    :param ckpt: Parts to write; ``adapter_dir`` is ignored (use ``save_adapter``).
    :param save_adapter: Called with the temporary directory to write ``adapter_config.json`` +
        ``adapter_model.safetensors`` there (e.g. ``peft_model.save_pretrained``), or None.
    :return: ``path`` as a ``Path``.
    """
    with atomic_directory(path) as tmp:
        _write_parts(tmp, ckpt, save_adapter)
    return Path(path)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """
    Yield a temporary sibling directory of ``path``; on a clean exit it replaces ``path`` by renames only, on an
    exception it is deleted and ``path`` is untouched. Readers see the old directory or the new one, never a mix;
    after a crash in the middle of the swap itself the previous copy survives as ``.<name>.old-*/<name>``
    (see :func:`recover_directory`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_directory(path: str | os.PathLike) -> Path | None:
    """``path`` if it exists, else the previous copy left by a swap that was cut off, else None."""
    target = Path(path)
    if target.is_dir():
        return target
    leftovers = sorted(target.parent.glob(f".{target.name}.old-*/{target.name}"), key=lambda p: p.stat().st_mtime)
    return leftovers[-1] if leftovers else None


def _write_parts(root: Path, ckpt: FTRLCheckpoint, save_adapter: Callable[[Path], None] | None) -> None:
    if save_adapter is not None:
        save_adapter(root)
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (root / name).is_file():
                raise CheckpointError(f"save_adapter did not write {name} into {root}")
    _save_torch(root / HEAD_DIR / TORCH_WEIGHTS, ckpt.head_state)
    if ckpt.history_state is not None:
        _save_torch(root / HISTORY_DIR / TORCH_WEIGHTS, ckpt.history_state)
    if ckpt.history_config:
        (root / HISTORY_CONFIG).write_text(json.dumps(ckpt.history_config, indent=2))
    if (ckpt.param_mean is None) != (ckpt.param_std is None):
        raise ValueError("write_checkpoint: param_mean and param_std must be given together, got only one")
    if ckpt.param_mean is not None:
        (root / NORMALIZATION_DIR).mkdir()
        np.save(root / NORMALIZATION_DIR / PARAM_MEAN, np.asarray(ckpt.param_mean, dtype=np.float64))
        np.save(root / NORMALIZATION_DIR / PARAM_STD, np.asarray(ckpt.param_std, dtype=np.float64))
    for name, state in ckpt.extras.items():
        (root / name).mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, root / name / SAFETENSORS_WEIGHTS)
    if ckpt.config:
        (root / SB3_VLM_CONFIG).write_text(json.dumps(ckpt.config, indent=2))


def _save_torch(file: Path, state: Mapping[str, th.Tensor]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    # clone(): never serialise views of a larger buffer (the 642 MB ZeRO-3 heads of docs/compat/ftrl.md §3.1).
    th.save({k: v.detach().cpu().clone() for k, v in state.items()}, file)


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp`` with renames only (a directory cannot be replaced in one rename)."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
