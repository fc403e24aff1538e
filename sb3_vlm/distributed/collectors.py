"""Collector: a Ray actor body that runs episodes with its own copy of the learner's policy (the FTRL pattern).

Each collector holds a ``VecEnv`` batch (``BarnNavVecEnv`` or a ``DummyVecEnv`` of Gymnasium factories) and a policy
rebuilt from the learner's policy class and constructor parameters (SB3's ``BasePolicy.load`` recipe), so an
expensive VLM policy runs its forward pass in the collectors, not in the learner. ``collect`` loads the weights it is
given when their version is newer than its own (the learner ``ray.put``s them once per version), steps ``n_steps``
times with TD3's exploration (uniform actions before learning starts, Gaussian noise on the scaled action after)
and returns the transitions, tagged with the weights version that chose them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs

__all__ = ["Chunk", "Collector"]


@dataclass
class Chunk:
    """
    ``n_steps`` steps of one collector's ``n_envs`` envs, in SB3 replay-buffer form.

    :param observations: ``[n_steps, n_envs, *obs_shape]`` (or a dict of such arrays).
    :param next_observations: Same shapes; for a finished episode, its terminal observation.
    :param actions: Scaled actions in ``[-1, 1]``, ``[n_steps, n_envs, action_dim]``.
    :param rewards: ``[n_steps, n_envs]``.
    :param dones: ``[n_steps, n_envs]`` bool: the episode ended (terminated or truncated).
    :param timeouts: ``[n_steps, n_envs]`` bool: it ended by truncation (``TimeLimit.truncated``).
    :param version: Weights version of the policy that chose the actions.
    :param collector: Index of the collector.
    :param episode_returns: Undiscounted return of every episode that ended in the chunk.
    :param episode_infos: Final ``info`` of each of those episodes (navigation metrics).
    """

    observations: VecEnvObs
    next_observations: VecEnvObs
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    timeouts: np.ndarray
    version: int
    collector: int
    episode_returns: list[float] = field(default_factory=list)
    episode_infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_transitions(self) -> int:
        return int(self.rewards.size)


class Collector:
    """
    One collector actor's body.

    :param index: Collector index (reported in its chunks).
    :param make_venv: Picklable zero-argument factory of the collector's ``VecEnv``.
    :param policy_class: The learner's policy class.
    :param policy_kwargs: ``policy._get_constructor_parameters()`` of the learner's policy.
    :param action_noise: Standard deviation of the Gaussian exploration noise on the scaled action (TD3's
        ``NormalActionNoise``), 0 for none.
    :param seed: Seeds the envs (``seed + j`` for env ``j``), the noise and torch in this process.
    :param device: Torch device of the policy copy (``"cuda"`` in a collector with a Ray GPU).
    """

    def __init__(
        self,
        index: int,
        make_venv: Callable[[], VecEnv],
        policy_class: type[BasePolicy],
        policy_kwargs: dict[str, Any],
        action_noise: float = 0.1,
        seed: int | None = None,
        device: str = "cpu",
    ) -> None:
        if seed is not None:
            th.manual_seed(seed)
        self.index, self.action_noise = index, float(action_noise)
        self.policy = policy_class(**policy_kwargs).to(device)
        self.policy.set_training_mode(False)
        self.venv = make_venv()
        if self.venv.observation_space != self.policy.observation_space:  # SB3 transposed the learner's images
            self.venv = VecTransposeImage(self.venv)
        if self.venv.observation_space != self.policy.observation_space:
            raise ValueError(
                f"Collector {index}: the env's observation space {self.venv.observation_space} is not the policy's "
                f"{self.policy.observation_space}"
            )
        self.version = -1
        """Weights version loaded (-1: none yet)."""
        self.rng = np.random.default_rng(seed)
        self.venv.action_space.seed(seed)
        if seed is not None:
            self.venv.seed(seed)
        self._obs = self.venv.reset()
        self._returns = np.zeros(self.venv.num_envs)

    def ping(self) -> tuple[int, int]:
        """``(process id, loaded weights version)``."""
        return os.getpid(), self.version

    def collect(self, weights: dict[str, th.Tensor] | None, version: int, n_steps: int, random: bool) -> Chunk:
        """
        Load ``weights`` (a policy ``state_dict``) if ``version`` is newer than the loaded one, then step every env
        ``n_steps`` times.

        :param weights: The learner's policy state, or None to keep the current one.
        :param version: Its version number.
        :param n_steps: Vectorised steps to run (``n_steps * n_envs`` transitions).
        :param random: Uniform random actions (the learner has not reached ``learning_starts``).
        :return: The transitions, tagged with the loaded version.
        """
        if weights is not None and version > self.version:
            self.policy.load_state_dict(weights)
            self.version = version
        rows: dict[str, list] = {k: [] for k in ("obs", "next", "act", "rew", "done", "timeout")}
        returns, finals = [], []
        for _ in range(n_steps):
            scaled = self._act(random)
            obs, rewards, dones, infos = self.venv.step(self.policy.unscale_action(scaled))
            next_obs = _copy(obs)
            timeouts = np.zeros(len(dones), dtype=bool)
            self._returns += rewards
            for i in np.flatnonzero(dones):
                _set(next_obs, i, infos[i]["terminal_observation"])
                timeouts[i] = bool(infos[i].get("TimeLimit.truncated", False))
                returns.append(float(self._returns[i]))
                finals.append({k: v for k, v in infos[i].items() if k != "terminal_observation"})
                self._returns[i] = 0.0
            for key, value in zip(rows, (self._obs, next_obs, scaled, rewards, dones, timeouts), strict=True):
                rows[key].append(value)
            self._obs = obs
        return Chunk(
            observations=_stack(rows["obs"]),
            next_observations=_stack(rows["next"]),
            actions=np.stack(rows["act"]).astype(np.float32),
            rewards=np.stack(rows["rew"]).astype(np.float32),
            dones=np.stack(rows["done"]),
            timeouts=np.stack(rows["timeout"]),
            version=self.version,
            collector=self.index,
            episode_returns=returns,
            episode_infos=finals,
        )

    def _act(self, random: bool) -> np.ndarray:
        """Scaled actions ``[n_envs, action_dim]`` in ``[-1, 1]``, as SB3's ``OffPolicyAlgorithm._sample_action``."""
        n = self.venv.num_envs
        if random:
            return self.policy.scale_action(np.stack([self.venv.action_space.sample() for _ in range(n)]))
        actions, _ = self.policy.predict(self._obs, deterministic=True)
        scaled = self.policy.scale_action(actions)
        if self.action_noise > 0:
            scaled = scaled + self.rng.normal(0.0, self.action_noise, size=scaled.shape)
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def _copy(obs: VecEnvObs) -> VecEnvObs:
    return {k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs)


def _set(obs: VecEnvObs, i: int, value: Any) -> None:
    if isinstance(obs, dict):
        for k in obs:
            obs[k][i] = value[k]
    else:
        obs[i] = value


def _stack(rows: list[VecEnvObs]) -> VecEnvObs:
    if isinstance(rows[0], dict):
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return np.stack(rows)
