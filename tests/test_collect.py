"""``sb3-vlm collect`` end to end: real server -> collector -> FTRL files -> replay buffer -> TD3 -> hand-off."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from _helpers import free_port, running
from _tiny_ckpt import TinyCheckpoint, build_tiny_checkpoint
from gymnasium import spaces
from PIL import Image
from stable_baselines3 import TD3
from stable_baselines3.common.logger import configure

from envs import BarnNav, BarnNavVecEnv
from envs.planners import DWA_PARAMS
from sb3_vlm.cli import build_parser
from sb3_vlm.formats.ftrl_files import FTRL_IMAGE_SIZE, spread_tail_reward
from sb3_vlm.formats.safe_pickle import safe_load
from sb3_vlm.formats.trajectories import load_trajectories, resize_image
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.serving.app import build_app
from sb3_vlm.serving.client import QwenClient
from sb3_vlm.serving.handoff import publish_policy
from sb3_vlm.serving.server import ServerSettings
from sb3_vlm.td3.replay import fill_replay_buffer
from sb3_vlm.td3.td3 import VLMTD3
from sb3_vlm.workflows.collector import CollectSettings, CollectSummary, collect

H, W = 56, 84
DWA_NAMES = list(DWA_PARAMS.names)
INFO_KEYS = {"world", "time", "collision", "status", "recovery", "smoothness", "img_label", "img_PIL", "last_state"}
RESULT_LINE = re.compile(
    r"(Train|Test): Collision: (\d+), Recovery: -?\d+\.\d{6}, Smoothness: -?\d+\.\d{6}, Status: (\w+), "
    r"Time: \d+\.\d{3}, Reward: (-?\d+\.\d{3}), Opt_time: \d+\.\d{3}, Nav_Metric: (\d\.\d{3}), "
    r"World: (world_\d+\.world)"
)


def run_cli(*argv: str) -> CollectSummary:
    args = build_parser("collect").parse_args(["collect", "--no-progress-bar", *argv])
    return args.func(args)


def load_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def check_episode_files(actor_dir: Path, pickle_path: Path, steps: int, first_frame: int) -> list[list[Any]]:
    """The pickle's FTRL structure (§5.5) and its frames (§5.6) for a served policy; returns the records."""
    records = safe_load(pickle_path)
    assert isinstance(records, list) and len(records) == steps
    for i, record in enumerate(records):
        assert isinstance(record, list) and len(record) == 7
        obs, act, rew, done, info, opt_time, nav_metric = record
        assert isinstance(obs, np.ndarray) and obs.dtype == np.float64 and obs.shape == (1, 2)
        assert isinstance(act, np.ndarray) and act.dtype == np.float64 and act.shape == (7,)
        assert np.all(act >= DWA_PARAMS.low - 1e-6) and np.all(act <= DWA_PARAMS.high + 1e-6)
        assert isinstance(rew, float) and isinstance(done, bool) and done == (i == steps - 1)
        # + the served policy's version (the server has not reloaded yet)
        assert set(info) == INFO_KEYS | {"model_version"} and info["model_version"] == 0
        assert info["world"] == "world_0.world" and isinstance(info["collision"], int)
        assert info["last_state"] == obs[0].tolist()  # the start-of-step velocity, in both places
        assert info["img_label"] == f"FTRL_{first_frame + i + 1:06d}.png"
        image = info["img_PIL"]
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (600, 400)
        # img_PIL is the frame the action was chosen from: the file written before this step.
        assert np.array_equal(np.asarray(image), load_png(actor_dir / f"FTRL_{first_frame + i:06d}.png"))
        assert (opt_time, nav_metric) == (0.0, 0.0) or i == steps - 1
    assert records[-1][5] > 0 and records[-1][4]["status"] in ("timeout", "collision", "success")
    assert (actor_dir / f"FTRL_{first_frame + steps:06d}.png").is_file()  # the frame after the last step
    assert load_png(actor_dir / f"FTRL_{first_frame:06d}.png").shape == (*FTRL_IMAGE_SIZE, 3)
    return records


@pytest.fixture(scope="module")
def sft_ckpt(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("sft") / "checkpoint-5000", num_params=9)


