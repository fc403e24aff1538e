"""A monitor of the actor's outputs at the bounds of its tanh: :class:`ActorSaturationMonitorCallback`."""

from __future__ import annotations

import logging

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["ActorSaturationMonitorCallback"]

logger = logging.getLogger(__name__)


class ActorSaturationMonitorCallback(BaseCallback):
    """
    Fraction of the actor's (noise-free) action dimensions at +-1 on the last rollout's observations. An actor that
    sits at the bounds of its tanh (every parameter at a range limit, whatever the image) has stopped learning from
    its inputs.

    Every ``log_freq`` env steps the actor is run on the observations of the last ``window`` transitions in the
    replay buffer; the fraction of entries with ``|a| >= threshold`` is logged as ``train/Actor_saturation`` (and
    per dimension as ``train/Actor_saturation_<i>``). The first time it exceeds ``warn_above`` a warning names the
    saturated dimensions.

    :param window: Transitions (rows of the buffer, each ``n_envs`` observations) looked at.
    """

    def __init__(
        self,
        log_freq: int = 500,
        window: int = 64,
        threshold: float = 0.99,
        warn_above: float = 0.5,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if log_freq < 1 or window < 1 or not 0 < threshold <= 1:
            raise ValueError(f"ActorSaturationMonitorCallback: bad arguments {log_freq=}, {window=}, {threshold=}")
        self.log_freq, self.window, self.threshold, self.warn_above = log_freq, window, threshold, warn_above
        self.last: np.ndarray | None = None
        """Per-dimension saturation ``[P]`` of the last measurement."""
        self._next = 0
        self._warned = False

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps < self._next:
            return
        self._next = self.num_timesteps + self.log_freq
        obs = self._recent_observations()
        if obs is None:
            return
        with th.no_grad():
            actions = self.model.policy.actor(obs).cpu().numpy()
        self.last = (np.abs(actions) >= self.threshold).mean(axis=0)
        overall = float(self.last.mean())
        self.logger.record("train/Actor_saturation", overall)
        for i, value in enumerate(self.last):
            self.logger.record(f"train/Actor_saturation_{i}", float(value))
        if overall > self.warn_above and not self._warned:
            self._warned = True
            dims = [i for i, value in enumerate(self.last) if value > self.warn_above]
            logger.warning(
                "actor saturated: %.0f %% of action entries at +-1 at step %d (dimensions %s): it has stopped "
                "responding to its observations; lower the actor learning rate or check the reward (warned once; "
                "train/Actor_saturation keeps the record)",
                100 * overall, self.num_timesteps, dims,
            )  # fmt: skip

    def _recent_observations(self) -> th.Tensor | dict[str, th.Tensor] | None:
        """Observations ``[rows * n_envs, ...]`` of the last ``window`` buffer rows, on the policy's device."""
        buffer = self.model.replay_buffer
        size = buffer.size()
        if size == 0:
            return None
        rows = (buffer.pos - 1 - np.arange(min(self.window, size))) % buffer.buffer_size

        def take(array: np.ndarray) -> th.Tensor:
            flat = array[rows].reshape(-1, *array.shape[2:])
            return th.as_tensor(flat, device=self.model.device)

        if isinstance(buffer.observations, dict):
            return {key: take(value) for key, value in buffer.observations.items()}
        return take(buffer.observations)
