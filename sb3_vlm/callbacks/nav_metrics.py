"""Navigation metrics in training: :class:`NavMetricsCallback` (FTRL's logs, test evaluations and saved folders) and
the episode helpers it uses. Reads only what BarnNav puts in ``infos``; imports no simulator module."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_vlm.callbacks.checkpoint import STATE_JSON, find_checkpoint, save_policy_folder, save_training_checkpoint
from sb3_vlm.formats.ftrl_files import atomic_write

__all__ = ["NavMetricsCallback", "path_length", "run_episodes", "summarize"]

POLICY_STEP_PREFIX, BEST_MODEL_DIR, BEST_INFO = "policy_step_", "best_model", "best_info.txt"
"""FTRL's folders in the logging directory: ``policy_step_<k>/`` per improvement, ``best_model/best_info.txt``."""


def run_episodes(
    predict: Any, venv: VecEnv, seed: int | None = None, options: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Run one episode in each env of ``venv`` and return the final ``info`` of each.

    :param predict: ``obs -> actions`` (e.g. ``lambda o: model.predict(o, deterministic=True)[0]``).
    :param seed: Seed of the resets (env i gets ``seed + i``), so every call replays the same episodes.
    :param options: Per-env reset options (e.g. ``{"world_id": k}``).
    """
    venv.seed(seed)
    if options is not None:
        venv.set_options(options)
    obs = venv.reset()
    finals: list[dict[str, Any] | None] = [None] * venv.num_envs
    while any(f is None for f in finals):
        obs, _, dones, infos = venv.step(predict(obs))
        for i in np.flatnonzero(dones):
            if finals[i] is None:
                finals[i] = {k: v for k, v in infos[i].items() if k != "terminal_observation"}
    return finals  # type: ignore[return-value]


def path_length(trajectory: np.ndarray) -> float:
    """Length (m) of a driven ``[T, 2]`` trajectory."""
    return float(np.sum(np.linalg.norm(np.diff(np.asarray(trajectory, dtype=np.float64), axis=0), axis=1)))


def summarize(finals: list[dict[str, Any]]) -> dict[str, float]:
    """Rates of each end (success, collision, timeout, flip), mean nav metric, mean time (s) and, when the infos
    carry their ``trajectory``, mean path length (m) of final infos."""
    status = np.array([f["status"] for f in finals])
    stats = {f"{name}_rate": float(np.mean(status == name)) for name in ("success", "collision", "timeout", "flip")}
    stats["nav_metric"] = float(np.mean([f["nav_metric"] for f in finals]))
    stats["time"] = float(np.mean([f["time"] for f in finals]))
    if all("trajectory" in f for f in finals):
        stats["path_length"] = float(np.mean([path_length(f["trajectory"]) for f in finals]))
    return stats


class NavMetricsCallback(BaseCallback):
    """
    FTRL's TensorBoard keys (docs/compat/ftrl.md §4.6) beside SB3's own, its terminal summary and its saved folders.

    Over the last ``window`` (FTRL: 200) training episodes: ``train/Episode_reward``, ``train/Episode_length``
    (steps), ``train/Episode_nav_metric``, ``train/Success_rate``, ``train/Flip_rate``, ``train/Timeout_rate``,
    ``train/Collision`` (fraction ending in a collision), ``train/Status_counts/<status>``; running totals
    ``train/n_episode``, ``train/Steps``, ``train/Time`` (s), ``train/fps``; mirrors of the algorithm's
    ``train/Actor_loss``, ``train/Critic_loss``, ``train/Actor_grad_norm``, ``train/Critic_grad_norm``
    (``train/Exploration_noise`` comes from :class:`~sb3_vlm.callbacks.ExplorationNoiseScheduleCallback`).

    Every ``eval_freq`` steps, a deterministic evaluation on ``eval_env`` (one episode per env, held-out worlds,
    fixed seeds): ``train/Test_nav_metric``, ``train/Test_time`` (s), ``train/Test_length`` (driven path, m),
    ``train/Test_counts`` (episodes), ``train/Test_success_rate``; with ``summary``, FTRL's terminal summary is
    printed. When the test nav metric improves: the training checkpoint in ``best_path`` (resumable), and with
    ``policy_dir`` FTRL's folders there: ``policy_step_<k>/`` (``k`` = env steps) and ``best_model/`` (policy
    folders of :func:`save_policy_folder`) with ``best_model/best_info.txt``.

    :param eval_env: VecEnv on held-out worlds, or None (no evaluation).
    :param eval_freq: Env steps between evaluations.
    :param eval_options: Reset options of each evaluation env (e.g. ``{"world_id": k}``), or None (worlds drawn with
        the evaluation seed).
    :param best_path: Directory for the best training checkpoint, or None.
    :param policy_dir: Directory for ``policy_step_<k>/`` and ``best_model/``, or None.
    :param window: Episodes in the training-metric window.
    :param summary: Print the summary after each evaluation.
    """

    def __init__(
        self,
        eval_env: VecEnv | None = None,
        eval_freq: int = 0,
        eval_options: list[dict[str, Any]] | None = None,
        best_path: str | os.PathLike | None = None,
        window: int = 200,
        eval_seed: int = 12_345,
        policy_dir: str | os.PathLike | None = None,
        summary: bool = False,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if eval_env is not None and eval_freq <= 0:
            raise ValueError(f"eval_freq must be > 0 with an eval_env, got {eval_freq}")
        self.eval_env, self.eval_freq, self.eval_seed, self.eval_options = eval_env, eval_freq, eval_seed, eval_options
        self.best_path = None if best_path is None else Path(best_path)
        self.policy_dir = None if policy_dir is None else Path(policy_dir)
        self.summary = summary
        self.episodes: deque[dict[str, Any]] = deque(maxlen=window)
        self.n_episode = 0
        self.best_nav_metric = -np.inf
        self.last_eval: dict[str, float] = {}
        self.last_eval_worlds: list[int] = []
        self._training_values: dict[str, float] = {}  # the window's statistics, recomputed when an episode ends
        self._next_eval = eval_freq
        self._start_time, self._start_steps = time.time(), 0

    def _on_training_start(self) -> None:
        # Not _init_callback: SB3 sets num_timesteps (> 0 on resume) just before this call. A resumed run evaluates
        # at the next multiple of eval_freq (not at every step until a counter from 0 catches up), and only a better
        # policy than the one already in best_path replaces it.
        self._start_time, self._start_steps = time.time(), self.num_timesteps
        if self.eval_freq > 0:
            self._next_eval = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        if self.best_path is not None and np.isneginf(self.best_nav_metric):
            found = find_checkpoint(self.best_path)
            state = None if found is None else json.loads((found / STATE_JSON).read_text())
            if state is not None and "test_nav_metric" in state:
                self.best_nav_metric = float(state["test_nav_metric"])

    def _on_step(self) -> bool:
        ended = 0
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "status" in info:
                self.episodes.append(info)
                ended += 1
        if ended:
            self.n_episode += ended
            self._training_values = self._window_values(list(self.episodes))
        for key, value in self._training_values.items():  # every step: the logger forgets them at each dump
            self.logger.record(key, value)
        elapsed = max(time.time() - self._start_time, 1e-9)
        self.logger.record("train/Steps", self.num_timesteps)
        self.logger.record("train/Time", elapsed)
        self.logger.record("train/fps", (self.num_timesteps - self._start_steps) / elapsed)
        for ours in ("actor_loss", "critic_loss", "actor_grad_norm", "critic_grad_norm"):
            if f"train/{ours}" in self.logger.name_to_value:
                self.logger.record(f"train/{ours.capitalize()}", self.logger.name_to_value[f"train/{ours}"])
        if self.eval_env is not None and self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq
            self.evaluate()
        return True

    def _window_values(self, episodes: list[dict[str, Any]]) -> dict[str, float]:
        """The training keys of the episode window (computed once per ended episode, not every step)."""
        stats = summarize(episodes)
        values = {
            "train/Success_rate": stats["success_rate"],
            "train/Flip_rate": stats["flip_rate"],
            "train/Timeout_rate": stats["timeout_rate"],
            "train/Collision": stats["collision_rate"],
            "train/Episode_nav_metric": stats["nav_metric"],
            "train/n_episode": self.n_episode,
        }
        monitored = [e["episode"] for e in episodes if "episode" in e]  # VecMonitor's return and length
        if monitored:
            values["train/Episode_reward"] = float(np.mean([m["r"] for m in monitored]))
            values["train/Episode_length"] = float(np.mean([m["l"] for m in monitored]))
        statuses, counts = np.unique([e["status"] for e in episodes], return_counts=True)
        for status, count in zip(statuses, counts, strict=True):
            values[f"train/Status_counts/{status}"] = int(count)
        return values

    def evaluate(self) -> dict[str, float]:
        """Evaluate on ``eval_env`` now, then :meth:`record_test` the episodes."""
        assert self.eval_env is not None
        predict = lambda o: self.model.predict(o, deterministic=True)[0]  # noqa: E731
        finals = run_episodes(predict, self.eval_env, self.eval_seed, self.eval_options)
        return self.record_test(finals)

    def record_test(self, finals: list[dict[str, Any]]) -> dict[str, float]:
        """Log the final infos of test episodes (run here or elsewhere, e.g. read from FTRL's test pickles), remember
        and, if the test nav metric improved, save; print the summary, then write the logger out."""
        stats = summarize(finals)
        self.last_eval = stats
        self.last_eval_worlds = sorted({int(f["world_id"]) for f in finals if "world_id" in f})
        self.logger.record("train/Test_nav_metric", stats["nav_metric"])
        self.logger.record("train/Test_success_rate", stats["success_rate"])
        self.logger.record("train/Test_time", stats["time"])
        self.logger.record("train/Test_counts", len(finals))
        if "path_length" in stats:
            self.logger.record("train/Test_length", stats["path_length"])
        if stats["nav_metric"] > self.best_nav_metric:
            self.best_nav_metric = stats["nav_metric"]
            if self.best_path is not None:
                save_training_checkpoint(self.model, self.best_path, test_nav_metric=stats["nav_metric"])
            if self.policy_dir is not None:
                self._save_best(stats)
        if self.summary:
            print(self.summary_text())
        # Written now, at this step: SB3 dumps only when an episode ends, so a later evaluation would overwrite this
        # one before it is written, and the run's last one (no episode ending after it) would never be.
        self.logger.dump(self.num_timesteps)
        return stats

    def _save_best(self, stats: dict[str, float]) -> None:
        """FTRL's ``policy_step_<k>/`` and ``best_model/`` (+ ``best_info.txt``) for a new best test nav metric."""
        assert self.policy_dir is not None
        step = self.num_timesteps
        save_policy_folder(self.model, self.policy_dir / f"{POLICY_STEP_PREFIX}{step}")
        best = save_policy_folder(self.model, self.policy_dir / BEST_MODEL_DIR)
        lines = [f"step: {step}", f"n_episode: {self.n_episode}"] + [f"Test_{k}: {v:.6f}" for k, v in stats.items()]
        lines.append(f"worlds: {','.join(map(str, self.last_eval_worlds))}")
        atomic_write(best / BEST_INFO, ("\n".join(lines) + "\n").encode())

    def summary_text(self) -> str:
        """FTRL's terminal summary: the latest training and test figures, one per line."""
        values = self.logger.name_to_value
        names = ["Episode_reward", "Episode_length", "Episode_nav_metric", "Success_rate", "Collision",
                 "Timeout_rate", "Test_nav_metric", "Test_success_rate", "Test_time", "Test_length",
                 "Actor_loss", "Critic_loss", "Exploration_noise", "fps"]  # fmt: skip
        lines = [f"---- step {self.num_timesteps}, {self.n_episode} episodes ----"]
        for name in names:
            if f"train/{name}" in values:
                value = values[f"train/{name}"]
                lines.append(f"{name}: {value:.1%}" if name.endswith("_rate") else f"{name}: {value:.4g}")
        return "\n".join(lines)
