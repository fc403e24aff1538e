"""APPLR's reward normalisation (fixed statistics of the first rewards, applied at sample time through SB3's buffer
hook) for off-policy SB3 algorithms, stock ``TD3`` and ``VLMTD3`` alike; in a zoo file: ``reward_normalization: 1000``
(docs/guide/training.md "The zoo files")."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from sb3_vlm._validation import check_int

__all__ = [
    "NormalizedRewardDictReplayBuffer",
    "NormalizedRewardNStepReplayBuffer",
    "NormalizedRewardReplayBuffer",
    "RewardNormalizer",
    "reward_normalization_kwargs",
]


class RewardNormalizer:
    """
    Mean and standard deviation (population, ddof 0) of the first ``first_n`` rewards, then fixed.

    :param first_n: Rewards the statistics are computed from (APPLR: 1,000).
    :param eps: Added to the standard deviation before dividing.
    """

    def __init__(self, first_n: int = 1000, eps: float = 1e-8) -> None:
        check_int(first_n, "first_n", 2, owner="RewardNormalizer")
        self.first_n, self.eps = first_n, float(eps)
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0  # sum of squared deviations (Welford)

    @property
    def frozen(self) -> bool:
        """The statistics are final (``first_n`` rewards seen)."""
        return self.count >= self.first_n

    @property
    def std(self) -> float:
        return float(np.sqrt(self._m2 / self.count)) if self.count else 1.0

    def update(self, rewards: np.ndarray) -> None:
        """Take the raw rewards of one step (``[n_envs]``) into the statistics, until they are frozen."""
        for reward in np.asarray(rewards, dtype=np.float64).ravel()[: max(self.first_n - self.count, 0)]:
            self.count += 1
            delta = reward - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (reward - self.mean)

    def normalize(self, rewards: np.ndarray) -> np.ndarray:
        """``(r - mean) / (std + eps)`` with the statistics so far (identity before the first reward)."""
        if self.count == 0:
            return rewards
        return ((rewards - self.mean) / (self.std + self.eps)).astype(rewards.dtype, copy=False)

    def __repr__(self) -> str:
        return f"RewardNormalizer(first_n={self.first_n}, count={self.count}, mean={self.mean:.4g}, std={self.std:.4g})"


class _NormalizedRewards:
    """Replay-buffer mixin: raw rewards stored and counted into the normaliser; sampled rewards normalised."""

    def __init__(self, *args: Any, normalizer: RewardNormalizer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.normalizer = normalizer if normalizer is not None else RewardNormalizer()

    def add(self, obs: Any, next_obs: Any, action: np.ndarray, reward: np.ndarray, *args: Any, **kwargs: Any) -> None:
        self.normalizer.update(reward)
        super().add(obs, next_obs, action, reward, *args, **kwargs)  # type: ignore[misc]

    def _normalize_reward(self, reward: np.ndarray, env: VecNormalize | None = None) -> np.ndarray:
        return self.normalizer.normalize(super()._normalize_reward(reward, env))  # type: ignore[misc]


class NormalizedRewardReplayBuffer(_NormalizedRewards, ReplayBuffer):
    """``ReplayBuffer`` with APPLR's reward normalisation (``normalizer=`` a :class:`RewardNormalizer`)."""


class NormalizedRewardDictReplayBuffer(_NormalizedRewards, DictReplayBuffer):
    """``DictReplayBuffer`` with APPLR's reward normalisation (``normalizer=`` a :class:`RewardNormalizer`)."""


class NormalizedRewardNStepReplayBuffer(_NormalizedRewards, NStepReplayBuffer):
    """``NStepReplayBuffer`` with APPLR's reward normalisation: each reward of the n-step sum is normalised."""


def reward_normalization_kwargs(
    observation_space: spaces.Space, n_steps: int = 1, gamma: float = 0.99, first_n: int = 1000
) -> dict[str, Any]:
    """``replay_buffer_class`` and ``replay_buffer_kwargs`` for an off-policy SB3 algorithm: the buffer SB3 would
    choose for this observation space and ``n_steps``, with a fresh :class:`RewardNormalizer` of ``first_n``."""
    kwargs: dict[str, Any] = {"normalizer": RewardNormalizer(first_n)}
    if isinstance(observation_space, spaces.Dict):
        if n_steps > 1:
            raise ValueError(f"n-step returns are not supported for Dict observations by SB3, got n_steps={n_steps}")
        buffer_class: type[ReplayBuffer] = NormalizedRewardDictReplayBuffer
    elif n_steps > 1:
        buffer_class, kwargs = NormalizedRewardNStepReplayBuffer, {**kwargs, "n_steps": n_steps, "gamma": gamma}
    else:
        buffer_class = NormalizedRewardReplayBuffer
    return {"replay_buffer_class": buffer_class, "replay_buffer_kwargs": kwargs}
