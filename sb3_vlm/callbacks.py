"""Training callbacks: atomic checkpoints (resumable, best by test nav metric) and navigation metrics.

Both read only what BarnNav puts in ``infos`` (``status``, ``nav_metric``, ``time``); nothing here imports the
simulator.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_vlm.formats.buffer_npz import save_replay_buffer
from sb3_vlm.formats.checkpoint import atomic_directory, recover_directory
from sb3_vlm.td3.policies import VLMTD3Policy

__all__ = ["NavMetricsCallback", "SafeCheckpointCallback", "run_episodes", "save_training_checkpoint"]

CHECKPOINT_LAST, CHECKPOINT_BEST = "last", "best"
MODEL_ZIP, REPLAY_BUFFER, POLICY_DIR, STATE_JSON = "model.zip", "replay_buffer.npz", "policy", "state.json"


def save_training_checkpoint(
    model: BaseAlgorithm, directory: str | os.PathLike, replay_buffer: bool = False, **state: Any
) -> Path:
    """Write ``model.zip`` (+ ``policy/`` in the FTRL layout for a VLM policy, + the replay buffer) atomically.

    :param directory: Checkpoint directory, replaced as a whole (a crash mid-save leaves the previous one).
    :param state: Extra JSON-able facts stored in ``state.json`` (``num_timesteps`` is always there).
    """
    with atomic_directory(directory) as tmp:
        model.save(tmp / MODEL_ZIP)
        if isinstance(model.policy, VLMTD3Policy):
            model.policy.save_pretrained(tmp / POLICY_DIR)
        if replay_buffer and getattr(model, "replay_buffer", None) is not None:
            save_replay_buffer(model.replay_buffer, tmp / REPLAY_BUFFER)  # type: ignore[attr-defined]
        (tmp / STATE_JSON).write_text(json.dumps({"num_timesteps": model.num_timesteps, **state}, indent=2))
    return Path(directory)


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The complete checkpoint at ``directory`` (or the copy a cut-off swap left), if any."""
    found = recover_directory(directory)
    return found if found is not None and (found / MODEL_ZIP).is_file() else None


class SafeCheckpointCallback(BaseCallback):
    """
    Every ``save_freq`` env steps (summed over envs; checked at the end of each rollout, once its transitions are
    stored), write ``<save_path>/last`` atomically: the SB3 zip (without
    the backbone for VLM policies), the trainable parts in the FTRL layout and, optionally, the replay buffer, so a
    killed run resumes with its buffer and step counter (``sb3-vlm train --resume``).

    :param save_path: Directory of the checkpoints.
    :param save_freq: Env steps between checkpoints.
    :param save_replay_buffer: Also save the replay buffer.
    """

    def __init__(self, save_path: str | os.PathLike, save_freq: int, save_replay_buffer: bool = True, verbose: int = 0):
        super().__init__(verbose)
        if save_freq <= 0:
            raise ValueError(f"save_freq must be > 0, got {save_freq}")
        self.save_path, self.save_freq, self.save_replay_buffer = Path(save_path), save_freq, save_replay_buffer
        self._next = save_freq

    def _on_training_start(self) -> None:
        # SB3 sets num_timesteps (> 0 on resume) just before this call, not before _init_callback.
        self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # Not in _on_step: SB3 stores a step's transition after calling on_step, so a checkpoint written there
        # would miss the newest transition and a resumed run would end one short.
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq
            self.save(CHECKPOINT_LAST)

    def _on_training_end(self) -> None:
        self.save(CHECKPOINT_LAST)

    def save(self, name: str, **state: Any) -> Path:
        """Write checkpoint ``name`` now."""
        path = save_training_checkpoint(self.model, self.save_path / name, self.save_replay_buffer, **state)
        if self.verbose:
            print(f"checkpoint {path} at {self.num_timesteps} steps")
        return path


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


def summarize(finals: list[dict[str, Any]]) -> dict[str, float]:
    """Success / collision / timeout rates, mean nav metric and mean time of final infos."""
    status = np.array([f["status"] for f in finals])
    return {
        "success_rate": float(np.mean(status == "success")),
        "collision_rate": float(np.mean(status == "collision")),
        "timeout_rate": float(np.mean(status == "timeout")),
        "nav_metric": float(np.mean([f["nav_metric"] for f in finals])),
        "time": float(np.mean([f["time"] for f in finals])),
    }


