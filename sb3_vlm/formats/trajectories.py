"""FTRL / APPLR trajectory files, read and written in one place: names, per-step records, PNG frames, the results line
(``fill_replay_buffer`` in :mod:`sb3_vlm.td3.replay` puts read transitions into an SB3 buffer). Formats, transitions
and which files are read: docs/guide/ftrl_workflow.md "Reading trajectory files"."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sb3_vlm.formats.safe_pickle import UnsafePickleError, safe_loads
from sb3_vlm.formats.trajectory_records import (
    LASER_DIM,
    SchemaError,
    Trajectory,
    Transition,
    parse_episode,
    resize_image,
)

if TYPE_CHECKING:  # type only: sb3_vlm does not import envs at run time
    from envs.planners import ParamTable

__all__ = [
    "CONSUMED_SUFFIX",
    "LASER_DIM",
    "LoadResult",
    "SkippedFile",
    "Trajectory",
    "Transition",
    "load_trajectories",
    "natural_key",
    "resize_image",
]


_TRAJ_NAME = re.compile(r"traj_\d+\.pickle")
_TEST_NAME = re.compile(r"test_\d+_\d+\.pickle")
CONSUMED_SUFFIX = ".consumed"
"""A learner that keeps the files it added until its checkpoint holds them renames them ``traj_<n>.pickle.consumed``
(:class:`~sb3_vlm.workflows.bridge.BufferDirectoryBridge`); they are not read again."""
_ACTOR_DIR = re.compile(r"actor_\d+")


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not loaded, and why."""

    path: Path
    reason: str


@dataclass
class LoadResult:
    """What :func:`load_trajectories` read.

    :param trajectories: Loaded episodes, in file order.
    :param skipped: Files left out, each with its reason.
    """

    trajectories: list[Trajectory] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return len(self.trajectories)

    @property
    def transitions(self) -> list[Transition]:
        """All transitions, episode after episode."""
        return [t for traj in self.trajectories for t in traj.transitions]

    @property
    def n_transitions(self) -> int:
        return sum(len(traj.transitions) for traj in self.trajectories)

    @property
    def success_rate(self) -> float | None:
        """Fraction of episodes that succeeded, over those that record success; ``None`` if none does."""
        known = [traj.success for traj in self.trajectories if traj.success is not None]
        return float(np.mean(known)) if known else None

    @property
    def mean_nav_metric(self) -> float | None:
        """Mean nav metric over episodes that record one; ``None`` if none does."""
        known = [traj.nav_metric for traj in self.trajectories if traj.nav_metric is not None]
        return float(np.mean(known)) if known else None


def natural_key(path: Path) -> list[Any]:
    """Sort key ordering ``traj_2`` before ``traj_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _candidates(root: Path, include_test: bool) -> list[Path]:
    found = [
        p
        for p in root.rglob("traj_*.pickle*")
        if _ACTOR_DIR.fullmatch(p.parent.name) and not p.name.endswith(CONSUMED_SUFFIX)
    ]
    if include_test:
        found += root.rglob("test_*.pickle*")
    return sorted((p for p in found if p.is_file()), key=natural_key)


def load_trajectories(
    root: str | os.PathLike,
    *,
    params: ParamTable,
    image_size: tuple[int, int] | None = (56, 84),
    include_test: bool = False,
    min_age_s: float = 2.0,
) -> LoadResult:
    """Read every complete trajectory pickle under ``root`` (see the module docstring for the file rule).

    :param root: Buffer directory holding ``actor_<id>/traj_<n>.pickle`` files (any depth).
    :param params: Planner parameter table (e.g. ``envs.planners.DWA_PARAMS``); actions are scaled with its
        ``to_unit`` and must have ``len(params)`` entries (FTRL: or ``len(params) + 2``, the two velocities dropped).
    :param image_size: ``(height, width)`` the FTRL ``img_PIL`` images are resized to (bilinear, aspect not kept);
        ``None`` keeps their size. Must match the image observation of the buffer to fill.
    :param include_test: Also read ``test_<id>_<n>.pickle`` files anywhere under ``root``.
    :param min_age_s: Files modified less than this many seconds ago are skipped as still being written.
    :return: Loaded episodes and skipped files with reasons.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"load_trajectories: root must be a directory, got {str(root)!r}")
    result = LoadResult()
    now = time.time()
    for path in _candidates(root, include_test):
        records, reason = _read(path, now, min_age_s)
        if reason is None:
            try:
                result.trajectories.append(parse_episode(path, records, params, image_size))
            except SchemaError as e:
                reason = f"wrong schema: {e}"
        if reason is not None:
            result.skipped.append(SkippedFile(path, reason))
    return result


def _read(path: Path, now: float, min_age_s: float) -> tuple[Any, str | None]:
    """The records of a candidate file, or why it is skipped: an incomplete name or a recent change (still being
    written), unreadable, empty, refused by the restricted unpickler, corrupt."""
    if not (_TRAJ_NAME.fullmatch(path.name) or _TEST_NAME.fullmatch(path.name)):
        return None, "incomplete name: still being written"
    try:
        age = now - path.stat().st_mtime
        if age < min_age_s:
            return None, f"still being written: modified {age:.1f} s ago (min_age_s={min_age_s})"
        data = path.read_bytes()
    except OSError as e:  # removed or renamed by its writer since the directory scan
        return None, f"unreadable: {e}"
    if not data:
        return None, "empty file"
    try:
        return safe_loads(data, source=str(path)), None
    except UnsafePickleError as e:
        return None, f"refused: global {e.global_name!r} is not allowed"
    except Exception as e:  # noqa: BLE001 - any decoding failure (truncated/corrupt bytes) means: skip this file
        return None, f"corrupt or truncated pickle: {type(e).__name__}: {e}"
