"""Tiny Gymnasium envs with the spaces of the navigation envs, for fast SB3 tests.

Observations: APPLR laser ``Box(-1, 1, (721,), float32)``; costmap image ``Box(0, 255, (56, 84, 3), uint8)``;
or ``Dict(image, velocity [v, w])``. Action: the 7 DWA parameters in physical units (``DWA_PARAMS`` ranges).
Observations are random; the reward is the closeness of the action to a fixed setting, so learning has a signal.
Episodes last ``horizon`` steps and end by truncation.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.planners import DWA_PARAMS

IMAGE_SHAPE = (56, 84, 3)
VELOCITY_SPACE = spaces.Box(np.array([-0.5, -3.14], np.float32), np.array([2.0, 3.14], np.float32))


class ParamEnv(gym.Env):
    """DWA-parameter env with a given observation space; reward ``-mean(|unit(action) - 0.3|)``.

    :param observation_space: What ``reset``/``step`` return (sampled at random).
    :param horizon: Steps per episode.
    """

    def __init__(self, observation_space: spaces.Space, horizon: int = 20):
        self.observation_space = observation_space
        self.action_space = spaces.Box(DWA_PARAMS.low, DWA_PARAMS.high, dtype=np.float32)
        self.horizon = horizon
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        self._t += 1
        reward = -float(np.mean(np.abs(DWA_PARAMS.to_unit(action) - 0.3)))
        return self.observation_space.sample(), reward, False, self._t >= self.horizon, {}


def laser_env(horizon: int = 20) -> ParamEnv:
    """721-d laser observation (720 scaled ranges + goal angle)."""
    return ParamEnv(spaces.Box(-1.0, 1.0, shape=(721,), dtype=np.float32), horizon)


def image_env(horizon: int = 20) -> ParamEnv:
    """uint8 HWC costmap-image observation."""
    return ParamEnv(spaces.Box(0, 255, shape=IMAGE_SHAPE, dtype=np.uint8), horizon)


def dict_image_env(horizon: int = 20) -> ParamEnv:
    """``{"image": uint8 HWC, "velocity": [v, w]}`` observation."""
    image = spaces.Box(0, 255, shape=IMAGE_SHAPE, dtype=np.uint8)
    return ParamEnv(spaces.Dict({"image": image, "velocity": VELOCITY_SPACE}), horizon)
