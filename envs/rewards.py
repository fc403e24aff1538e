"""BarnNav's rewards: the per-step terms of an episode, the configurations that weigh them, and the presets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PROXIMITY", "REWARD_PRESETS", "RewardConfig", "RewardTerms"]

PROXIMITY = 0.05
"""The proximity penalty starts below this mean clearance (m)."""


@dataclass(frozen=True)
class RewardConfig:
    """Per-step reward (docs/compat/ftrl.md §6.3, docs/compat/applr.md "Reward").

    Terminal steps pay ``failure`` (collision or timeout) or ``success + success_metric * nav_metric`` (the BARN
    metric of the episode, 0.125 to 0.5); other steps pay
    ``slack + collision * (1 - d / 0.05)**2 [if d < 0.05] + progress * delta``, with ``d`` the mean of the 10
    smallest laser clearances from the body (m) and ``delta`` the decrease of the distance to the goal
    (``progress_kind="distance"``, FTRL) or the forward progress along +y (``"forward"``, APPLR's shaping reward).

    :param slack: Reward of every non-terminal step.
    :param failure: Reward of a collision or timeout step.
    :param success: Reward of the step that reaches the goal.
    :param collision: Coefficient of the proximity penalty (negative or 0).
    :param progress: Coefficient of the progress term.
    :param progress_kind: ``"distance"`` or ``"forward"``.
    :param success_metric: Coefficient of the episode's nav metric in the success reward.
    """

    slack: float = 0.0
    failure: float = -100.0
    success: float = 50.0
    collision: float = -1.0
    progress: float = 10.0
    progress_kind: str = "distance"
    success_metric: float = 0.0

    def __post_init__(self) -> None:
        if self.progress_kind not in ("distance", "forward"):
            raise ValueError(f"RewardConfig.progress_kind must be 'distance' or 'forward', got {self.progress_kind!r}")

    def rewards(self, terms: RewardTerms) -> np.ndarray:
        """Rewards ``[N]`` float32 of one step from its terms (so any preset can score the same steps)."""
        delta = terms.distance if self.progress_kind == "distance" else terms.forward
        rewards = self.slack + self.collision * terms.proximity + self.progress * delta
        rewards = np.where(terms.success, self.success + self.success_metric * terms.nav_metric, rewards)
        return np.where(terms.failure, self.failure, rewards).astype(np.float32)


@dataclass(frozen=True)
class RewardTerms:
    """What one step's reward is made of, per episode ``[N]``: the decrease of the distance to the goal along the
    plan (m), the forward progress along +y (m), the proximity penalty's ``(1 - d / 0.05)**2`` term, whether the
    step ends in success or in failure (collision or timeout), and the episode's nav metric (0 unless success)."""

    distance: np.ndarray
    forward: np.ndarray
    proximity: np.ndarray
    success: np.ndarray
    failure: np.ndarray
    nav_metric: np.ndarray


REWARD_PRESETS: dict[str, RewardConfig] = {
    # FTRL configs: time_step 0.5, max_step 200 (docs/compat/ftrl.md §6.3).
    "ftrl": RewardConfig(),
    # APPLR's released config: success 20, no failure/collision/slack terms, shaping = forward progress.
    "applr": RewardConfig(slack=0.0, failure=0.0, success=20.0, collision=0.0, progress=1.0, progress_kind="forward"),
    # Ours (the VLM zoo file's): a return ordered like the BARN metric. Forward progress sums to the distance driven
    # towards the goal line (the same 10 m for every success) and a success pays 100 x its nav metric, so among
    # successes the faster is worth more and a collision loses the success. Spearman's rho of the mean return with
    # the nav metric over reference policies: benchmarks/learning.py (reward_rank_corr; docs/learning.md).
    "barn": RewardConfig(
        slack=0.0, failure=0.0, success=0.0, collision=0.0, progress=1.0, progress_kind="forward", success_metric=100.0
    ),  # fmt: skip
}
