"""The body of one Ray env actor: a ``VecEnv`` batch that answers ``reset``/``step`` and generic calls.

Kept free of Ray so it can be read (and unit-run) as plain Python; :class:`sb3_vlm.distributed.RayVecEnv` turns it
into an actor with ``ray.remote``. After a (re)start the runner refuses to step until it has been reset: a restarted
actor has fresh episodes that the learner has not seen, so it answers ``step`` with ``None`` and the driver reports
the lost episodes as truncated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs

__all__ = ["EnvRunner", "RunnerStep"]

RunnerStep = tuple[VecEnvObs, np.ndarray, np.ndarray, list[dict[str, Any]], list[dict[str, Any]] | None]
"""``(obs, rewards [n], dones [n], infos, reset_infos or None when no episode ended)`` of one runner step."""


class EnvRunner:
    """
    One actor's share of a :class:`RayVecEnv`: ``make_venv()`` builds its ``VecEnv`` of ``n`` environments
    (a ``BarnNavVecEnv`` batch, or a ``DummyVecEnv`` of Gymnasium env factories).

    :param make_venv: Picklable zero-argument callable returning the actor's ``VecEnv``. Ray calls it again when
        it restarts the actor.
    """

    def __init__(self, make_venv: Callable[[], VecEnv]) -> None:
        self.venv = make_venv()
        self.ready = False
        """False from (re)start until the first ``reset``: ``step`` then answers ``None``."""
        self.steps = 0
        """Vectorised steps this incarnation has run (each covers ``num_envs`` transitions)."""

    def ping(self) -> int:
        """The actor's process id (alive check; tests kill it by this pid)."""
        return os.getpid()

    def spaces(self) -> tuple[Any, Any, int]:
        """``(observation_space, action_space, num_envs)`` of the actor's ``VecEnv``."""
        return self.venv.observation_space, self.venv.action_space, self.venv.num_envs

    def reset(
        self, seed: int | None = None, options: Sequence[dict[str, Any]] | None = None
    ) -> tuple[VecEnvObs, list[dict[str, Any]]]:
        """
        Reset every env: with ``seed``, env ``j`` gets ``seed + j`` (``VecEnv.seed``); ``options[j]`` goes to env
        ``j`` (``VecEnv.set_options``). Both apply to this reset only.

        :return: ``(obs, reset_infos)`` of the actor's ``num_envs`` envs.
        """
        if seed is not None:
            self.venv.seed(seed)
        if options is not None:
            self.venv.set_options([dict(o) for o in options])
        obs = self.venv.reset()
        self.ready = True
        return obs, list(self.venv.reset_infos)

    def step(self, actions: np.ndarray) -> RunnerStep | None:
        """
        Step every env with ``actions`` ``[num_envs, action_dim]`` (finished episodes reset themselves).

        :return: The step, or ``None`` when the actor has not been reset since it (re)started.
        """
        if not self.ready:
            return None
        obs, rewards, dones, infos = self.venv.step(actions)
        self.steps += 1
        return obs, rewards, dones, infos, list(self.venv.reset_infos) if np.any(dones) else None

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``getattr(venv, name)(*args, **kwargs)``, or the attribute itself when it is not callable."""
        attr = getattr(self.venv, name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def close(self) -> None:
        self.venv.close()
