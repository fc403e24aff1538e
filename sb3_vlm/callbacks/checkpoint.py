"""Atomic, resumable training checkpoints: :class:`SafeCheckpointCallback`, the checkpoint layout and the FTRL
policy folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from sb3_vlm.formats.buffer_npz import save_replay_buffer
from sb3_vlm.formats.checkpoint import atomic_directory, recover_directory
from sb3_vlm.formats.ftrl_files import write_exploration_noise
from sb3_vlm.td3.noise import noise_std
from sb3_vlm.td3.policies import VLMTD3Policy

__all__ = ["SafeCheckpointCallback", "find_checkpoint", "save_policy_folder", "save_training_checkpoint"]

CHECKPOINT_LAST, CHECKPOINT_BEST = "last", "best"
MODEL_ZIP, REPLAY_BUFFER, POLICY_DIR, STATE_JSON = "model.zip", "replay_buffer.npz", "policy", "state.json"


def save_policy_folder(model: BaseAlgorithm, directory: str | os.PathLike) -> Path:
    """The policy as FTRL saves it (docs/compat/ftrl.md §3.3): a VLM policy's ``save_pretrained`` folder (what
    FTRL's and our servers load), another policy's SB3 zip (``model.zip``), plus ``exploration_noise.pkl``, the current
    Gaussian exploration noise std ([-1, 1] action units, 0 without noise) as a pickled float.

    :param directory: Target directory (replaced if it exists).
    """
    directory = Path(directory)
    if isinstance(model.policy, VLMTD3Policy):
        model.policy.save_pretrained(directory)
    else:
        with atomic_directory(directory) as tmp:
            model.save(tmp / MODEL_ZIP)
    write_exploration_noise(directory, noise_std(getattr(model, "action_noise", None)))
    return directory


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
            save_policy_folder(model, tmp / POLICY_DIR)
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