def test_collect_train_publish_reload(sft_ckpt: TinyCheckpoint, tmp_path: Path) -> None:
    """FTRL's loop on one machine: serve the policy, collect, load, fill the buffer, train, hand off, reload."""
    env = BarnNavVecEnv(1, observation="costmap", image_size=(H, W), velocity=True, max_steps=4)
    model = VLMTD3(
        "VLMPolicy",
        env,
        policy_kwargs={"backbone": str(sft_ckpt.path), "freeze_vlm": True},
        actor_lr=1e-2,
        critic_lr=1e-2,
        batch_size=4,
        buffer_size=64,
        learning_starts=0,
        seed=0,
    )
    model.policy.set_training_mode(False)
    buffer = tmp_path / "buffer"
    policy_dir = buffer / "policy"
    assert publish_policy(model.policy, policy_dir, parameter_names=DWA_NAMES).ok  # FTRL: SFT start -> policy/

    with running(build_app(policy_dir, ServerSettings(mode="actor", batch_delay=0.0))) as url:
        summary = run_cli("--server", url, "--buffer", str(buffer), "--episodes", "2", "--max-steps", "4")
        assert [e.steps for e in summary.episodes] == [4, 4] and summary.fallback_steps == 0
        assert [e.source_steps for e in summary.episodes] == [4, 4]
        actor_dir = buffer / "actor_0"
        assert summary.saved == [actor_dir / "traj_1.pickle", actor_dir / "traj_2.pickle"]
        assert sorted(p.name for p in actor_dir.glob("FTRL_*.png")) == [f"FTRL_{k:06d}.png" for k in range(10)]
        assert not list(buffer.rglob("*.tmp"))

        # Every action is the server's answer for the recorded frame and velocity, clipped to the env's ranges.
        client = QwenClient(url, num_history_frames=0, timeout=30)
        episodes = [check_episode_files(actor_dir, actor_dir / f"traj_{n}.pickle", 4, 5 * (n - 1)) for n in (1, 2)]
        for n, records in enumerate(episodes):
            for i, (obs, act, *_rest) in enumerate(records):
                png = (actor_dir / f"FTRL_{5 * n + i:06d}.png").read_bytes()
                answer = client.get_parameters_array(client.infer_from_image_bytes(png, *obs[0]))
                assert np.allclose(act, np.clip(answer[:7], DWA_PARAMS.low, DWA_PARAMS.high), atol=1e-5)
        lines = (actor_dir / "trajectory_results.txt").read_text().splitlines()
        assert len(lines) == 2
        for line, records, report in zip(lines, episodes, summary.episodes, strict=True):
            match = RESULT_LINE.fullmatch(line)
            assert match, line
            assert match.group(1) == "Train" and match.group(3) == records[-1][4]["status"] == report.status
            assert float(match.group(4)) == pytest.approx(sum(r[2] for r in records), abs=1e-3)
            assert match.group(6) == "world_0.world"

        # The trainer's side: load (exact counts), fill the buffer, train a few steps.
        loaded = load_trajectories(buffer, params=DWA_PARAMS, image_size=(H, W), min_age_s=0.0)
        assert loaded.skipped == [] and loaded.episodes == 2 and loaded.n_transitions == 8
        first = loaded.trajectories[0].transitions[0]
        assert np.array_equal(first.obs["image"], resize_image(episodes[0][0][4]["img_PIL"], (H, W)))
        assert np.allclose(first.obs["velocity"], episodes[0][0][0][0])
        assert np.allclose(first.action, DWA_PARAMS.to_unit(episodes[0][0][1]))
        assert fill_replay_buffer(model, loaded) == 8 and model.replay_buffer.size() == 8
        before = {k: v.clone() for k, v in model.actor.mu.state_dict().items()}
        model.set_logger(configure(None, []))
        model.train(gradient_steps=3, batch_size=4)
        assert any(not th.equal(v, model.actor.mu.state_dict()[k]) for k, v in before.items())

        # Hand-off: the server reloads and now answers with the new actor.
        png = (actor_dir / "FTRL_000003.png").read_bytes()
        velocity = tuple(episodes[0][3][0][0])
        old = client.infer_from_image_bytes(png, *velocity)["parameters_array"]
        model.policy.set_training_mode(False)
        result = publish_policy(model.policy, policy_dir, [url], parameter_names=DWA_NAMES, timeout=60)
        assert result.ok and result.reloaded[url]["reload"] == "in_place"
        new = client.infer_from_image_bytes(png, *velocity)["parameters_array"]
        obs = {
            "image": resize_image(load_png(actor_dir / "FTRL_000003.png"), (H, W)).transpose(2, 0, 1)[None],
            "velocity": np.array([velocity], dtype=np.float32),
        }
        expected, _ = model.policy.predict(obs, deterministic=True)
        assert np.allclose(new, expected[0], rtol=1e-4, atol=1e-5)
        assert not np.allclose(new, old, rtol=1e-4, atol=1e-5)
        assert client.health()["model_version"] == 1


