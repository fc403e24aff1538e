"""Collection: BarnNav episodes driven by a server's, a policy's or the default parameters, written in FTRL's
collection layout (docs/compat/ftrl.md §5.3-5.7), as ``sb3-vlm collect`` does. The files, the differences from FTRL
and the per-step ``info`` values: docs/guide/ftrl_workflow.md "What the collector writes"."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from envs import BarnNav
from envs.nav_env import resolve_world_ids
from envs.planners import ParamTable
from sb3_vlm._validation import check_int, settings_from
from sb3_vlm.formats.ftrl_files import (
    FTRL_IMAGE_SIZE,
    METHOD,
    read_signal,
    signal_stamp,
    spread_tail_reward,
)
from sb3_vlm.formats.ftrl_sft import SFTWriter, write_sft_json
from sb3_vlm.rewards.records import judge_ftrl_episode
from sb3_vlm.rewards.wrappers import EpisodeFrames
from sb3_vlm.workflows.actor_files import EPISODES_LOG, ActorFiles
from sb3_vlm.workflows.collection_reports import CollectSummary, EpisodeReport
from sb3_vlm.workflows.sources import Frame, ParameterSource

__all__ = ["EPISODES_LOG", "CollectSettings", "CollectSummary", "EpisodeReport", "MAX_SAVE_TIME", "collect"]

logger = logging.getLogger(__name__)

MAX_SAVE_TIME = 70.0
"""FTRL does not save episodes lasting this long (s) or more (docs/compat/ftrl.md §5.3 step 6)."""
SLOW_SPEED = 0.05
"""``recovery`` counts end-of-step linear speeds at or below this (m/s) as slow."""
_MAX_HISTORY = 8
"""Earlier frames of the episode kept for the server's history encoder (FTRL's use 2 to 4)."""
_MIN_DISPLACEMENT = 1e-3
"""Per-step displacements shorter than this (m) have no direction and are left out of ``smoothness``."""


# ------------------------------------------------------------------------------------------------------- collection


@dataclass
class CollectSettings:
    """How :func:`collect` runs and saves episodes (see the module docstring)."""

    actor_id: int = 0
    """Actor id: ``actor_<id>/``, ``test_<id>_<n>.pickle``."""
    episodes: int = 1
    """Episodes to run (saved or not)."""
    worlds: str | Sequence[int] | None = None
    """Worlds run in turn, episode ``e`` in ``worlds[e % len(worlds)]``: a list of ids, ``"train"``, ``"test"`` or
    ``"all"``; None: world ``actor_id`` (FTRL's actor runs its own world)."""
    barn_dir: str | os.PathLike | None = None
    """Directory of real BARN worlds, or None for the generated ones."""
    seed: int | None = 0
    """Seed of the first reset (the following episodes continue its generator); None: unseeded."""
    mode: str = "train"
    """``"train"`` (``actor_<id>/traj_<n>.pickle``) or ``"test"`` (``test_sync/test_<id>_<n>.pickle``)."""
    max_save_time: float = MAX_SAVE_TIME
    """Episodes lasting this long (s) or more are not saved (FTRL: 70); 0 saves them all."""
    progress_bar: bool = True
    """Show a tqdm bar over episodes."""
    judge_weight: float = 1.0
    """Weight of the score of :func:`collect`'s ``judge``."""
    sft: bool = False
    """Also write FTRL's supervised data set (:mod:`sb3_vlm.formats.ftrl_sft`): a ``data.csv`` row per step of each
    saved episode (the step's parameters and end-of-step velocity as labels, its start frame as the image), then
    ``<buffer>/sft_data.json`` from every actor's ``data.csv``."""
    follow_signal: bool = False
    """Obey the trainer's ``<buffer>/sync/continue.signal`` before each episode, as FTRL's collector does: ``train``
    runs a training episode, ``pause`` waits (polling every ``signal_poll`` s), ``test`` runs one test episode in each
    of ``test_worlds`` once per test phase, then waits for the phase to end; no file means ``train``. ``episodes`` then
    counts training episodes and ``mode`` is not used."""
    test_worlds: str | Sequence[int] | None = None
    """Worlds of the test phases (same forms as ``worlds``); None: ``worlds``."""
    signal_poll: float = 0.5
    """Seconds between reads of the signal file while waiting."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Other :class:`envs.nav_env.NavBatch` arguments (``max_steps``, ``time_step``, ``reward``...)."""

    def __post_init__(self) -> None:
        if self.mode not in ("train", "test"):
            raise ValueError(f"CollectSettings: mode must be 'train' or 'test', got {self.mode!r}")
        check_int(self.episodes, "episodes", owner="CollectSettings")
        check_int(self.actor_id, "actor_id", 0, owner="CollectSettings")
        if not self.signal_poll > 0:
            raise ValueError(f"CollectSettings: signal_poll must be > 0 s, got {self.signal_poll!r}")


@dataclass
class _Track:
    """Running path statistics of an episode, for FTRL's per-step ``info`` values (see the module docstring)."""

    position: np.ndarray  # [2] m, at the end of the last step
    slow: int = 0
    collisions: int = 0
    smoothness: float = 0.0
    heading: float | None = None

    def update(self, velocity: np.ndarray, info: dict[str, Any], steps: int) -> dict[str, Any]:
        """Count the step that ended with ``velocity`` and ``info`` (``steps`` so far); its FTRL info values."""
        self.slow += bool(velocity[0] <= SLOW_SPEED)
        self.collisions += info["status"] == "collision"
        position = np.asarray(info["pose"][:2], dtype=np.float64)
        move, self.position = position - self.position, position
        if np.hypot(*move) >= _MIN_DISPLACEMENT:
            heading = float(np.arctan2(move[1], move[0]))
            if self.heading is not None:
                self.smoothness -= abs((heading - self.heading + np.pi) % (2 * np.pi) - np.pi)
            self.heading = heading
        return {
            "world": info["world"],
            "time": float(info["time"]),
            "collision": int(self.collisions),
            "status": info["status"],
            "recovery": (self.slow + 1e-4) / (steps + 1e-4),
            "smoothness": float(self.smoothness),
        }


@dataclass
class _Episode:
    """The episode being run: the current observation and what has been recorded."""

    laser: np.ndarray
    image: np.ndarray  # scene at the start of the next step
    png: bytes  # the same as PNG bytes
    velocity: np.ndarray  # [2] float64, at the start of the next step
    track: _Track
    frames: list[Path]  # frame files written
    judged: EpisodeFrames | None  # frames kept for the judge
    history: list[bytes] = field(default_factory=list)  # earlier frames, newest first
    records: list[list[Any]] = field(default_factory=list)  # FTRL records
    # per step: start frame number, parameters, start and end velocity (the rows of FTRL's SFT data)
    sft_rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    from_source: int = 0  # steps whose parameters came from the source


class _Collector:
    """State of one collecting process: the env, its parameter source and judge, and the actor's files."""

    def __init__(
        self, buffer: Path, source: ParameterSource | None, env: BarnNav, settings: CollectSettings, judge: Any = None
    ):
        self.buffer, self.source, self.env, self.settings, self.judge = buffer, source, env, settings, judge
        self.mode = "train"
        """Mode of the current episode: where it is saved."""
        self.params: ParamTable = env.batch.params
        # float64 copies of the table (its arrays are float32): the recorded defaults read 1.57, not 1.5700000524
        specs = self.params.specs
        self.low, self.high, self.default = (
            np.array([getattr(s, attr) for s in specs], dtype=np.float64) for attr in ("low", "high", "default")
        )
        self.files = ActorFiles(buffer, settings.actor_id)
        self.sft = SFTWriter(self.files.actor_dir, self.params.names, METHOD) if settings.sft else None

    def _render(self) -> tuple[np.ndarray, bytes, Path]:
        """Render the scene now (400 x 600), write it as the next frame; return pixels, PNG bytes and the file."""
        image = self.env.batch.costmap_obs(FTRL_IMAGE_SIZE)[0]
        return (image, *self.files.write_frame(image))

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

    def _velocity(self) -> np.ndarray:
        return self.env.batch.velocity_obs()[0].astype(np.float64)

    def episode(self, world_id: int, seed: int | None, mode: str = "train") -> EpisodeReport:
        """Run one episode in ``world_id`` and save it (as a ``mode`` episode) if FTRL would
        (docs/compat/ftrl.md §5.3)."""
        self.mode = mode
        laser, info = self.env.reset(seed=seed, options={"world_id": world_id})
        image, png, path = self._render()
        judged = None if self.judge is None else EpisodeFrames("terminal", 1, 4 * self.judge.num_frames)
        if judged is not None:
            judged.reset(image)
        track = _Track(np.asarray(info["pose"][:2], dtype=np.float64))
        run = _Episode(laser, image, png, self._velocity(), track, [path], judged)
        done = False
        while not done:
            done, info = self._step(run)
        run.records[-1][5] = float(info["opt_time"])
        run.records[-1][6] = float(info["nav_metric"])
        return self._finish(run)

    def _step(self, run: _Episode) -> tuple[bool, dict[str, Any]]:
        """One step of ``run``: choose the parameters, step the env, write the frame, record it; (done, info)."""
        params, used_source = self._choose(Frame(run.image, run.png, run.velocity, run.laser, tuple(run.history)))
        run.from_source += used_source
        run.laser, reward, terminated, truncated, info = self.env.step(params.astype(np.float32))
        done = terminated or truncated
        start_image, start_velocity, start_frame = run.image, run.velocity, self.files.next_frame - 1
        run.history = [run.png, *run.history[: _MAX_HISTORY - 1]]
        run.image, run.png, path = self._render()
        run.frames.append(path)
        if run.judged is not None:
            run.judged.add(run.image)
        run.velocity = self._velocity()
        run.sft_rows.append((start_frame, params, start_velocity, run.velocity))
        ftrl_info = run.track.update(run.velocity, info, len(run.records) + 1)
        ftrl_info.update(
            img_label=path.name,
            img_PIL=Image.fromarray(start_image),
            last_state=[float(start_velocity[0]), float(start_velocity[1])],
        )
        version = getattr(self.source, "model_version", None)
        if used_source and version is not None:  # which served policy chose this step's parameters
            ftrl_info["model_version"] = int(version)
        obs = np.array([start_velocity], dtype=np.float64)
        run.records.append([obs, params, float(reward), bool(done), ftrl_info, 0.0, 0.0])
        return done, info

    def _finish(self, run: _Episode) -> EpisodeReport:
        """Spread the tail reward, add the judge's score, save the episode if FTRL would (else delete its frames)."""
        records = run.records
        spread_tail_reward(records)
        if run.judged is not None:  # the judge's score joins the last reward; info says judge_score or judge_failure
            judge_ftrl_episode(records, run.judged.frames(), self.judge, self.settings.judge_weight)
        last = records[-1][4]
        report = EpisodeReport(
            world=last["world"],
            steps=len(records),
            status=last["status"],
            time=last["time"],
            reward=float(sum(r[2] for r in records)),
            nav_metric=records[-1][6],
            source_steps=run.from_source,
            fallback_steps=len(records) - run.from_source if self.source is not None else 0,
        )
        report.skipped = self.files.skip_reason(records, self.mode, self.settings.max_save_time)
        if report.skipped is None:
            report.path = self.files.save(records, self.mode)
            if self.sft is not None:
                for row in run.sft_rows:
                    self.sft.add(*row)
        else:
            for frame_path in run.frames:  # nobody will read them: FTRL left them on disk
                frame_path.unlink(missing_ok=True)
        return report


def collect(
    buffer: str | os.PathLike,
    source: ParameterSource | None = None,
    settings: CollectSettings | None = None,
    *,
    judge: Any = None,
    **kwargs: Any,
) -> CollectSummary:
    """Run BarnNav episodes and write them in FTRL's layout under ``buffer`` (see the module docstring).

    :param buffer: Buffer directory (FTRL: ``buffer/<policy_name>``).
    :param source: Parameter source (:class:`ServerSource`, :class:`LocalPolicySource`, any callable of a
        :class:`Frame`), or None for the default parameters.
    :param settings: What to run and save (:class:`CollectSettings`; None: its defaults). The call form of sb3-vlm
        0.1, its names as keyword arguments of ``collect`` (NavBatch arguments among them), still works for one
        release and warns (``DeprecationWarning``).
    :param judge: A :class:`sb3_vlm.rewards.VLMJudge` scoring each episode from its scene frames (sampled evenly),
        or None. Its score, times ``settings.judge_weight``, is added to the last record's reward (after FTRL's tail
        spreading) and written as ``info["judge_score"]``; a failed judgement leaves the reward and writes
        ``info["judge_failure"]``.
    :return: One report per episode.
    :raises ValueError: for a world set that does not exist.
    """
    if kwargs and settings is None:  # sb3-vlm 0.1: the settings and NavBatch arguments mixed as keywords
        names = {f.name for f in fields(CollectSettings)}
        env_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        kwargs = {k: v for k, v in kwargs.items() if k in names} | ({"env_kwargs": env_kwargs} if env_kwargs else {})
    settings = settings_from(CollectSettings, settings, (), kwargs, "collect")
    world_ids = resolve_world_ids(
        [settings.actor_id] if settings.worlds is None else settings.worlds, settings.barn_dir
    )
    test_ids = world_ids if settings.test_worlds is None else resolve_world_ids(settings.test_worlds, settings.barn_dir)
    worlds = sorted(set(world_ids) | set(test_ids))
    env = BarnNav(barn_dir=settings.barn_dir, worlds=worlds, **settings.env_kwargs)
    buffer = Path(buffer)
    collector = _Collector(buffer, source, env, settings, judge)
    summary = _run_episodes(collector, settings, world_ids, test_ids)
    if settings.sft:
        write_sft_json(buffer, collector.params.planner, collector.params.names)
    return summary


def _run_episodes(
    collector: _Collector, settings: CollectSettings, world_ids: list[int], test_ids: list[int]
) -> CollectSummary:
    """The episodes of :func:`collect`: ``settings.episodes`` in ``world_ids`` in turn, and with ``follow_signal``
    the test phases in ``test_ids`` the signal file asks for."""
    summary = CollectSummary()
    desc, disable = f"collect actor_{settings.actor_id}", not settings.progress_bar
    bar = tqdm(total=settings.episodes, desc=desc, unit="ep", disable=disable)
    # tested: the signal write whose test episodes this collector ran. A learner may end a test phase and start the
    # next one between two polls (a short cycle filled by the other collectors): the word is "test" both times, the
    # write is not, and the new phase gets its episodes.
    done, tested = 0, None
    while done < settings.episodes:
        seed = settings.seed if not summary.episodes else None
        if settings.follow_signal:
            signal, stamp = read_signal(collector.buffer) or "train", signal_stamp(collector.buffer)
            if signal == "pause" or (signal == "test" and tested == stamp):
                time.sleep(settings.signal_poll)
                continue
            tested = stamp if signal == "test" else None
            if signal == "test":
                for world in test_ids:
                    summary.episodes.append(collector.episode(world, seed, "test"))
                    seed = None
                continue
        mode = "train" if settings.follow_signal else settings.mode
        report = collector.episode(world_ids[done % len(world_ids)], seed, mode)
        summary.episodes.append(report)
        done += 1
        bar.update()
        bar.set_postfix(status=report.status, nav=f"{report.nav_metric:.3f}", saved=len(summary.saved))
    bar.close()
    return summary
