"""RewardNet: learns window returns, held-out metrics by episode, safetensors + JSON round trip, clear errors."""

import json

import numpy as np
import pytest
import torch as th

from sb3_vlm.rewards import RewardNet, RewardNetConfig
from sb3_vlm.rewards.reward_training import WindowData, evaluate_reward_net, fit_reward_net, split_by_episode

PROMPTS = ("balanced", "fast", "clear")
NAMES = ("a", "b")


def synthetic(n_episodes=60, windows=8, seed=0) -> WindowData:
    """Returns depend on the feature, the prompt and the parameters; success on an episode-level feature (the world's
    difficulty, seen in every window)."""
    rng = np.random.default_rng(seed)
    n = n_episodes * windows
    episodes = np.repeat(np.arange(n_episodes), windows)
    features = rng.normal(size=(n, 16)).astype(np.float32)
    difficulty = rng.normal(size=n_episodes)
    features[:, 2] = difficulty[episodes] + rng.normal(scale=0.2, size=n)
    prompts = rng.integers(0, len(PROMPTS), n)
    params = rng.uniform(-1, 1, (n, len(NAMES))).astype(np.float32)
    returns = 3 * features[:, 0] - 2 * features[:, 1] + np.array([0.0, 4.0, -4.0])[prompts] + params[:, 0]
    returns = returns - 3 * difficulty[episodes] + rng.normal(scale=0.3, size=n)
    success = (difficulty < 0)[episodes]
    episode_sum = np.bincount(episodes, weights=returns)
    nav_metric = np.where(success, 0.1 + 0.01 * episode_sum[episodes].clip(0, 40), 0.0)
    return WindowData(features, prompts, params, returns, episodes, success, nav_metric)


@pytest.fixture(scope="module")
def fitted():
    return fit_reward_net(synthetic(), PROMPTS, NAMES, hidden=(64, 32), epochs=60, seed=0)


def test_split_keeps_episodes_whole():
    data = synthetic(10, 4)
    train, val = split_by_episode(data, 0.3, seed=1)
    assert len(np.intersect1d(data.episodes[train], data.episodes[val])) == 0
    assert len(np.unique(data.episodes[val])) == 3
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_episode(data, 1.0)


def test_fit_predicts_held_out_returns_and_success(fitted):
    net, metrics = fitted
    val = metrics["val"]
    assert val["episodes"] == 12 and val["windows"] == 96
    assert val["window_return_corr"] > 0.9
    assert val["nav_metric_corr"] > 0.7
    assert val["success_auc"] > 0.8
    # The untrained network of the same config is no predictor: the metric measures learning.
    fresh = RewardNet(net.config)
    assert abs(evaluate_reward_net(fresh, synthetic(seed=1))["window_return_corr"] or 0.0) < 0.5


def test_save_load_round_trip(fitted, tmp_path):
    net, metrics = fitted
    net.save_pretrained(tmp_path / "rn", metadata={"metrics": metrics})
    assert (tmp_path / "rn" / "model.safetensors").is_file()
    loaded = RewardNet.from_pretrained(tmp_path / "rn")
    data = synthetic(seed=2)
    for a, b in zip(
        net.predict(data.features, data.prompts, data.params),
        loaded.predict(data.features, data.prompts, data.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert loaded.config.prompts == PROMPTS
    assert RewardNet.read_metadata(tmp_path / "rn")["metrics"]["val"]["windows"] == 96


def test_bad_inputs_and_files_are_named(fitted, tmp_path):
    net, _ = fitted
    with pytest.raises(ValueError, match=r"features \[B, 16\]"):
        net(th.zeros(2, 5), th.zeros(2, dtype=th.long), th.zeros(2, 2))
    with pytest.raises(ValueError, match="prompt indices"):
        net(th.zeros(1, 16), th.tensor([3]), th.zeros(1, 2))
    with pytest.raises(FileNotFoundError, match="config.json"):
        RewardNet.from_pretrained(tmp_path)
    net.save_pretrained(tmp_path / "rn")
    config = json.loads((tmp_path / "rn" / "config.json").read_text())
    (tmp_path / "rn" / "config.json").write_text(json.dumps({**config, "depth": 3}))
    with pytest.raises(ValueError, match="unknown keys"):
        RewardNet.from_pretrained(tmp_path / "rn")
    with pytest.raises(ValueError, match="return_std"):
        RewardNetConfig(prompts=PROMPTS, param_names=NAMES, return_std=0.0)


def test_window_file_round_trip(tmp_path):
    data = synthetic(3, 2)
    path = data.save(tmp_path / "w.npz")
    loaded = WindowData.load(path)
    np.testing.assert_array_equal(loaded.returns, data.returns)
    np.savez(tmp_path / "bad.npz", features=data.features)
    with pytest.raises(ValueError, match="missing arrays"):
        WindowData.load(tmp_path / "bad.npz")
