"""Files FTRL's collector writes (docs/compat/ftrl.md §5.3-5.7), written here the same way:
``actor_<id>/FTRL_<k:06d>.png`` frames, ``traj_<n>.pickle`` / ``test_<id>_<n>.pickle`` episodes (pickle protocol 4,
atomic), ``trajectory_results.txt`` lines, FTRL's tail-spread reward rule, the trainer's ``sync/continue.signal``
(docs/compat/ftrl.md §5.8) and a policy folder's ``exploration_noise.pkl`` (docs/compat/ftrl.md §3.3).
:mod:`sb3_vlm.formats.trajectories` reads the episodes back."""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "EXPLORATION_NOISE",
    "FTRL_IMAGE_SIZE",
    "METHOD",
    "PICKLE_PROTOCOL",
    "RESULTS_FILE",
    "SIGNALS",
    "atomic_write",
    "frame_name",
    "next_number",
    "png_bytes",
    "read_signal",
    "results_line",
    "signal_stamp",
    "spread_tail_reward",
    "trajectory_name",
    "write_exploration_noise",
    "write_signal",
    "write_trajectory",
]

FTRL_IMAGE_SIZE = (400, 600)
"""(H, W) of FTRL's rendered frames (docs/compat/ftrl.md §5.6)."""
METHOD = "FTRL"
"""Frame name prefix, ``<METHOD>_<k:06d>.png``."""
RESULTS_FILE = "trajectory_results.txt"
"""Per actor directory: one :func:`results_line` per episode (docs/compat/ftrl.md §5.7)."""
TAIL_STEPS = 4
"""A failed episode's last reward is spread over this many last records, halving each step back
(docs/compat/ftrl.md §5.3 step 5)."""
PICKLE_PROTOCOL = 4
"""Python 3.8's default protocol, what FTRL's collector wrote (docs/compat/ftrl.md §5.5)."""
SIGNAL_FILE = ("sync", "continue.signal")
"""``<buffer>/sync/continue.signal``: what the collectors do next, one word of :data:`SIGNALS`
(docs/compat/ftrl.md §5.3 step 6)."""
SIGNALS = ("train", "test", "pause")
"""``train``: save training episodes; ``test``: run and save test episodes; ``pause``: wait."""


def frame_name(k: int) -> str:
    """``FTRL_000123.png``: the name of frame ``k`` of an actor directory."""
    return f"{METHOD}_{k:06d}.png"


def trajectory_name(n: int, test_actor: int | None = None) -> str:
    """``traj_<n>.pickle`` (train) or ``test_<actor>_<n>.pickle`` (test)."""
    return f"traj_{n}.pickle" if test_actor is None else f"test_{test_actor}_{n}.pickle"


def next_number(directory: Path, pattern: str) -> int:
    """1 + the largest number captured by ``pattern`` among the names in ``directory`` (0 if none)."""
    regex = re.compile(pattern)
    if not directory.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in directory.iterdir() if (m := regex.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG file bytes of a uint8 RGB image ``[H, W, 3]``."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def atomic_write(path: Path, data: bytes, before_replace: Callable[[], None] | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one (temp file + rename).

    :param before_replace: Called once the temporary file ``<name>.<pid>.tmp`` is complete and synced, just before
        the rename (e.g. to log the commit: after a crash between the two, the complete temporary file can be
        renamed by whoever reads the log).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_trajectory(
    path: Path, records: Sequence[list[Any]], before_replace: Callable[[], None] | None = None
) -> Path:
    """Write one episode's records as FTRL's collector does (pickle protocol 4), atomically (``before_replace``: see
    :func:`atomic_write`)."""
    atomic_write(path, pickle.dumps(list(records), protocol=PICKLE_PROTOCOL), before_replace)
    return path


def results_line(mode: str, records: Sequence[list[Any]]) -> str:
    """The ``trajectory_results.txt`` line of an episode (docs/compat/ftrl.md §5.7); ``Reward`` sums the recorded
    (tail-spread) rewards."""
    info, last = records[-1][4], records[-1]
    return (
        f"{'Train' if mode == 'train' else 'Test'}: Collision: {int(info['collision'])}, "
        f"Recovery: {info['recovery']:.6f}, Smoothness: {info['smoothness']:.6f}, Status: {info['status']}, "
        f"Time: {info['time']:.3f}, Reward: {sum(r[2] for r in records):.3f}, Opt_time: {last[5]:.3f}, "
        f"Nav_Metric: {last[6]:.3f}, World: {info['world']}"
    )


def spread_tail_reward(records: list[list[Any]]) -> None:
    """FTRL's rule (docs/compat/ftrl.md §5.3 step 5): if the episode did not end (last record not done) or ended in a
    collision, the last reward ``R`` overwrites the last ``min(4, T)`` rewards with ``R * 0.5**k``, ``k = 0`` being the
    last."""
    last = records[-1]
    if last[3] and last[4]["collision"] < 1:
        return
    reward = last[2]
    for k in range(min(TAIL_STEPS, len(records))):
        records[-1 - k][2] = reward * 0.5**k


def read_signal(buffer: str | os.PathLike) -> str | None:
    """The word in ``<buffer>/sync/continue.signal`` (surrounding blanks ignored), None if the file is missing or
    empty (being written by ``echo``).

    :raises ValueError: naming the file, for a word outside :data:`SIGNALS`.
    """
    path = Path(buffer).joinpath(*SIGNAL_FILE)
    try:
        word = path.read_text().strip()
    except FileNotFoundError:
        return None
    if word and word not in SIGNALS:
        raise ValueError(f"{path}: expected one of {list(SIGNALS)}, got {word[:40]!r}")
    return word or None


def signal_stamp(buffer: str | os.PathLike) -> tuple[int, int] | None:
    """Which write of ``<buffer>/sync/continue.signal`` is there now (inode, mtime in ns; every atomic write makes a
    new file), None if it is missing: two test phases in a row are two writes of the same word."""
    try:
        stat = Path(buffer).joinpath(*SIGNAL_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def write_signal(buffer: str | os.PathLike, signal: str) -> None:
    """Write ``signal`` (one of :data:`SIGNALS`) to ``<buffer>/sync/continue.signal``, atomically."""
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {list(SIGNALS)}, got {signal!r}")
    path = Path(buffer).joinpath(*SIGNAL_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, signal.encode())


EXPLORATION_NOISE = "exploration_noise.pkl"
"""In a policy folder: the exploration noise standard deviation, a pickled float (FTRL, docs/compat/ftrl.md §3.3)."""


def write_exploration_noise(directory: str | os.PathLike, std: float) -> Path:
    """Write ``std`` (Gaussian exploration noise, [-1, 1] action units) as ``directory/exploration_noise.pkl``."""
    path = Path(directory) / EXPLORATION_NOISE
    atomic_write(path, pickle.dumps(float(std), protocol=PICKLE_PROTOCOL))
    return path
