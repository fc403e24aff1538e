"""SB3 ``.zip`` models: which algorithm class a zip needs, and loading it the way SB3 expects, without running the
zip's pickles.

SB3 stores what JSON cannot hold (spaces, schedules, the policy class, ...) as cloudpickle blobs in the zip's ``data``
entry and ``cloudpickle.loads`` them on load: a hostile zip runs any code. :func:`load_algorithm` unpickles every such
blob itself with the restricted unpickler of :mod:`sb3_vlm.formats.safe_pickle` (the globals our zips and SB3's TD3
zips use) and hands the results to SB3 as ``custom_objects``, so SB3 never unpickles anything; tensors are read by SB3
with ``torch.load(weights_only=True)``. Classes that are only referred to (``policy_class``, ``replay_buffer_class``)
are accepted only in blobs that call nothing.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import pickletools
import zipfile
import zlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from sb3_vlm.formats.safe_pickle import TRAJECTORY_GLOBALS, UnsafePickleError, safe_loads

__all__ = ["is_vlm_zip", "load_algorithm"]

_SERIALIZED = ":serialized:"
_VLM_POLICY_MODULE = "sb3_vlm.td3.policies"
"""Home of ``VLMTD3Policy``: zips whose policy class comes from here load as ``VLMTD3``; other policies of ours
(``BatchedTD3Policy``) are TD3 policies."""
# Objects SB3 pickles by value: spaces (with their numpy RNG), schedules, noise, train_freq, episode buffers.
_VALUE_NAMES = {
    "collections": ["deque"],
    "numpy": ["float32", "float64", "int64", "int32", "uint8", "bool_"],
    "numpy.random._pickle": ["__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor"],
    "numpy.random._pcg64": ["PCG64"],
    "numpy.random._mt19937": ["MT19937"],
    "numpy.random.bit_generator": ["__pyx_unpickle_SeedSequence", "SeedSequence"],
    "gymnasium.spaces.box": ["Box"],
    "gymnasium.spaces.dict": ["Dict"],
    "gymnasium.spaces.discrete": ["Discrete"],
    "stable_baselines3.common.noise": ["NormalActionNoise", "OrnsteinUhlenbeckActionNoise", "VectorizedActionNoise"],
    "stable_baselines3.common.utils": ["FloatSchedule", "ConstantSchedule", "LinearSchedule"],
    "stable_baselines3.common.type_aliases": ["TrainFreq", "TrainFrequencyUnit"],
    "torch.nn.modules.activation": ["ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU"],
    "sb3_vlm.td3.reward_norm": ["RewardNormalizer"],
    "torch.optim.adam": ["Adam"],
    "torch.optim.adamw": ["AdamW"],
}
# Classes SB3 stores as a reference only (policy_class, replay_buffer_class, features_extractor_class).
_CLASS_NAMES = {
    "stable_baselines3.td3.policies": ["TD3Policy", "MlpPolicy", "CnnPolicy", "MultiInputPolicy"],
    "stable_baselines3.common.buffers": ["ReplayBuffer", "DictReplayBuffer", "NStepReplayBuffer"],
    "stable_baselines3.common.torch_layers": ["FlattenExtractor", "CombinedExtractor", "NatureCNN"],
    _VLM_POLICY_MODULE: ["VLMTD3Policy"],
    "sb3_vlm.td3.batched": ["BatchedTD3Policy"],
    "sb3_vlm.model.extractor": ["VLMDPTExtractor"],
    "sb3_vlm.td3.reward_norm": [
        "NormalizedRewardReplayBuffer",
        "NormalizedRewardDictReplayBuffer",
        "NormalizedRewardNStepReplayBuffer",
    ],
}
# What reading a damaged zip raises (the zip layer, JSON, a member that is not what SB3 expects).
_CORRUPT = (zipfile.BadZipFile, zlib.error, KeyError, TypeError, ValueError, OSError, EOFError)
# Opcodes that call something; a blob holding a reference-only class may have none of them.
_CALLS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "BUILD"}


def _resolve(names: Mapping[str, list[str]]) -> dict[tuple[str, str], Any]:
    allowed = {}
    for module, attrs in names.items():
        try:
            imported = importlib.import_module(module)
        except ImportError:  # e.g. an older numpy without this bit generator
            continue
        allowed.update({(module, a): getattr(imported, a) for a in attrs if hasattr(imported, a)})
    return allowed


@cache
def _allowlists() -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any]]:
    """(globals of value blobs, those plus the reference-only classes)."""
    values = {**TRAJECTORY_GLOBALS, **_resolve(_VALUE_NAMES)}
    return values, {**values, **_resolve(_CLASS_NAMES)}


def _read_data(path: str | os.PathLike) -> dict[str, Any]:
    """The zip's JSON ``data`` entry."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"SB3 model zip {path} not found")
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (*_CORRUPT, NotImplementedError) as e:
        raise ValueError(f"{path} is not an SB3 model zip (no JSON 'data' entry): {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not an SB3 model zip: 'data' holds a {type(data).__name__}, not an object")
    return data