def test_collect_with_local_policies(sft_ckpt: TinyCheckpoint, tmp_path: Path) -> None:
    """--policy: an FTRL SFT directory (9 outputs, the first 7 used) and APPLR's TD3 zip (laser observation)."""
    buffer = tmp_path / "buffer"
    summary = run_cli("--policy", str(sft_ckpt.path), "--buffer", str(buffer), "--actor-id", "0", "--max-steps", "2")
    assert summary.episodes[0].source_steps == 2
    obs, act, *_rest = safe_load(buffer / "actor_0" / "traj_1.pickle")[0]
    image = load_png(buffer / "actor_0" / "FTRL_000000.png")
    space = spaces.Dict(
        {"image": spaces.Box(0, 255, (3, H, W), np.uint8), "velocity": spaces.Box(-np.inf, np.inf, (2,), np.float32)}
    )
    reference = VLMDPTExtractor(space, backbone=sft_ckpt.path)  # at the frame's own size, as the server
    sft = {"image": th.from_numpy(image.transpose(2, 0, 1).copy())[None], "velocity": th.tensor(obs, dtype=th.float32)}
    expected = reference.predict_parameters(sft)[0].double().numpy()
    assert expected.shape == (9,) and np.allclose(act, np.clip(expected[:7], DWA_PARAMS.low, DWA_PARAMS.high))

    applr = TD3("MlpPolicy", BarnNavVecEnv(1), policy_kwargs={"net_arch": [16]}, seed=0)
    applr.save(tmp_path / "applr.zip")
    zip_path, out = tmp_path / "applr.zip", tmp_path / "applr"
    assert run_cli("--policy", str(zip_path), "--buffer", str(out), "--max-steps", "2").saved
    records = safe_load(out / "actor_0" / "traj_1.pickle")
    # The laser is not in the files: replay the collector's first reset (world 0 = the actor id, seed 0).
    laser, _ = BarnNav(worlds=[0]).reset(seed=0, options={"world_id": 0})
    expected, _ = applr.predict(laser, deterministic=True)
    assert np.allclose(records[0][1], expected, atol=1e-5)


@pytest.mark.slow
def test_collect_with_a_vlm_zip(sft_ckpt: TinyCheckpoint, tmp_path: Path) -> None:
    env = BarnNavVecEnv(1, observation="costmap", image_size=(H, W), velocity=True)
    vlm = VLMTD3("VLMPolicy", env, policy_kwargs={"backbone": str(sft_ckpt.path), "freeze_vlm": True}, seed=0)
    vlm.save(tmp_path / "vlm.zip")
    out = tmp_path / "vlm"
    assert run_cli("--policy", str(tmp_path / "vlm.zip"), "--buffer", str(out), "--max-steps", "3").saved
    for i, (obs, act, *_rest) in enumerate(safe_load(out / "actor_0" / "traj_1.pickle")):
        image = resize_image(load_png(out / "actor_0" / f"FTRL_{i:06d}.png"), (H, W))
        expected, _ = vlm.predict({"image": image, "velocity": obs[0].astype(np.float32)}, deterministic=True)
        assert np.allclose(act, expected, atol=1e-5)