class NavMetricsCallback(BaseCallback):
    """
    Navigation metrics in TensorBoard under FTRL's names: over the last ``window`` training episodes
    ``train/Success_rate``, ``train/Collision_rate``, ``train/Timeout_rate``, ``train/Episode_nav_metric``; every
    ``eval_freq`` steps, a deterministic evaluation on ``eval_env`` (one episode per env, held-out worlds, fixed
    seeds): ``train/Test_nav_metric``, ``train/Test_success_rate``, ``train/Test_length``; plus
    ``train/Actor_loss``/``train/Critic_loss`` mirrors and ``time/fps``. With ``best_path``, the best evaluation
    by test nav metric is saved there (FTRL keeps ``best_model``).

    :param eval_env: VecEnv on held-out worlds, or None (no evaluation).
    :param eval_freq: Env steps between evaluations.
    :param best_path: Directory for the best checkpoint, or None.
    :param window: Episodes in the training-metric window.
    """

    def __init__(
        self,
        eval_env: VecEnv | None = None,
        eval_freq: int = 0,
        best_path: str | os.PathLike | None = None,
        window: int = 100,
        eval_seed: int = 12_345,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if eval_env is not None and eval_freq <= 0:
            raise ValueError(f"eval_freq must be > 0 with an eval_env, got {eval_freq}")
        self.eval_env, self.eval_freq, self.eval_seed = eval_env, eval_freq, eval_seed
        self.best_path = None if best_path is None else Path(best_path)
        self.episodes: deque[dict[str, Any]] = deque(maxlen=window)
        self.best_nav_metric = -np.inf
        self.last_eval: dict[str, float] = {}
        self._next_eval = eval_freq

    def _on_training_start(self) -> None:
        # Not _init_callback: SB3 sets num_timesteps (> 0 on resume) just before this call. A resumed run evaluates
        # at the next multiple of eval_freq (not at every step until a counter from 0 catches up), and only a better
        # policy than the one already in best_path replaces it.
        if self.eval_freq > 0:
            self._next_eval = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        if self.best_path is not None and np.isneginf(self.best_nav_metric):
            found = find_checkpoint(self.best_path)
            state = None if found is None else json.loads((found / STATE_JSON).read_text())
            if state is not None and "test_nav_metric" in state:
                self.best_nav_metric = float(state["test_nav_metric"])

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if done and "status" in info:
                self.episodes.append(info)
        if self.episodes:
            stats = summarize(list(self.episodes))
            self.logger.record("train/Success_rate", stats["success_rate"])
            self.logger.record("train/Collision_rate", stats["collision_rate"])
            self.logger.record("train/Timeout_rate", stats["timeout_rate"])
            self.logger.record("train/Episode_nav_metric", stats["nav_metric"])
        for ours, ftrl in (("train/actor_loss", "train/Actor_loss"), ("train/critic_loss", "train/Critic_loss")):
            if ours in self.logger.name_to_value:
                self.logger.record(ftrl, self.logger.name_to_value[ours])
        if self.eval_env is not None and self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, float]:
        """Evaluate now; log, remember and (if best) save."""
        assert self.eval_env is not None
        finals = run_episodes(lambda o: self.model.predict(o, deterministic=True)[0], self.eval_env, self.eval_seed)
        stats = summarize(finals)
        self.last_eval = stats
        self.logger.record("train/Test_nav_metric", stats["nav_metric"])
        self.logger.record("train/Test_success_rate", stats["success_rate"])
        self.logger.record("train/Test_collision_rate", stats["collision_rate"])
        self.logger.record("train/Test_timeout_rate", stats["timeout_rate"])
        self.logger.record("train/Test_length", stats["time"])
        if stats["nav_metric"] > self.best_nav_metric:
            self.best_nav_metric = stats["nav_metric"]
            if self.best_path is not None:
                save_training_checkpoint(self.model, self.best_path, test_nav_metric=stats["nav_metric"])
        if self.verbose:
            print(f"eval at {self.num_timesteps}: {stats}")
        return stats
