"""One trajectory file's records as a :class:`Trajectory` of :class:`Transition` s: the FTRL and ros_jackal record
schemas (see :mod:`sb3_vlm.formats.trajectories`, which finds and reads the files)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # type only: sb3_vlm does not import envs at run time
    from envs.planners import ParamTable

__all__ = ["LASER_DIM", "SchemaError", "Trajectory", "Transition", "parse_episode", "resize_image"]

LASER_DIM = 721
"""APPLR laser observation: 720 scaled ranges + local-goal angle."""
_FRAME_NAME = re.compile(r"([A-Z]+)_(\d{6})\.png")
_FIELDS = {7: "ftrl", 5: "ros_jackal"}
_FIELD_NAMES = {
    "ftrl": ("obs", "act", "rew", "done", "info", "opt_time", "nav_metric"),
    "ros_jackal": ("obs", "action", "reward", "done", "info"),
}


def resize_image(image: Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image with Pillow's bilinear filter (aspect ratio not kept).

    :param image: PIL image (any mode, converted to RGB) or uint8 array ``[H, W, 3]`` / ``[H, W]``.
    :param size: Target ``(height, width)`` in pixels.
    :return: uint8 array ``[height, width, 3]``.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"resize_image expects a uint8 [H, W, 3] or [H, W] array, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"resize_image expects a PIL image or a numpy array, got {type(image).__name__}")
    height, width = size
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).copy()


@dataclass(frozen=True)
class Transition:
    """One step, ready for ``ReplayBuffer.add``.

    :param obs: Observation parts available in the file: ``image`` uint8 ``[H, W, 3]``, ``velocity`` float32 ``[2]``
        (m/s, rad/s at the start of the step), ``laser`` float32 ``[721]``.
    :param next_obs: Same keys, next step (the last step of an episode repeats its own ``obs``).
    :param action: Planner parameters scaled to [-1, 1], float32 ``[P]``.
    :param reward: Reward as recorded (FTRL's tail-spread rewards included).
    :param done: The episode ended at this step (terminated or truncated).
    :param timeout: The end was a time limit (truncation): SB3 then bootstraps from ``next_obs``.
    """

    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: float
    done: bool
    timeout: bool


@dataclass(frozen=True)
class Trajectory:
    """One episode file.

    :param path: The pickle file.
    :param format: ``"ftrl"`` (7 fields) or ``"ros_jackal"`` (5 fields).
    :param transitions: Its steps in order.
    :param status: Final ``info["status"]`` (``success``/``collision``/``flip``/``timeout``/...), if recorded.
    :param success: Whether the episode reached the goal; ``None`` if the file does not say.
    :param nav_metric: BARN navigation metric of the episode (FTRL last record), ``None`` if absent.
    :param world: ``info["world"]`` of the last step, if recorded.
    :param time: ``info["time"]`` of the last step (s), if recorded.
    :param model_version: Oldest ``info["model_version"]`` of its steps (the served policy that acted, see
        :mod:`sb3_vlm.workflows.collector`), if recorded.
    :param frames: PNG frames of this episode beside the pickle (FTRL ``img_label`` names plus the reset frame).
    """

    path: Path
    format: str
    transitions: list[Transition]
    status: str | None
    success: bool | None
    nav_metric: float | None
    world: str | None
    time: float | None = None
    model_version: int | None = None
    frames: tuple[Path, ...] = ()


class SchemaError(ValueError):
    """A record does not match the expected format."""


def _as_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SchemaError(f"{where}: expected a number, got {type(value).__name__}")
    if not np.isfinite(value):
        raise SchemaError(f"{where}: expected a finite number, got {value}")
    return float(value)


def _as_vector(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, (np.ndarray, list, tuple)):
        raise SchemaError(f"{where}: expected an array or list, got {type(value).__name__}")
    try:
        vec = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{where}: expected numbers, got {value!r:.80}") from e
    if not np.all(np.isfinite(vec)):
        raise SchemaError(f"{where}: expected finite values, got {vec.ravel()[:9]}")
    return vec


def _parse_record(
    record: Any, step: int, fmt: str, params: ParamTable, image_size: tuple[int, int] | None
) -> tuple[dict[str, np.ndarray], np.ndarray, float, bool, dict[str, Any]]:
    names = _FIELD_NAMES[fmt]
    if not isinstance(record, (list, tuple)) or len(record) != len(names):
        got = f"{type(record).__name__} of length {len(record)}" if isinstance(record, (list, tuple)) else record
        got = got if isinstance(got, str) else type(got).__name__
        raise SchemaError(f"step {step}: expected a {len(names)}-field record {list(names)}, got {got}")
    obs_raw, act_raw, rew_raw, done_raw, info = record[:5]
    if not isinstance(info, dict):
        raise SchemaError(f"step {step}, field 'info': expected a dict, got {type(info).__name__}")
    obs: dict[str, np.ndarray] = {}

    raw = _as_vector(obs_raw, f"step {step}, field 'obs'")
    if raw.shape in ((LASER_DIM,), (1, LASER_DIM)):
        obs["laser"] = raw.ravel().astype(np.float32)
    elif fmt == "ros_jackal" or raw.shape not in ((2,), (1, 2)):
        # FTRL's DDP env records the velocity observation [[v, w]]; the velocity itself is taken from last_state.
        expected = f"({LASER_DIM},) or (1, {LASER_DIM})" + (" or (1, 2)" if fmt == "ftrl" else "")
        raise SchemaError(f"step {step}, field 'obs': expected shape {expected}, got {raw.shape}")

    if fmt == "ftrl":
        if "img_PIL" in info:
            if not isinstance(info["img_PIL"], Image.Image):
                raise SchemaError(
                    f"step {step}, field info['img_PIL']: expected a PIL image, got {type(info['img_PIL']).__name__}"
                )
            image = info["img_PIL"]
            obs["image"] = resize_image(image, image_size or (image.height, image.width))
        if "last_state" in info:
            velocity = _as_vector(info["last_state"], f"step {step}, field info['last_state']").ravel()
            if velocity.shape != (2,):
                raise SchemaError(f"step {step}, field info['last_state']: expected [v, w], got shape {velocity.shape}")
            obs["velocity"] = velocity.astype(np.float32)

    act = _as_vector(act_raw, f"step {step}, field '{names[1]}'").ravel()
    n_params = len(params)
    allowed_sizes = (n_params, n_params + 2) if fmt == "ftrl" else (n_params,)
    if act.size not in allowed_sizes:
        raise SchemaError(
            f"step {step}, field '{names[1]}': expected {' or '.join(map(str, allowed_sizes))} values "
            f"({', '.join(params.names)}), got {act.size}"
        )
    action = params.to_unit(act[:n_params])
    reward = _as_float(rew_raw, f"step {step}, field '{names[2]}'")
    if not isinstance(done_raw, (bool, np.bool_, int, np.integer)) or done_raw not in (0, 1):
        raise SchemaError(f"step {step}, field 'done': expected a bool, got {done_raw!r:.40}")
    return obs, action, reward, bool(done_raw), info


def _episode_frames(path: Path, infos: Sequence[dict[str, Any]]) -> tuple[Path, ...]:
    # img_label names the frame written at the end of each step; the frame before the first one is the reset frame.
    # Labels are untrusted strings: only exact "<METHOD>_<k:06d>.png" names beside the pickle are considered.
    numbers: dict[str, set[int]] = {}
    for info in infos:
        match = _FRAME_NAME.fullmatch(str(info.get("img_label", "")))
        if match:
            numbers.setdefault(match.group(1), set()).add(int(match.group(2)))
    frames = []
    for method, ks in numbers.items():
        for k in sorted(ks | {min(ks) - 1}):
            frame = path.parent / f"{method}_{k:06d}.png"
            if k >= 0 and frame.is_file():
                frames.append(frame)
    return tuple(frames)


def parse_episode(path: Path, data: Any, params: ParamTable, image_size: tuple[int, int] | None) -> Trajectory:
    if not isinstance(data, list):
        raise SchemaError(f"expected a list of step records, got {type(data).__name__}")
    if not data:
        raise SchemaError("no step records")
    first = data[0]
    fmt = _FIELDS.get(len(first)) if isinstance(first, (list, tuple)) else None
    if fmt is None:
        got = f"length {len(first)}" if isinstance(first, (list, tuple)) else type(first).__name__
        raise SchemaError(f"step 0: expected a 7-field (FTRL) or 5-field (ros_jackal) record, got {got}")
    parsed = [_parse_record(record, i, fmt, params, image_size) for i, record in enumerate(data)]
    keys = set(parsed[0][0])
    for i, (obs, *_rest) in enumerate(parsed):
        if set(obs) != keys:
            raise SchemaError(f"step {i}: observation fields {sorted(obs)} differ from step 0's {sorted(keys)}")

    transitions = []
    for i, (obs, action, reward, done, info) in enumerate(parsed):
        next_obs = parsed[i + 1][0] if i + 1 < len(parsed) else obs
        timeout = done and (info.get("status") == "timeout" or bool(info.get("TimeLimit.truncated", False)))
        transitions.append(Transition(obs, next_obs, action, reward, done, timeout))

    last_info = parsed[-1][4]
    status = last_info.get("status")
    status = status if isinstance(status, str) else None
    if status is not None:
        success: bool | None = status == "success"
    elif "success" in last_info:
        success = bool(last_info["success"])
    else:
        success = None
    nav_metric = _as_float(data[-1][6], f"step {len(data) - 1}, field 'nav_metric'") if fmt == "ftrl" else None
    world = last_info.get("world")
    end_time = last_info.get("time")
    versions = [p[4]["model_version"] for p in parsed if isinstance(p[4].get("model_version"), int)]
    world = world if isinstance(world, str) else None
    return Trajectory(
        path,
        fmt,
        transitions,
        status,
        success,
        nav_metric,
        world,
        time=_as_float(end_time, f"step {len(data) - 1}, field info['time']") if end_time is not None else None,
        model_version=min(versions, default=None),
        frames=_episode_frames(path, [p[4] for p in parsed]) if fmt == "ftrl" else (),
    )