def test_collect_falls_back_to_default_parameters_when_the_server_is_down(tmp_path: Path) -> None:
    buffer = tmp_path / "buffer"
    dead = f"http://127.0.0.1:{free_port()}"
    argv = ("--server", dead, "--buffer", str(buffer), "--actor-id", "3", "--episodes", "2", "--max-steps", "3")
    summary = run_cli(*argv, "--wait-server", "0", "--retries", "0", "--seed", "1")
    assert [(e.source_steps, e.fallback_steps) for e in summary.episodes] == [(0, 3), (0, 3)]
    actor_dir = buffer / "actor_3"
    default = np.array([s.default for s in DWA_PARAMS.specs])
    for n in (1, 2):
        records = safe_load(actor_dir / f"traj_{n}.pickle")
        assert len(records) == 3 and all(np.array_equal(r[1], default) for r in records)
        assert {r[4]["world"] for r in records} == {"world_3.world"}
    assert len((actor_dir / "trajectory_results.txt").read_text().splitlines()) == 2

    # A second process continues the numbering instead of overwriting the trajectories not yet consumed.
    again = run_cli("--buffer", str(buffer), "--actor-id", "3", "--max-steps", "3", "--seed", "2")
    assert again.saved == [actor_dir / "traj_3.pickle"] and again.fallback_steps == 0
    assert safe_load(actor_dir / "traj_3.pickle")[0][4]["img_PIL"] is not None
    assert (actor_dir / "FTRL_000011.png").is_file() and not (actor_dir / "FTRL_000012.png").exists()
    loaded = load_trajectories(buffer, params=DWA_PARAMS, min_age_s=0.0)
    assert (loaded.episodes, loaded.n_transitions) == (3, 9)


def test_test_mode_and_the_save_rules(tmp_path: Path) -> None:
    buffer = tmp_path / "buffer"
    summary = collect(
        buffer, None, CollectSettings(actor_id=5, mode="test", progress_bar=False, env_kwargs={"max_steps": 2})
    )
    assert summary.saved == [buffer / "test_sync" / "test_5_1.pickle"]
    assert (buffer / "sync" / "actor_5.done").read_text() == "test:1"
    assert not list((buffer / "actor_5").glob("traj_*"))
    assert (buffer / "actor_5" / "trajectory_results.txt").read_text().startswith("Test: Collision: ")
    loaded = load_trajectories(buffer, params=DWA_PARAMS, include_test=True, min_age_s=0.0)
    assert (loaded.episodes, loaded.n_transitions) == (1, 2)

    # One-step episodes are not saved (FTRL), and their frames are removed.
    with pytest.deprecated_call(match="collect: .* pass a CollectSettings"):  # the call form of sb3-vlm 0.1
        short = collect(tmp_path / "short", actor_id=5, episodes=2, progress_bar=False, max_steps=1)
    assert short.saved == [] and [e.skipped for e in short.episodes] == ["1 step or less"] * 2
    assert not list((tmp_path / "short" / "actor_5").glob("*.png"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"mode": "eval"}, "mode must be 'train' or 'test', got 'eval'"),
        ({"episodes": 0}, "episodes must be a positive int, got 0"),
        ({"actor_id": -1}, "actor_id must be an int >= 0, got -1"),
        ({"signal_poll": 0}, "signal_poll must be > 0 s, got 0"),
    ],
)
def test_collect_settings_check_themselves(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"CollectSettings: {message}"):
        CollectSettings(**bad)


def test_spread_tail_reward() -> None:
    def records(rewards: list[float], done: bool, collision: int) -> list[list[Any]]:
        info = {"collision": collision}
        return [[None, None, r, done and i == len(rewards) - 1, info, 0.0, 0.0] for i, r in enumerate(rewards)]

    crashed = records([1.0, 2.0, 3.0, 4.0, 5.0, -100.0], done=True, collision=1)
    spread_tail_reward(crashed)
    assert [r[2] for r in crashed] == [1.0, 2.0, -12.5, -25.0, -50.0, -100.0]
    cut = records([1.0, -8.0], done=False, collision=0)  # ended without done: spread over what there is
    spread_tail_reward(cut)
    assert [r[2] for r in cut] == [-4.0, -8.0]
    timeout = records([1.0, 2.0, -100.0], done=True, collision=0)  # a clean end keeps its rewards
    spread_tail_reward(timeout)
    assert [r[2] for r in timeout] == [1.0, 2.0, -100.0]


def test_png_bytes_are_what_the_server_decodes() -> None:
    """The frame bytes sent to /infer decode to the rendered pixels (lossless PNG, RGB)."""
    from sb3_vlm.formats.ftrl_files import png_bytes as _png

    image = np.random.default_rng(0).integers(0, 256, (*FTRL_IMAGE_SIZE, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(_png(image))) as decoded:
        assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), image)
