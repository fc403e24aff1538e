"""The reward presets: 'barn' pays forward progress and, on success, 100 x the episode's BARN nav metric."""

import numpy as np
import pytest

from envs import BarnNavVecEnv
from envs.nav_env import REWARD_PRESETS, RewardConfig


def episode(reward: str, seed: int) -> tuple[list[float], dict]:
    """Default DWA in generated world 1 (1 s steps) until the episode ends: rewards and final info."""
    env = BarnNavVecEnv(1, reward=reward, time_step=1.0, max_steps=100, worlds=[1])
    env.seed(seed)
    env.reset()
    rewards = []
    while True:
        _, r, done, infos = env.step(env.batch.params.default[None])
        rewards.append(float(r[0]))
        if done[0]:
            return rewards, infos[0]


def test_barn_preset_pays_the_nav_metric_on_success_and_progress_before():
    seed, (rewards, info) = next((s, e) for s in range(20) if (e := episode("barn", s))[1]["status"] == "success")
    assert rewards[-1] == pytest.approx(100 * info["nav_metric"], rel=1e-5) and 12.5 <= rewards[-1] <= 50
    trajectory = info["trajectory"]
    assert sum(rewards[:-1]) == pytest.approx(trajectory[-2][1] - trajectory[0][1], abs=1e-3)  # forward progress
    applr, _ = episode("applr", seed)  # the same episode (same seed): the same progress, 20 for the success
    np.testing.assert_allclose(applr[:-1], rewards[:-1], rtol=1e-6)
    assert applr[-1] == 20.0


def test_presets_and_bad_config():
    assert set(REWARD_PRESETS) == {"ftrl", "applr", "barn"}
    assert REWARD_PRESETS["barn"].success_metric == 100.0 and REWARD_PRESETS["applr"].success_metric == 0.0
    with pytest.raises(ValueError, match="progress_kind"):
        RewardConfig(progress_kind="sideways")