def _unpickle(path: str | os.PathLike, key: str, blob: Any) -> Any:
    """One ``:serialized:`` entry of ``data``, unpickled with the allowlists."""
    where = f"{path}: data[{key!r}]"
    try:
        raw = base64.b64decode(blob, validate=True)
        calls = any(op.name in _CALLS for op, _, _ in pickletools.genops(raw))
    except (TypeError, ValueError, binascii.Error) as e:
        raise ValueError(f"{where} is not a valid serialized object: {e}") from None
    values, with_classes = _allowlists()
    try:
        return safe_loads(raw, source=where, allowed=values if calls else with_classes)
    except UnsafePickleError as e:
        raise ValueError(f"{where}: refusing to load {e.global_name!r} (not needed by an SB3 TD3 zip)") from None
    except Exception as e:  # noqa: BLE001 - any failure of a corrupt blob or of an allowed constructor on it
        raise ValueError(f"{where} cannot be read: {type(e).__name__}: {e}") from None


def _safe_objects(path: str | os.PathLike, data: Mapping[str, Any]) -> dict[str, Any]:
    """Every cloudpickled entry of ``data``, read without cloudpickle (see the module docstring)."""
    return {
        key: _unpickle(path, key, value[_SERIALIZED])
        for key, value in data.items()
        if isinstance(value, dict) and _SERIALIZED in value
    }


def _is_vlm(data: Mapping[str, Any]) -> bool:
    policy_class = data.get("policy_class")
    module = policy_class.get("__module__", "") if isinstance(policy_class, dict) else ""
    return module == _VLM_POLICY_MODULE


def is_vlm_zip(path: str | os.PathLike) -> bool:
    """Whether the zip's policy class is ``VLMTD3Policy`` (load it with ``VLMTD3``; every other policy, ours
    ``BatchedTD3Policy`` included, is a ``TD3`` one).

    Reads the ``__module__`` SB3 records for the saved ``policy_class`` in the zip's JSON ``data``; nothing is
    unpickled.

    :raises FileNotFoundError: for a missing file. :raises ValueError: for a file that is not an SB3 zip.
    """
    return _is_vlm(_read_data(path))


def load_algorithm(path: str | os.PathLike, device: str = "cpu", **kwargs: Any) -> Any:
    """
    Load an SB3 zip as ``VLMTD3`` (VLM policy) or ``TD3``, its pickled entries read with an allowlist.

    ``n_steps`` is loaded as 1: SB3 (>= 2.7) turns ``n_steps > 1`` into ``replay_buffer_class=NStepReplayBuffer``
    with ``replay_buffer_kwargs={"n_steps": ..., "gamma": ...}`` when the model is built and saves all three, and on
    load it would warn that ``n_steps`` is ignored next to the custom buffer class. The saved buffer kwargs keep the
    n-step returns.

    :param path: The ``.zip`` file.
    :param device: Torch device.
    :param kwargs: Other ``load`` arguments (``env``, ``tensorboard_log``, ...).
    :raises ValueError: naming the file (and the entry) for a zip that is not a readable SB3 model, or that refers
        to anything outside the allowlist (nothing of it is run).
    """
    from stable_baselines3 import TD3

    from sb3_vlm.td3.td3 import VLMTD3

    data = _read_data(path)
    algo = VLMTD3 if _is_vlm(data) else TD3
    custom_objects = {**_safe_objects(path, data), "n_steps": 1, **kwargs.pop("custom_objects", {})}
    try:
        return algo.load(Path(path), device=device, custom_objects=custom_objects, **kwargs)
    except Exception as e:  # noqa: BLE001 - torch.load of a corrupt .pth raises anything (IndexError, ...)
        detail = " ".join(str(e).split())[:300]  # torch lists every mismatched key
        raise ValueError(
            f"{path}: cannot be loaded as an SB3 {algo.__name__} model: {type(e).__name__}: {detail}"
        ) from e
