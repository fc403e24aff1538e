"""Exploration for TD3 fine-tuning: a decaying exploration-noise schedule and an actor-saturation monitor.

Both are SB3 callbacks, so they work with stock ``TD3`` and ``VLMTD3`` alike and in rl-zoo3 files (``callback:``)::

    callback:
      - sb3_vlm.td3.exploration.ExplorationNoiseSchedule:
          end: 0.05
      - sb3_vlm.td3.exploration.ActorSaturationMonitor

APPLR decays its Gaussian exploration noise linearly from 0.2 to 0.05, FTRL from 0.1 to 0.01 over ``max_step``. A
policy whose actor sits at the bounds of its tanh (every parameter at a range limit, whatever the image) has
stopped learning from its inputs: the monitor logs the fraction of action dimensions there and warns.
"""

from __future__ import annotations

import logging

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise, VectorizedActionNoise

logger = logging.getLogger(__name__)
_START_ATTR = "exploration_noise_start"
"""Model attribute recording the schedule's start value, saved in the model's zip for resumes."""


def _normal_noises(noise: ActionNoise | None) -> list[NormalActionNoise]:
    """The Gaussian noises inside ``noise`` (one, or one per env of a ``VectorizedActionNoise``)."""
    if isinstance(noise, VectorizedActionNoise):
        return [n for inner in noise.noises for n in _normal_noises(inner)]
    return [noise] if isinstance(noise, NormalActionNoise) else []


def noise_std(noise: ActionNoise | None) -> float:
    """Mean standard deviation of the Gaussian exploration noise in ``noise`` ([-1, 1] action units); 0 without."""
    noises = _normal_noises(noise)
    return float(np.mean([n._sigma for n in noises])) if noises else 0.0


class ExplorationNoiseSchedule(BaseCallback):
    """Linear decay of the Gaussian exploration noise's standard deviation (in [-1, 1] action units).

    :param end: Standard deviation reached at ``decay_steps`` and kept after.
    :param start: Standard deviation at step 0; None takes the model's noise as configured (``noise_std``), or, for
        a resumed model, the start recorded in it.
    :param decay_steps: Env steps of the decay (over all envs); None: the whole ``learn`` budget.

    Logged as ``train/Exploration_noise`` (FTRL's name). The current value lives in ``model.action_noise``, which
    SB3 saves with the model, and is recomputed from ``num_timesteps`` on resume.
    """

    def __init__(self, end: float, start: float | None = None, decay_steps: int | None = None, verbose: int = 0):
        super().__init__(verbose)
        if end < 0 or (start is not None and start < 0):
            raise ValueError(f"ExplorationNoiseSchedule: standard deviations must be >= 0, got {start=}, {end=}")
        if decay_steps is not None and decay_steps < 1:
            raise ValueError(f"ExplorationNoiseSchedule: decay_steps must be >= 1, got {decay_steps}")
        self.start, self.end, self.decay_steps = start, end, decay_steps
        self._noises: list[NormalActionNoise] = []

    def _init_callback(self) -> None:
        self._noises = _normal_noises(self.model.action_noise)
        if not self._noises:
            raise ValueError(
                "ExplorationNoiseSchedule needs Gaussian action noise on the model (zoo: noise_type 'normal'), "
                f"got {type(self.model.action_noise).__name__}"
            )
        if self.start is None:
            # A resumed model's noise has already decayed: its start value travels with it (SB3 saves attributes).
            self.start = getattr(self.model, _START_ATTR, None) or float(np.mean(self._noises[0]._sigma))
        setattr(self.model, _START_ATTR, self.start)

    def _on_training_start(self) -> None:
        if self.decay_steps is None:
            # learn() leaves num_timesteps + remaining budget in _total_timesteps (resumes included).
            self.decay_steps = max(int(self.model._total_timesteps), 1)
        self._apply()

    def value(self, step: int) -> float:
        """Standard deviation at env step ``step``."""
        frac = min(step / self.decay_steps, 1.0)
        return float(self.start + frac * (self.end - self.start))

    def _apply(self) -> None:
        sigma = self.value(self.num_timesteps)
        for noise in self._noises:
            noise._sigma = np.full_like(noise._sigma, sigma)
        self.logger.record("train/Exploration_noise", sigma)

    def _on_step(self) -> bool:
        self._apply()
        return True


class ActorSaturationMonitor(BaseCallback):
    """Fraction of the actor's (noise-free) action dimensions at +-1 on the last rollout's observations.

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
            raise ValueError(f"ActorSaturationMonitor: bad arguments {log_freq=}, {window=}, {threshold=}")
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
