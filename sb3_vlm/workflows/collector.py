"""Collection: BarnNav episodes driven by a server's, a policy's or the default parameters, written in FTRL's
collection layout (docs/compat/ftrl.md §5.3-5.7), as ``sb3-vlm collect`` does. The files, the differences from FTRL
and the per-step ``info`` values: docs/guide/ftrl_workflow.md "What the collector writes"."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from envs import BarnNav
from envs.nav_env import resolve_world_ids
from envs.planners import ParamTable
from sb3_vlm.formats.ftrl_files import (
    FTRL_IMAGE_SIZE,
    METHOD,
    RESULTS_FILE,
    atomic_write,
    frame_name,
    next_number,
    png_bytes,
    read_signal,
    results_line,
    spread_tail_reward,
    trajectory_name,
    write_trajectory,
)
from sb3_vlm.formats.ftrl_sft import SFTWriter, write_sft_json
from sb3_vlm.rewards.records import judge_ftrl_episode
from sb3_vlm.rewards.wrappers import EpisodeFrames
from sb3_vlm.workflows.collection_reports import CollectSummary, EpisodeReport
from sb3_vlm.workflows.sources import Frame, ParameterSource

__all__ = ["CollectSummary", "EpisodeReport", "MAX_SAVE_TIME", "collect"]

logger = logging.getLogger(__name__)

MAX_SAVE_TIME = 70.0
"""FTRL does not save episodes lasting this long (s) or more (docs/compat/ftrl.md §5.3 step 6)."""
SLOW_SPEED = 0.05
"""``recovery`` counts end-of-step linear speeds at or below this (m/s) as slow."""
_MAX_HISTORY = 8
EPISODES_LOG = "episodes.log"
"""Per-actor ledger of the saved train episodes, ``traj_<n>.pickle <steps>`` per line (see the module docstring)."""
_LOG_LINE = re.compile(r"^traj_(\d+)\.pickle (\d+)$", re.MULTILINE)
"""Earlier frames of the episode kept for the server's history encoder (FTRL's use 2 to 4)."""
_MIN_DISPLACEMENT = 1e-3
"""Per-step displacements shorter than this (m) have no direction and are left out of ``smoothness``."""


# ------------------------------------------------------------------------------------------------------- collection


class _Collector:
    """State of one collecting process: the env, the counters of frames and pickles, the output directories."""

    def __init__(
        self,
        buffer: Path,
        source: ParameterSource | None,
        actor_id: int,
        env: BarnNav,
        max_save_time: float,
        judge: Any = None,
        judge_weight: float = 1.0,
        sft: bool = False,
    ):
        self.buffer, self.source, self.actor_id, self.env = buffer, source, actor_id, env
        self.mode = "train"
        """Mode of the current episode: where it is saved."""
        self.max_save_time = max_save_time
        self.judge, self.judge_weight = judge, judge_weight
        self.params: ParamTable = env.batch.params
        # float64 copies of the table (its arrays are float32): the recorded defaults read 1.57, not 1.5700000524
        specs = self.params.specs
        self.low, self.high, self.default = (
            np.array([getattr(s, attr) for s in specs], dtype=np.float64) for attr in ("low", "high", "default")
        )
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
        self.sft = SFTWriter(self.actor_dir, self.params.names, METHOD) if sft else None

    def _recover(self) -> set[int]:
        """Finish what a killed collector of this actor left (see the module docstring); the logged numbers."""
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

    def _render(self) -> tuple[np.ndarray, bytes, Path]:
        """Render the scene now (400 x 600), write it as the next frame; return pixels, PNG bytes and the file."""
        image = self.env.batch.costmap_obs(FTRL_IMAGE_SIZE)[0]
        data = png_bytes(image)
        path = self.actor_dir / frame_name(self.next_frame)
        atomic_write(path, data)
        self.next_frame += 1
        return image, data, path

    def _choose(self, frame: Frame) -> tuple[np.ndarray, bool]:
        """Clipped parameters ``[P]`` float64 for this step and whether they came from the source."""
        p = len(self.params)
        if self.source is not None:
            raw = self.source(frame)
            if raw is not None:
                raw = np.asarray(raw, dtype=np.float64).ravel()
                if raw.size >= p and np.all(np.isfinite(raw[:p])):
                    return np.clip(raw[:p], self.low, self.high), True
                logger.warning("parameter source returned %s; using the default parameters", raw[: p + 2])
        return self.default.copy(), False

    def episode(self, world_id: int, seed: int | None, mode: str = "train") -> EpisodeReport:
        """Run one episode in ``world_id`` and save it (as a ``mode`` episode) if FTRL would
        (docs/compat/ftrl.md §5.3)."""
        self.mode = mode
        laser, info = self.env.reset(seed=seed, options={"world_id": world_id})
        image, data, path = self._render()
        frames = [path]
        judged = None if self.judge is None else EpisodeFrames("terminal", 1, 4 * self.judge.num_frames)
        if judged is not None:
            judged.reset(image)
        history: list[bytes] = []
        velocity = self.env.batch.velocity_obs()[0].astype(np.float64)
        positions = [np.asarray(info["pose"][:2], dtype=np.float64)]
        records: list[list[Any]] = []
        sft_rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # frame, params, start/end velocity
        slow = collisions = from_source = 0
        smoothness = 0.0
        heading: float | None = None
        done = False
        while not done:
            frame = Frame(image, data, velocity, laser, tuple(history))
            params, used_source = self._choose(frame)
            from_source += used_source
            laser, reward, terminated, truncated, info = self.env.step(params.astype(np.float32))
            done = terminated or truncated
            start_image, start_velocity, start_frame = image, velocity, self.next_frame - 1
            history = [data, *history[: _MAX_HISTORY - 1]]
            image, data, path = self._render()
            frames.append(path)
            if judged is not None:
                judged.add(image)
            velocity = self.env.batch.velocity_obs()[0].astype(np.float64)
            sft_rows.append((start_frame, params, start_velocity, velocity))

            slow += bool(velocity[0] <= SLOW_SPEED)
            collisions += info["status"] == "collision"
            positions.append(np.asarray(info["pose"][:2], dtype=np.float64))
            move = positions[-1] - positions[-2]
            if np.hypot(*move) >= _MIN_DISPLACEMENT:
                new_heading = float(np.arctan2(move[1], move[0]))
                if heading is not None:
                    smoothness -= abs((new_heading - heading + np.pi) % (2 * np.pi) - np.pi)
                heading = new_heading
            steps = len(records) + 1
            ftrl_info = {
                "world": info["world"],
                "time": float(info["time"]),
                "collision": int(collisions),
                "status": info["status"],
                "recovery": (slow + 1e-4) / (steps + 1e-4),
                "smoothness": float(smoothness),
                "img_label": path.name,
                "img_PIL": Image.fromarray(start_image),
                "last_state": [float(start_velocity[0]), float(start_velocity[1])],
            }
            version = getattr(self.source, "model_version", None)
            if used_source and version is not None:  # which served policy chose this step's parameters
                ftrl_info["model_version"] = int(version)
            obs = np.array([start_velocity], dtype=np.float64)
            records.append([obs, params, float(reward), bool(done), ftrl_info, 0.0, 0.0])

        records[-1][5] = float(info["opt_time"])
        records[-1][6] = float(info["nav_metric"])
        spread_tail_reward(records)
        if judged is not None:  # the judge's score joins the last reward; info says judge_score or judge_failure
            judge_ftrl_episode(records, judged.frames(), self.judge, self.judge_weight)
        last = records[-1][4]
        report = EpisodeReport(
            world=last["world"],
            steps=len(records),
            status=last["status"],
            time=last["time"],
            reward=float(sum(r[2] for r in records)),
            nav_metric=records[-1][6],
            source_steps=from_source,
            fallback_steps=len(records) - from_source if self.source is not None else 0,
        )
        report.skipped = self._skip_reason(records)
        if report.skipped is None:
            report.path = self._save(records)
            if self.sft is not None:
                for row in sft_rows:
                    self.sft.add(*row)
        else:
            for frame_path in frames:  # nobody will read them: FTRL left them on disk
                frame_path.unlink(missing_ok=True)
        return report

    def _skip_reason(self, records: list[list[Any]]) -> str | None:
        """FTRL's save rules (docs/compat/ftrl.md §5.3 step 6); the two "stuck" cases are logged to
        ``actor_error/<id>.txt``."""
        if len(records) <= 1:
            return "1 step or less"
        info = records[-1][4]
        reason = None
        if info["recovery"] >= 1.0 - 1e-9 and info["status"] == "timeout":
            reason = "timeout without moving (recovery 1.0)"
        elif self.max_save_time > 0 and info["time"] >= self.max_save_time:
            reason = f"time {info['time']:.1f} s >= {self.max_save_time:g} s"
        if reason is not None:
            error_dir = self.buffer / "actor_error"
            error_dir.mkdir(parents=True, exist_ok=True)
            with open(error_dir / f"{self.actor_id}.txt", "a") as f:
                f.write(f"not saved ({reason}): {results_line(self.mode, records)}\n")
        return reason

    def _save(self, records: list[list[Any]]) -> Path:
        test = self.mode == "test"
        n = self.next_traj[self.mode]
        self.next_traj[self.mode] += 1
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
            f.write(results_line(self.mode, records) + "\n")
        if test:
            sync = self.buffer / "sync"
            sync.mkdir(parents=True, exist_ok=True)
            atomic_write(sync / f"actor_{self.actor_id}.done", f"test:{n}".encode())
        return path


def collect(
    buffer: str | os.PathLike,
    source: ParameterSource | None = None,
    *,
    actor_id: int = 0,
    episodes: int = 1,
    worlds: str | Sequence[int] | None = None,
    barn_dir: str | os.PathLike | None = None,
    seed: int | None = 0,
    mode: str = "train",
    max_save_time: float = MAX_SAVE_TIME,
    progress_bar: bool = True,
    judge: Any = None,
    judge_weight: float = 1.0,
    sft: bool = False,
    follow_signal: bool = False,
    test_worlds: str | Sequence[int] | None = None,
    signal_poll: float = 0.5,
    **env_kwargs: Any,
) -> CollectSummary:
    """Run ``episodes`` BarnNav episodes and write them in FTRL's layout under ``buffer`` (see the module docstring).

    :param buffer: Buffer directory (FTRL: ``buffer/<policy_name>``).
    :param source: Parameter source (:class:`ServerSource`, :class:`LocalPolicySource`, any callable of a
        :class:`Frame`), or None for the default parameters.
    :param actor_id: Actor id: ``actor_<id>/``, ``test_<id>_<n>.pickle``.
    :param episodes: Episodes to run (saved or not).
    :param worlds: Worlds run in turn, episode ``e`` in ``worlds[e % len(worlds)]``: a list of ids, ``"train"``,
        ``"test"`` or ``"all"``; None: world ``actor_id`` (FTRL's actor runs its own world).
    :param barn_dir: Directory of real BARN worlds, or None for the generated ones.
    :param seed: Seed of the first reset (the following episodes continue its generator); None: unseeded.
    :param mode: ``"train"`` (``actor_<id>/traj_<n>.pickle``) or ``"test"`` (``test_sync/test_<id>_<n>.pickle``).
    :param max_save_time: Episodes lasting this long (s) or more are not saved (FTRL: 70); 0 saves them all.
    :param progress_bar: Show a tqdm bar over episodes.
    :param judge: A :class:`sb3_vlm.rewards.VLMJudge` scoring each episode from its scene frames (sampled evenly),
        or None. Its score, times ``judge_weight``, is added to the last record's reward (after FTRL's tail
        spreading) and written as ``info["judge_score"]``; a failed judgement leaves the reward and writes
        ``info["judge_failure"]``.
    :param judge_weight: Weight of the judge's score.
    :param sft: Also write FTRL's supervised data set (:mod:`sb3_vlm.formats.ftrl_sft`): a ``data.csv`` row per
        step of each saved episode (the step's parameters and end-of-step velocity as labels, its start frame as the
        image), then ``<buffer>/sft_data.json`` from every actor's ``data.csv``.
    :param follow_signal: Obey the trainer's ``<buffer>/sync/continue.signal`` before each episode, as FTRL's
        collector does: ``train`` runs a training episode, ``pause`` waits (polling every ``signal_poll`` s),
        ``test`` runs one test episode in each of ``test_worlds`` once per test phase, then waits for the phase to
        end; no file means ``train``. ``episodes`` then counts training episodes and ``mode`` is not used.
    :param test_worlds: Worlds of the test phases (same forms as ``worlds``); None: ``worlds``.
    :param signal_poll: Seconds between reads of the signal file while waiting.
    :param env_kwargs: Other :class:`envs.nav_env.NavBatch` arguments (``max_steps``, ``time_step``, ``reward``...).
    :return: One report per episode.
    :raises ValueError: for a bad mode, episode count or world set.
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if not (isinstance(episodes, int) and episodes > 0):
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    if not (isinstance(actor_id, int) and actor_id >= 0):
        raise ValueError(f"actor_id must be an int >= 0, got {actor_id!r}")
    world_ids = resolve_world_ids([actor_id] if worlds is None else worlds, barn_dir)
    test_ids = world_ids if test_worlds is None else resolve_world_ids(test_worlds, barn_dir)
    env = BarnNav(barn_dir=barn_dir, worlds=sorted(set(world_ids) | set(test_ids)), **env_kwargs)
    buffer = Path(buffer)
    collector = _Collector(buffer, source, actor_id, env, max_save_time, judge, judge_weight, sft)
    summary = CollectSummary()
    bar = tqdm(total=episodes, desc=f"collect actor_{actor_id}", unit="ep", disable=not progress_bar)
    done, tested = 0, False  # tested: this test phase's episodes are run
    while done < episodes:
        if follow_signal:
            signal = read_signal(buffer) or "train"
            if signal == "pause" or (signal == "test" and tested):
                time.sleep(signal_poll)
                continue
            tested = signal == "test"
            if tested:
                for world in test_ids:
                    summary.episodes.append(collector.episode(world, seed if not summary.episodes else None, "test"))
                continue
        seed_now = seed if not summary.episodes else None
        report = collector.episode(world_ids[done % len(world_ids)], seed_now, "train" if follow_signal else mode)
        summary.episodes.append(report)
        done += 1
        bar.update()
        bar.set_postfix(status=report.status, nav=f"{report.nav_metric:.3f}", saved=len(summary.saved))
    bar.close()
    if sft:
        write_sft_json(buffer, collector.params.planner, collector.params.names)
    return summary
