"""APPLR's reward normalisation (mean/std of the first N rewards, then fixed) in stock TD3 and VLMTD3: statistics,
raw storage, normalised samples (one-step, n-step, Dict), saved in the zip and restored on load, zoo option."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3 import TD3

from envs import BarnNavVecEnv
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.td3.reward_norm import (
    NormalizedRewardDictReplayBuffer,
    NormalizedRewardNStepReplayBuffer,
    NormalizedRewardReplayBuffer,
    RewardNormalizer,
)
from sb3_vlm.td3.td3 import VLMTD3
from sb3_vlm.workflows.training import build_model
from sb3_vlm.zoo import default_conf, load_zoo_config

FIRST_N = 24


def test_statistics_of_the_first_rewards_then_fixed():
    rewards = np.random.default_rng(0).normal(3.0, 2.0, size=(40, 2))
    norm = RewardNormalizer(first_n=FIRST_N)
    for step in rewards:
        norm.update(step)
    first = rewards.ravel()[:FIRST_N]
    assert norm.frozen and norm.count == FIRST_N
    assert norm.mean == pytest.approx(first.mean()) and norm.std == pytest.approx(first.std())
    later = np.array([100.0, -7.0], dtype=np.float32)
    norm.update(later)  # after the first N nothing changes
    assert norm.mean == pytest.approx(first.mean()) and norm.count == FIRST_N
    out = norm.normalize(later)
    assert out.dtype == np.float32 and np.allclose(out, (later - first.mean()) / first.std(), rtol=1e-5)
    assert RewardNormalizer(4).normalize(later) is later  # nothing seen yet: unchanged
    with pytest.raises(ValueError, match="first_n must be an int >= 2, got 1"):
        RewardNormalizer(1)


def zoo_file(tmp_path: Path, policy: str, **changes) -> Path:
    conf = yaml.safe_load(default_conf(policy).read_text())
    (env_id,) = conf
    conf[env_id].update(reward_normalization=FIRST_N, learning_starts=16, batch_size=8, n_envs=2, **changes)
    conf[env_id]["env_kwargs"] = {**(conf[env_id].get("env_kwargs") or {}), "max_steps": 10}
    conf[env_id].pop("callback", None)
    path = tmp_path / f"{policy}.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def make(tmp_path: Path, policy: str, n_steps: int):
    """The zoo file's model through ``build_model``: APPLR's MLP on the laser, or the VLM policy (tiny backbone) on
    image + velocity (a Dict observation)."""
    cfg = load_zoo_config(zoo_file(tmp_path, policy, n_steps=n_steps))
    if policy == "vlm":
        cfg.algo_kwargs["policy_kwargs"] = {"backbone": "tiny", "freeze_vlm": True}
        env = BarnNavVecEnv(cfg.n_envs, observation="costmap", image_size=(56, 84), velocity=True, max_steps=10)
    else:
        env = BarnNavVecEnv(cfg.n_envs, max_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "n_steps is ignored" warning: the buffer does n-step
        return build_model(cfg, env, seed=0, tensorboard_log=None, verbose=0)


@pytest.mark.parametrize(
    ("policy", "n_steps", "buffer_class"),
    [
        ("applr", 1, NormalizedRewardReplayBuffer),
        ("applr", 3, NormalizedRewardNStepReplayBuffer),
        ("vlm", 1, NormalizedRewardDictReplayBuffer),
    ],
)
def test_both_algorithms_normalise_samples_and_keep_the_statistics_in_the_zip(tmp_path, policy, n_steps, buffer_class):
    model = make(tmp_path, policy, n_steps)
    assert isinstance(model, VLMTD3 if policy == "vlm" else TD3) and type(model.replay_buffer) is buffer_class
    model.learn(40)
    buffer, norm = model.replay_buffer, model.replay_buffer.normalizer
    raw = buffer.rewards[: buffer.pos]  # stored raw: [steps, n_envs]
    assert norm.frozen and norm.mean == pytest.approx(raw.ravel()[:FIRST_N].mean(), rel=1e-5, abs=1e-6)
    assert norm.std == pytest.approx(raw.ravel()[:FIRST_N].std(), rel=1e-4)

    rows = np.arange(4)
    np.random.seed(1)
    samples = buffer._get_samples(rows)
    np.random.seed(1)
    env_indices = np.random.randint(0, buffer.n_envs, size=(len(rows),))  # the buffer's own draw
    for k, (row, e) in enumerate(zip(rows, env_indices, strict=True)):
        normalised = norm.normalize(raw[row : row + n_steps, e])
        ends = np.logical_or(buffer.dones[row : row + n_steps, e], buffer.timeouts[row : row + n_steps, e])
        stop = int(np.argmax(ends)) + 1 if ends.any() else n_steps  # each reward of the n-step sum normalised
        expected = sum(model.gamma**i * normalised[i] for i in range(stop))
        assert samples.rewards[k, 0].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)

    model.save(tmp_path / "model.zip")
    loaded = load_algorithm(tmp_path / "model.zip", env=model.get_env())
    restored = loaded.replay_buffer.normalizer
    assert type(loaded.replay_buffer) is buffer_class and restored is not norm
    assert (restored.count, restored.mean, restored.std) == (norm.count, norm.mean, norm.std) and restored.frozen


def test_zoo_option_is_checked(tmp_path):
    path = zoo_file(tmp_path, "applr")
    path.write_text(path.read_text().replace(f"reward_normalization: {FIRST_N}", "reward_normalization: true"))
    with pytest.raises(ValueError, match=r"reward_normalization must be an int >= 2 \(the number of first rewards\)"):
        load_zoo_config(path)
