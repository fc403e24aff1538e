"""Wrappers of BarnNav named by the design: costmap-image observation and normalised parameter action."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.nav_env import VELOCITY_HIGH, VELOCITY_LOW, BarnNav, NavBatch
from envs.render import DEFAULT_IMAGE_SIZE

__all__ = ["CostmapObservation", "NormalizedParams", "make_costmap_env"]


def _nav_batch(env: gym.Env, wrapper: str) -> NavBatch:
    if not isinstance(env.unwrapped, BarnNav):
        raise TypeError(f"{wrapper} wraps a BarnNav env, got {type(env.unwrapped).__name__}")
    return env.unwrapped.batch


def check_image_size(image_size: Any) -> tuple[int, int]:
    """``(height, width)`` as a tuple of two positive ints; ``ValueError`` otherwise."""
    size = tuple(image_size) if isinstance(image_size, (tuple, list)) else ()
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"image_size must be (height, width) positive ints, got {image_size!r}")
    return int(size[0]), int(size[1])


def costmap_space(image_size: tuple[int, int], velocity: bool) -> spaces.Space:
    """uint8 ``Box(H, W, 3)``, or ``Dict(image=..., velocity=Box(2,))`` with ``velocity``."""
    image = spaces.Box(0, 255, shape=(*image_size, 3), dtype=np.uint8)
    if not velocity:
        return image
    return spaces.Dict({"image": image, "velocity": spaces.Box(VELOCITY_LOW, VELOCITY_HIGH, dtype=np.float32)})


class CostmapObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace BarnNav's laser vector by the FTRL robot-frame scene image (the VLM's input).

    The image (uint8 ``[H, W, 3]``) shows the laser returns (red), the global plan (black), the robot box (yellow)
    and its axes (green x, blue y) in a 6 m x 4 m window, 2 m behind to 4 m ahead (``envs.render``). With
    ``velocity=True`` the observation is ``{"image": ..., "velocity": [v m/s, w rad/s]}``.

    Example:
        >>> import gymnasium as gym, envs
        >>> env = CostmapObservation(gym.make("BarnNav-v0"), image_size=(56, 84))
        >>> env.observation_space.shape
        (56, 84, 3)

    Args:
        env: A BarnNav env (possibly wrapped).
        image_size: ``(height, width)`` in pixels; the default 56 x 84 keeps 200k transitions in ~5.3 GiB.
        velocity: Also observe the robot velocity.
    """

    def __init__(self, env: gym.Env, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, velocity: bool = False):
        gym.utils.RecordConstructorArgs.__init__(self, image_size=image_size, velocity=velocity)
        gym.ObservationWrapper.__init__(self, env)
        self._batch = _nav_batch(env, "CostmapObservation")
        self.image_size = check_image_size(image_size)
        self.velocity = bool(velocity)
        self.observation_space = costmap_space(self.image_size, self.velocity)

    def observation(self, observation: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        image = self._batch.costmap_obs(self.image_size)[0]
        if not self.velocity:
            return image
        return {"image": image, "velocity": self._batch.velocity_obs()[0]}


class NormalizedParams(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Action in ``[-1, 1]^P`` mapped affinely to the planner's physical ranges (APPLR's convention).

    Integer parameters are rounded by the env, not here.

    Args:
        env: A BarnNav env (possibly wrapped).
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ActionWrapper.__init__(self, env)
        self._params = _nav_batch(env, "NormalizedParams").params
        self.action_space = spaces.Box(-1.0, 1.0, shape=(len(self._params),), dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        return self._params.from_unit(action)


def make_costmap_env(
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, velocity: bool = False, **kwargs: Any
) -> CostmapObservation:
    """``BarnNavCostmap-v0``: BarnNav (``kwargs``) behind :class:`CostmapObservation`."""
    return CostmapObservation(BarnNav(**kwargs), image_size=image_size, velocity=velocity)
