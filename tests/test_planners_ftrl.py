"""FTRL's coherent data path, DDP: an FTRL-layout DDP checkpoint (P = 8) served over HTTP drives the DDP env through
the collector, and the FTRL DDP pickles it writes (6 parameters, ``[[v, w]]`` observations) fill a DDP replay buffer."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from _helpers import running
from _tiny_ckpt import build_tiny_checkpoint
from stable_baselines3 import TD3

import envs
from envs.planners import DDP_PARAMS
from sb3_vlm.formats.trajectories import load_trajectories
from sb3_vlm.serving.app import build_app
from sb3_vlm.serving.client import QwenClient
from sb3_vlm.serving.server import ServerSettings
from sb3_vlm.td3.replay import fill_replay_buffer
from sb3_vlm.workflows.collector import CollectSettings, collect
from sb3_vlm.workflows.sources import ServerSource

H, W = 56, 84


def test_ftrl_ddp_checkpoint_drives_the_ddp_env_and_its_pickles_fill_a_ddp_buffer(tmp_path: Path) -> None:
    ckpt = build_tiny_checkpoint(tmp_path / "checkpoint-2500", num_params=8)
    app = build_app(ckpt.path, ServerSettings(algorithm="DDP", params=DDP_PARAMS, batch_delay=0.0))
    buffer = tmp_path / "buffer" / "ddp_rlft"
    with running(app) as url:
        client = QwenClient(url, algorithm="DDP")
        assert client.list_algorithms() == {"algorithms": ["DWA", "TEB", "MPPI", "DDP"], "current": "DDP"}
        config = client.get_config()
        assert config is not None and config["algorithm"] == "DDP" and config["num_params"] == 8
        settings = CollectSettings(
            actor_id=6, progress_bar=False, max_save_time=0, env_kwargs=dict(planner="ddp", max_steps=3)
        )
        summary = collect(buffer, ServerSource(url, "DDP"), settings)
    (report,) = summary.episodes
    assert report.steps == 3 and report.source_steps == 3 and report.fallback_steps == 0
    records = pickle.loads(report.path.read_bytes())
    # FTRL's DDP layout (§5.5): obs [[v, w]], act = the 6 DDP parameters (the server's 2 velocities dropped).
    assert all(np.shape(r[0]) == (1, 2) and np.shape(r[1]) == (len(DDP_PARAMS),) for r in records)
    acts = np.stack([r[1] for r in records])
    assert np.all((acts >= DDP_PARAMS.low) & (acts <= DDP_PARAMS.high))

    result = load_trajectories(buffer, params=DDP_PARAMS, image_size=(H, W), min_age_s=0.0)
    assert not result.skipped and len(result.trajectories) == 1
    (trajectory,) = result.trajectories
    np.testing.assert_allclose([t.action for t in trajectory.transitions], DDP_PARAMS.to_unit(acts), atol=1e-6)
    venv = envs.BarnNavVecEnv(1, observation="costmap", image_size=(H, W), planner="ddp")
    model = TD3("CnnPolicy", venv, buffer_size=16, batch_size=2, learning_starts=0, seed=0)
    assert model.action_space.shape == (len(DDP_PARAMS),)
    assert fill_replay_buffer(model, result) == 3
    np.testing.assert_allclose(model.replay_buffer.actions[:3, 0], DDP_PARAMS.to_unit(acts), atol=1e-6)
    model.learn(total_timesteps=2)
    assert model._n_updates > 0
