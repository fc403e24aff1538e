"""A linear decay of the Gaussian exploration noise: :class:`ExplorationNoiseScheduleCallback`."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise

from sb3_vlm.td3.noise import normal_noises

__all__ = ["ExplorationNoiseScheduleCallback"]

_START_ATTR = "exploration_noise_start"
"""Model attribute recording the schedule's start value, saved in the model's zip for resumes."""


class ExplorationNoiseScheduleCallback(BaseCallback):
    """
    Linear decay of the Gaussian exploration noise's standard deviation (in [-1, 1] action units); APPLR decays
    0.2 -> 0.05, FTRL 0.1 -> 0.01.

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
            raise ValueError(
                f"ExplorationNoiseScheduleCallback: standard deviations must be >= 0, got {start=}, {end=}"
            )
        if decay_steps is not None and decay_steps < 1:
            raise ValueError(f"ExplorationNoiseScheduleCallback: decay_steps must be >= 1, got {decay_steps}")
        self.start, self.end, self.decay_steps = start, end, decay_steps
        self._noises: list[NormalActionNoise] = []

    def _init_callback(self) -> None:
        self._noises = normal_noises(self.model.action_noise)
        if not self._noises:
            raise ValueError(
                "ExplorationNoiseScheduleCallback needs Gaussian action noise on the model (zoo: noise_type "
                f"'normal'), got {type(self.model.action_noise).__name__}"
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
