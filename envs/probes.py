"""Probe environments with a known optimum, to check a learner before trusting it on BarnNav: :class:`QuadraticBandit`,
:class:`ContextualBandit`, :class:`TruncatedChain` and :class:`BarnNavBandit` each isolate one thing a TD3 run on
BarnNav depends on (docs/learning.md "The ladder")."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.nav_env import NavBatch

__all__ = ["BarnNavBandit", "ContextualBandit", "QuadraticBandit", "TruncatedChain"]


class QuadraticBandit(gym.Env):
    """
    One step per episode; observation ``[0.0]``; reward ``-sum((a - target)**2)`` plus Gaussian noise of std
    ``noise``; the optimum is ``target`` (inside ``[-1, 1]^dim``, away from the bounds).

    :param dim: Action dimensions.
    :param target: Optimal action ``[dim]``, or None (``0.5`` and ``-0.3`` alternating).
    :param noise: Reward noise standard deviation.
    """

    def __init__(self, dim: int = 7, target: np.ndarray | None = None, noise: float = 0.1) -> None:
        self.target = np.resize([0.5, -0.3], dim).astype(np.float32) if target is None else np.asarray(target)
        if self.target.shape != (dim,) or np.abs(self.target).max() >= 1:
            raise ValueError(f"target must have shape ({dim},) inside (-1, 1), got {self.target}")
        self.noise = noise
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (dim,), dtype=np.float32)

    def _obs(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    def optimum(self, obs: np.ndarray) -> np.ndarray:
        """The optimal action for observation(s) ``obs``."""
        return np.broadcast_to(self.target, (*np.shape(obs)[:-1], len(self.target)))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._last = self._obs()
        return self._last, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        error = np.asarray(action, dtype=np.float64) - self.optimum(self._last)
        reward = -float(np.sum(error**2)) + self.noise * float(self.np_random.normal())
        self._last = self._obs()
        return self._last, reward, True, False, {}


class ContextualBandit(QuadraticBandit):
    """:class:`QuadraticBandit` whose observation ``c`` is uniform in ``[-1, 1]^dim`` and whose optimum is
    ``0.8 * c``: the actor must read its observation."""

    def __init__(self, dim: int = 3, noise: float = 0.1) -> None:
        super().__init__(dim, np.zeros(dim, dtype=np.float32), noise)
        self.observation_space = spaces.Box(-1.0, 1.0, (dim,), dtype=np.float32)

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1, 1, len(self.target)).astype(np.float32)

    def optimum(self, obs: np.ndarray) -> np.ndarray:
        return 0.8 * np.asarray(obs)


class TruncatedChain(gym.Env):
    """
    Reward 1 every step, whatever the action; episodes end only by truncation after ``limit`` steps. Observation:
    a constant ``[0.0]``, so the start state and every later state are the same state, whose value is
    ``1 / (1 - gamma)`` when truncation is bootstrapped and about ``(1 - gamma**limit) / (1 - gamma)`` smaller if it
    is treated as a termination.

    :param limit: Steps before the time limit.
    """

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return np.zeros(1, dtype=np.float32), 1.0, False, self._t >= self.limit, {}


class BarnNavBandit(gym.Env):
    """
    BarnNav as a bandit: one action (planner parameters in physical units, as ``BarnNav-v0``) is held for a whole
    episode in a world drawn from the env's set; the reward is that episode's return under the BarnNav reward,
    discounted by ``gamma`` per BarnNav step. Observation: a constant ``[0.0]``. The optimum is the best constant
    vector for that return, which a grid of constants measures.

    :param gamma: Discount of the BarnNav steps inside the episode (1: the plain sum).
    :param kwargs: :class:`envs.nav_env.NavBatch` arguments (``barn_dir``, ``worlds``, ``reward``, ``time_step``, ...).
    """

    def __init__(self, gamma: float = 1.0, **kwargs: Any) -> None:
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.gamma = gamma
        self.batch = NavBatch(1, **kwargs)
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.action_space = self.batch.action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.batch.reset(0, self.np_random)
        params = np.clip(np.asarray(action, dtype=np.float32), self.action_space.low, self.action_space.high)[None]
        episode_return, discount, info = 0.0, 1.0, {}
        while not self.batch.done[0]:
            rewards, _, _, infos = self.batch.step(params)
            episode_return += discount * float(rewards[0])
            discount *= self.gamma
            info = infos[0]
        keep = ("status", "nav_metric", "time", "world_id")
        return np.zeros(1, dtype=np.float32), episode_return, True, False, {k: info[k] for k in keep}
