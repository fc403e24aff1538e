"""The files one collector actor writes under a buffer directory, in FTRL's layout: frames, trajectory pickles,
results lines, the ledger of saved train episodes, and what a killed collector left (see
:mod:`sb3_vlm.workflows.collector`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from sb3_vlm.formats.ftrl_files import (
    METHOD,
    RESULTS_FILE,
    atomic_write,
    frame_name,
    next_number,
    png_bytes,
    results_line,
    trajectory_name,
    write_trajectory,
)

__all__ = ["EPISODES_LOG", "ActorFiles"]

EPISODES_LOG = "episodes.log"
"""Per-actor ledger of the saved train episodes, ``traj_<n>.pickle <steps>`` per line."""
_LOG_LINE = re.compile(r"^traj_(\d+)\.pickle (\d+)$", re.MULTILINE)


class ActorFiles:
    """
    The files of actor ``actor_id`` under ``buffer``: ``actor_<id>/`` (frames, ``traj_<n>.pickle``, results, ledger),
    ``test_sync/test_<id>_<n>.pickle``, ``sync/actor_<id>.done`` and ``actor_error/<id>.txt``. Numbering continues
    after the files already there (and after the ledger: no ``n`` is used twice, even once a learner has deleted the
    files); what a killed collector left is finished or removed first.

    :param buffer: The buffer directory.
    :param actor_id: The actor.
    """

    def __init__(self, buffer: Path, actor_id: int):
        self.buffer, self.actor_id = buffer, actor_id
        self.actor_dir = buffer / f"actor_{actor_id}"
        self.actor_dir.mkdir(parents=True, exist_ok=True)
        self.test_dir = buffer / "test_sync"
        self.log = self.actor_dir / EPISODES_LOG
        logged = self._recover()
        self.next_traj = {
            "train": max(next_number(self.actor_dir, r"traj_(\d+)\.pickle(?:\.consumed)?"), max(logged, default=0) + 1),
            "test": max(next_number(self.test_dir, rf"test_{actor_id}_(\d+)\.pickle"), 1),
        }
        self.next_frame = next_number(self.actor_dir, rf"{METHOD}_(\d{{6}})\.png")

    def _recover(self) -> set[int]:
        """Finish what a killed collector of this actor left: a complete temporary pickle of a logged episode is
        renamed into place, any other temporary file deleted; the logged numbers."""
        text = self.log.read_text() if self.log.is_file() else ""
        if text and not text.endswith("\n"):  # a line cut off by the kill: its pickle was never renamed
            text = text[: text.rfind("\n") + 1]
            self.log.write_text(text)
        logged = {int(m.group(1)) for m in _LOG_LINE.finditer(text)}
        for tmp in self.actor_dir.glob("*.tmp"):
            match = re.fullmatch(r"traj_(\d+)\.pickle\.\d+\.tmp", tmp.name)
            if match and int(match.group(1)) in logged:
                os.replace(tmp, self.actor_dir / trajectory_name(int(match.group(1))))
            else:
                tmp.unlink()
        return logged

    def write_frame(self, image: np.ndarray) -> tuple[bytes, Path]:
        """Write ``image`` as the next frame ``FTRL_<k:06d>.png``; its PNG bytes and file."""
        data = png_bytes(image)
        path = self.actor_dir / frame_name(self.next_frame)
        atomic_write(path, data)
        self.next_frame += 1
        return data, path

    def skip_reason(self, records: list[list[Any]], mode: str, max_save_time: float) -> str | None:
        """Why FTRL would not save this episode (docs/compat/ftrl.md §5.3 step 6), or None; the two "stuck" cases are
        logged to ``actor_error/<id>.txt``."""
        if len(records) <= 1:
            return "1 step or less"
        info = records[-1][4]
        reason = None
        if info["recovery"] >= 1.0 - 1e-9 and info["status"] == "timeout":
            reason = "timeout without moving (recovery 1.0)"
        elif max_save_time > 0 and info["time"] >= max_save_time:
            reason = f"time {info['time']:.1f} s >= {max_save_time:g} s"
        if reason is not None:
            error_dir = self.buffer / "actor_error"
            error_dir.mkdir(parents=True, exist_ok=True)
            with open(error_dir / f"{self.actor_id}.txt", "a") as f:
                f.write(f"not saved ({reason}): {results_line(mode, records)}\n")
        return reason

    def save(self, records: list[list[Any]], mode: str) -> Path:
        """Write the episode's pickle (a train one logged in the ledger just before it is renamed into place) and its
        results line; a test one also marks ``sync/actor_<id>.done``. Returns the pickle."""
        test = mode == "test"
        n = self.next_traj[mode]
        self.next_traj[mode] += 1
        directory = self.test_dir if test else self.actor_dir
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / trajectory_name(n, self.actor_id if test else None)

        def log_commit() -> None:
            with open(self.log, "a") as f:
                f.write(f"{path.name} {len(records)}\n")
                f.flush()
                os.fsync(f.fileno())

        write_trajectory(path, records, None if test else log_commit)
        with open(self.actor_dir / RESULTS_FILE, "a") as f:
            f.write(results_line(mode, records) + "\n")
        if test:
            sync = self.buffer / "sync"
            sync.mkdir(parents=True, exist_ok=True)
            atomic_write(sync / f"actor_{self.actor_id}.done", f"test:{n}".encode())
        return path
