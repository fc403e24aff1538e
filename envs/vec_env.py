"""A natively batched SB3 ``VecEnv`` of BarnNav: N episodes stepped together by one numpy simulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.nav_env import NavBatch
from envs.render import DEFAULT_IMAGE_SIZE
from envs.wrappers import check_image_size, costmap_space

__all__ = ["BarnNavVecEnv"]


class BarnNavVecEnv(VecEnv):
    """
    ``n_envs`` BarnNav episodes in one vectorised simulator (no subprocesses, no per-env Python objects). Same
    observations, rewards and infos as ``BarnNav-v0`` / ``BarnNavCostmap-v0``; finished episodes reset automatically
    (SB3 convention: ``infos[i]["terminal_observation"]``, ``"TimeLimit.truncated"``).

    :param n_envs: Number of environments.
    :param observation: ``"laser"`` (APPLR vector) or ``"costmap"`` (FTRL scene image).
    :param image_size: ``(height, width)`` of the costmap image.
    :param velocity: With ``"costmap"``: Dict observation with the robot velocity.
    :param kwargs: :class:`envs.nav_env.NavBatch` arguments (``planner``, ``barn_dir``, ``worlds``, ``reward``, ...).
    """

    def __init__(
        self,
        n_envs: int,
        observation: str = "laser",
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        velocity: bool = False,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(n_envs, int) and n_envs > 0):
            raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
        if observation not in ("laser", "costmap"):
            raise ValueError(f"observation must be 'laser' or 'costmap', got {observation!r}")
        self.batch = NavBatch(n_envs, **kwargs)
        self.observation, self.image_size, self.velocity = observation, check_image_size(image_size), velocity
        space = self.batch.laser_space if observation == "laser" else costmap_space(self.image_size, velocity)
        self.render_mode = "rgb_array"  # get_images() draws every env top-down
        super().__init__(n_envs, space, self.batch.action_space)
        self._rngs = [np.random.default_rng() for _ in range(n_envs)]
        self._actions: np.ndarray | None = None

    def _observe(self) -> VecEnvObs:
        if self.observation == "laser":
            return self.batch.laser_obs()
        images = self.batch.costmap_obs(self.image_size)
        return {"image": images, "velocity": self.batch.velocity_obs()} if self.velocity else images

    def _reset_env(self, i: int) -> None:
        if self._seeds[i] is not None:
            self._rngs[i] = np.random.default_rng(self._seeds[i])
        self.batch.reset(i, self._rngs[i], self._options[i].get("world_id"))

    def reset(self) -> VecEnvObs:
        for i in range(self.num_envs):
            self._reset_env(i)
        self.reset_infos = [self.batch.info(i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("BarnNavVecEnv.step_wait() without step_async()")
        rewards, terminated, truncated, infos = self.batch.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        if dones.any():
            terminal = self._observe()
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = _index(terminal, i)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                self._reset_env(i)
                self.reset_infos[i] = self.batch.info(i)
        return self._observe(), rewards, dones, infos

    def close(self) -> None:
        """Nothing to release: the simulator is plain numpy."""

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [self.batch.render_top_down(i) for i in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"BarnNavVecEnv has no per-env attributes to set ({attr_name!r})")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list:
        """
        Call ``method_name`` on each selected env, as a single ``BarnNav`` would answer it: ``reset(seed=None,
        options=None)`` starts only env ``i``'s next episode and returns its ``(obs, info)``; ``render()`` draws env
        ``i``. Any other method belongs to the whole batch: allowed only when every env is selected, called once per
        env (VecEnv's one-result-per-env convention).
        """
        selected = list(self._get_indices(indices))
        per_env = {"reset": self._env_reset, "render": self._env_render}
        if method_name in per_env:
            return [per_env[method_name](i, *method_args, **kwargs) for i in selected]
        if sorted(selected) != list(range(self.num_envs)):
            raise ValueError(
                f"BarnNavVecEnv.env_method: {method_name!r} acts on the whole batch, not on envs {selected}; "
                "per-env methods are 'reset' and 'render'"
            )
        return [getattr(self, method_name)(*method_args, **kwargs) for _ in selected]

    def _env_reset(
        self, i: int, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[VecEnvObs, dict[str, Any]]:
        """Gymnasium ``reset`` of env ``i`` alone."""
        if seed is not None:
            self._rngs[i] = np.random.default_rng(seed)
        self.batch.reset(i, self._rngs[i], (options or {}).get("world_id"))
        self.reset_infos[i] = self.batch.info(i)
        return _index(self._observe(), i), self.reset_infos[i]

    def _env_render(self, i: int) -> np.ndarray:
        return self.batch.render_top_down(i)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _index(obs: VecEnvObs, i: int) -> Any:
    return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]
