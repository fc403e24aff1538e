"""``load_policy``: every format we read, recognised once, behind one ``predict`` in physical units."""

import numpy as np
import pytest
import torch as th
from _helpers import png
from _paths import APPLR_DIR, needs_applr
from _tiny_ckpt import build_tiny_checkpoint
from gymnasium import spaces
from stable_baselines3 import TD3

from envs import BarnNavVecEnv
from envs.planners import DWA_PARAMS
from sb3_vlm import VLMDPTExtractor, VLMTD3Policy, load_policy
from sb3_vlm.policies import FixedParams, SB3Policy, VLMDirectoryPolicy
from sb3_vlm.serving.handoff import publish_policy

H, W = 56, 84


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("sft") / "checkpoint-5000", num_params=9).path


def images(batch: int, seed: int = 0) -> np.ndarray:
    return np.stack([png(seed + i)[1] for i in range(batch)])  # [B, H, W, 3] uint8, as the env renders


def test_fixed_parameters():
    policy = load_policy("slow=dwa:max_vel_x=0.2", params=DWA_PARAMS)
    assert isinstance(policy, FixedParams) and policy.name == "slow" and policy.kind == "dwa"
    out = policy.predict(np.zeros((3, 721), np.float32))
    assert out.shape == (3, 7) and np.allclose(out[:, 0], 0.2) and np.allclose(out[:, 1:], DWA_PARAMS.default[1:])
    assert policy.predict(np.zeros(721, np.float32)).shape == (7,)
    with pytest.raises(ValueError, match="unknown parameter 'speed'"):
        load_policy("dwa:speed=1", params=DWA_PARAMS)
    with pytest.raises(ValueError, match="pass params="):
        load_policy("dwa")


def test_sb3_zip_predicts_what_sb3_predicts(tmp_path):
    model = TD3("MlpPolicy", BarnNavVecEnv(1), policy_kwargs={"net_arch": [16]}, seed=0)
    (tmp_path / "run").mkdir()  # the policy's name is its run directory's
    model.save(tmp_path / "run" / "model.zip")
    policy = load_policy(tmp_path / "run" / "model.zip", params=DWA_PARAMS)
    assert isinstance(policy, SB3Policy) and (policy.name, policy.observation) == ("run", "laser")
    laser = np.random.default_rng(0).uniform(-1, 1, (4, 721)).astype(np.float32)
    np.testing.assert_allclose(policy.predict(laser), model.predict(laser, deterministic=True)[0], rtol=1e-6)
    assert np.all(
        (policy.act(laser, DWA_PARAMS) >= DWA_PARAMS.low) & (policy.act(laser, DWA_PARAMS) <= DWA_PARAMS.high)
    )


def test_sft_checkpoint_with_client_history(sft_dir):
    policy = load_policy(sft_dir, params=DWA_PARAMS)
    assert isinstance(policy, VLMDirectoryPolicy) and policy.kind == "sft" and policy.history_frames == 2
    assert policy.names[-2:] == ("next_linear_vel", "next_angular_vel")
    x, v = images(2), np.array([[0.5, 0.1], [0.2, -0.3]], np.float32)
    space = spaces.Dict({"image": spaces.Box(0, 255, (3, H, W), np.uint8), "velocity": spaces.Box(-9, 9, (2,))})
    reference = VLMDPTExtractor(space, backbone=sft_dir)
    obs = {"image": th.from_numpy(x.transpose(0, 3, 1, 2).copy()), "velocity": th.from_numpy(v)}
    expected = reference.predict_parameters(obs).double().numpy()
    np.testing.assert_allclose(policy.predict(x, v), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy.predict(x[0], v[0]), expected[0], rtol=1e-5, atol=1e-6)
    # Real earlier frames reach the history encoder (the extractor's own path repeats the current frame).
    earlier = [[images(1, seed=10)[0], images(1, seed=11)[0]], None]
    with_history = policy.predict(x, v, history=earlier)
    assert not np.allclose(with_history[0], expected[0]) and np.allclose(with_history[1], expected[1], atol=1e-5)
    assert policy.act({"image": x, "velocity": v}, DWA_PARAMS).shape == (2, 7)


def test_policy_directory_is_the_td3_actor_in_physical_units(sft_dir, tmp_path):
    obs_space = spaces.Box(0, 255, (3, H, W), np.uint8)
    action_space = spaces.Box(DWA_PARAMS.low, DWA_PARAMS.high, dtype=np.float32)
    policy = VLMTD3Policy.from_pretrained(sft_dir, obs_space, action_space, net_arch=[8])
    publish_policy(policy, tmp_path / "policy", parameter_names=DWA_PARAMS.names)
    loaded = load_policy(f"td3={tmp_path / 'policy'}")  # the hand-off records the ranges: no table needed
    assert isinstance(loaded, VLMDirectoryPolicy) and (loaded.name, loaded.kind) == ("td3", "actor")
    assert loaded.names == DWA_PARAMS.names and loaded.input_size == (H, W)
    x = images(3)
    policy.set_training_mode(False)
    expected, _ = policy.predict(x, deterministic=True)
    np.testing.assert_allclose(loaded.predict(x), expected, rtol=1e-5, atol=1e-5)
    loaded.noise_std = 0.5
    assert not np.allclose(loaded.predict(x, deterministic=False), expected)


@needs_applr
def test_published_applr_actor():
    policy = load_policy(APPLR_DIR, params=DWA_PARAMS)
    assert (policy.kind, policy.observation, policy.env_kwargs["time_step"]) == ("applr", "laser", 1.0)
    out = policy.predict(np.zeros((2, 721), np.float32))
    assert out.shape == (2, 7) and np.all(out >= DWA_PARAMS.low - 1e-6) and np.all(out <= DWA_PARAMS.high + 1e-6)


def test_unknown_specs_are_named(tmp_path):
    with pytest.raises(ValueError, match="expected 'dwa'"):
        load_policy("nonsense-policy", params=DWA_PARAMS)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_policy(tmp_path / "missing.zip", params=DWA_PARAMS)
