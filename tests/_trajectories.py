"""Write trajectory files in the collectors' own formats, for tests.

* FTRL (``ftrl_reference.md`` §5.5-5.6): ``actor_<id>/traj_<n>.pickle``, records
  ``[obs, act, rew, done, info, opt_time, nav_metric]`` with ``info["img_PIL"]`` (RGB 600 x 400) and the PNG frames
  ``FTRL_<k:06d>.png`` beside it (one at reset, one after every step).
* ros_jackal / APPLR: ``actor_<id>/traj_<n>.pickle``, records ``[obs, action, reward, done, info]`` with the laser
  observation of shape (1, 721).

Files are given an mtime in the past so that loaders with a "still being written" age rule take them.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from envs.planners import DWA_PARAMS

FTRL_IMAGE_SIZE = (400, 600)  # (H, W) of FTRL's rendered frames
LASER_DIM = 721


def physical_actions(rng: np.random.Generator, n: int, margin: float = 0.1) -> np.ndarray:
    """``[n, 7]`` DWA parameters drawn a bit beyond the table ranges (so clipping is exercised), float64."""
    span = DWA_PARAMS.high - DWA_PARAMS.low
    return rng.uniform(DWA_PARAMS.low - margin * span, DWA_PARAMS.high + margin * span, size=(n, len(DWA_PARAMS)))


def frame_image(rng: np.random.Generator, size: tuple[int, int] = FTRL_IMAGE_SIZE) -> Image.Image:
    """An RGB frame of ``size`` (H, W): gray background with random colored blocks, like a rendered scene."""
    h, w = size
    arr = np.full((h, w, 3), 205, dtype=np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
        arr[y : y + h // 4, x : x + w // 4] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return Image.fromarray(arr)


def ftrl_episode(
    rng: np.random.Generator,
    n_steps: int,
    *,
    status: str = "success",
    first_frame: int = 0,
    act_size: int = 9,
    world: str = "world_12.world",
    nav_metric: float = 0.3,
) -> tuple[list[list[Any]], list[Image.Image]]:
    """An FTRL episode and its ``n_steps + 1`` frames (frame ``first_frame`` is the reset frame).

    :param status: Final ``info["status"]``; intermediate steps are ``running``.
    :param act_size: 9 = 7 DWA parameters + 2 next velocities (server output), 7 = fallback ``param_init[:-2]``.
    :return: ``(records, frames)``; record i's ``img_PIL`` is ``frames[i]``, its ``img_label`` names frame i + 1.
    """
    frames = [frame_image(rng) for _ in range(n_steps + 1)]
    acts = physical_actions(rng, n_steps)
    records = []
    for i in range(n_steps):
        last = i == n_steps - 1
        velocity = rng.uniform([-0.5, -3.14], [2.0, 3.14])
        act: Any = np.concatenate([acts[i], rng.uniform(-1, 1, size=2)]) if act_size == 9 else list(acts[i])
        info = {
            "world": world,
            "time": 0.5 * (i + 1),
            "collision": 0,
            "status": status if last else "running",
            "recovery": 0.1,
            "smoothness": -0.2,
            "img_label": f"FTRL_{first_frame + i + 1:06d}.png",
            "img_PIL": frames[i],
            "last_state": [float(velocity[0]), float(velocity[1])],
        }
        obs = rng.uniform(-0.5, 0.5, size=(1, LASER_DIM))
        reward = float(rng.normal())
        records.append([obs, act, reward, last, info, 12.5 if last else 0, nav_metric if last else 0])
    return records, frames


def ros_jackal_episode(
    rng: np.random.Generator, n_steps: int, *, success: bool = True, flat_obs: bool = False
) -> list[list[Any]]:
    """A ros_jackal (APPLR) episode: laser observations (1, 721) (or (721,)), physical DWA actions."""
    acts = physical_actions(rng, n_steps)
    records = []
    for i in range(n_steps):
        last = i == n_steps - 1
        obs = rng.uniform(-0.5, 0.5, size=(LASER_DIM,) if flat_obs else (1, LASER_DIM))
        info = {"world": "BARN/world_3.world", "time": float(i + 1), "collision": 0, "success": success and last}
        records.append([obs, acts[i], float(rng.normal()), last, info])
    return records


def write_pickle(path: Path, obj: Any, *, protocol: int = 4, age_s: float = 60.0) -> Path:
    """Pickle ``obj`` to ``path`` (parents created) and set its mtime ``age_s`` seconds in the past."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    set_age(path, age_s)
    return path


def set_age(path: Path, age_s: float) -> None:
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def write_ftrl_trajectory(
    actor_dir: Path, n: int, records: list[list[Any]], frames: list[Image.Image], *, first_frame: int = 0
) -> tuple[Path, list[Path]]:
    """Write ``traj_<n>.pickle`` and the PNG frames ``FTRL_<first_frame + k:06d>.png`` into ``actor_dir``."""
    actor_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    for k, frame in enumerate(frames):
        png = actor_dir / f"FTRL_{first_frame + k:06d}.png"
        frame.save(png)
        pngs.append(png)
    return write_pickle(actor_dir / f"traj_{n}.pickle", records), pngs
