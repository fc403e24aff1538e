"""FTRL's loop over collectors on this machine: `sb3-vlm collect --follow-signal` processes against a real server,
`BufferLearner` training on their files, publishing and reloading; the signal file's pause/train/test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import free_port, running
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from envs import BarnNavVecEnv
from envs.planners import DWA_PARAMS
from sb3_vlm.cli import main
from sb3_vlm.formats.ftrl_files import read_signal, write_signal
from sb3_vlm.serving.app import build_app
from sb3_vlm.serving.client import QwenClient
from sb3_vlm.serving.handoff import publish_policy
from sb3_vlm.serving.server import ServerSettings
from sb3_vlm.td3.td3 import VLMTD3
from sb3_vlm.workflows.buffer_learner import BufferLearner
from sb3_vlm.workflows.collector import CollectSettings, collect

ROOT = Path(__file__).resolve().parents[1]
H, W = 56, 84


def results_lines(buffer: Path) -> int:
    """Episodes the collectors saved so far (``trajectory_results.txt`` is append-only; pickles are consumed)."""
    return sum(len(p.read_text().splitlines()) for p in buffer.glob("actor_*/trajectory_results.txt"))


def start_collector(buffer: Path, url: str, actor_id: int) -> subprocess.Popen:
    argv = ["collect", "--server", url, "--buffer", str(buffer), "--actor-id", str(actor_id), "--seed", str(actor_id)]
    argv += ["--episodes", "1000", "--max-steps", "4", "--follow-signal", "--no-progress-bar", "--wait-server", "30"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sb3_vlm.cli", *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_learn_from_buffer_with_two_collect_processes(tmp_path: Path) -> None:
    env = BarnNavVecEnv(1, observation="costmap", image_size=(H, W), velocity=True, max_steps=4)
    model = VLMTD3(
        "VLMPolicy",
        env,
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True},
        actor_lr=1e-2,
        critic_lr=1e-2,
        batch_size=4,
        buffer_size=256,
        seed=0,
        tensorboard_log=str(tmp_path / "tb"),
    )
    buffer, run_dir = tmp_path / "buffer", tmp_path / "run"
    policy_dir = buffer / "policy"
    publish_policy(model.policy, policy_dir, parameter_names=list(DWA_PARAMS.names))
    dead = f"http://127.0.0.1:{free_port()}"
    with running(build_app(policy_dir, ServerSettings(mode="actor", batch_delay=0.0))) as url:
        learner = BufferLearner(
            model,
            buffer,
            [url, dead],
            run_dir=run_dir,
            collect_per_step=8,
            update_per_step=2,
            pre_collect=8,
            test_every=2,
            test_episodes=2,
            test_timeout=60,
            poll_interval=0.1,
            min_age_s=0.0,
        )
        errors: list[BaseException] = []

        def learn() -> None:
            try:
                learner.learn(32)
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        thread = threading.Thread(target=learn, daemon=True)
        thread.start()
        collectors = [start_collector(buffer, url, i) for i in (0, 1)]
        try:
            # Pause after the first cycle: the collectors stop after their episode, the learner waits.
            wait_for(lambda: len(learner.cycles) >= 1 or errors, 120, "the first cycle")
            assert not errors, errors
            write_signal(buffer, "pause")
            time.sleep(2.0)  # the episodes under way end (4 steps each)
            saved, steps, n_cycles = results_lines(buffer), model.num_timesteps, len(learner.cycles)
            time.sleep(2.5)
            assert (results_lines(buffer), model.num_timesteps, len(learner.cycles)) == (saved, steps, n_cycles)
            assert read_signal(buffer) == "pause"
            write_signal(buffer, "train")
            thread.join(timeout=180)
            assert not thread.is_alive() and not errors, errors
            health = QwenClient(url, num_history_frames=0).health()
        finally:
            for process in collectors:
                process.terminate()
            for process in collectors:
                process.wait(timeout=30)
        assert results_lines(buffer) > saved  # collection resumed

    cycles = learner.cycles  # a poll may bring more than 8 transitions: 3 or 4 cycles
    assert len(cycles) >= 3 and model.num_timesteps >= 32 and learner.paused_s >= 2.0
    assert all(c.transitions >= 8 for c in cycles[:-1])  # the last one only needs what is left of the 32
    assert all(c.updates == max(1, round(2 * c.transitions / 8)) for c in cycles)
    # Every publication went to the live server (reloaded) and failed for the dead one, which did not stop anything.
    n = len(cycles) + 1  # the starting policy, then one per cycle
    assert learner.version == n and learner.reload_failures == n and health["model_version"] == n
    assert all(c.reloaded == [url] and list(c.reload_failed) == [dead] for c in cycles)
    # The collectors acted with newer and newer policies (the server's reload count recorded in their files).
    newest = [max(v for v in c.model_versions if v is not None) for c in cycles]
    assert all(v is not None for c in cycles for v in c.model_versions)
    assert newest == sorted(newest) and newest[-1] > newest[0] >= 1, newest  # 1: the learner's first publication
    # Test phases after cycles 2 and 4, from the collectors' test pickles; best policy kept FTRL's way.
    assert [c.test is not None for c in cycles] == [i % 2 == 1 for i in range(len(cycles))]
    assert all(0.0 <= c.test["nav_metric"] <= 0.5 for c in cycles if c.test)
    assert (run_dir / "best_model" / "best_info.txt").is_file() and list(run_dir.glob("policy_step_*"))
    assert (run_dir / "best_model" / "exploration_noise.pkl").is_file()
    assert not list((buffer / "test_sync").glob("*.pickle")) and read_signal(buffer) == "train"

    (event_file,) = (tmp_path / "tb").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for key in ("Episode_reward", "Episode_nav_metric", "Success_rate", "Test_nav_metric", "Test_counts"):
        assert f"train/{key}" in tags, key
    assert [e.value for e in events.Scalars("buffer/reload_failures")][-1] == n
    assert np.all(np.diff([e.value for e in events.Scalars("buffer/collector_model_version")]) >= 0)


def test_cli_learns_from_files_and_survives_a_dead_server(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The CLI on files already written (a Gazebo machine's backlog): cycles of 8, reloads to a dead server counted,
    a test phase without collectors gives up after --test-timeout and training ends normally."""
    buffer = tmp_path / "buffer"
    for actor in (0, 1):
        collect(
            buffer,
            None,
            CollectSettings(actor_id=actor, episodes=3, progress_bar=False, seed=actor, env_kwargs={"max_steps": 4}),
        )
    conf = tmp_path / "conf.yml"
    conf.write_text(
        "BarnNavCostmap-v0:\n  n_timesteps: 24\n  policy: 'sb3_vlm.VLMTD3Policy'\n  batch_size: 4\n"
        "  learning_starts: 8\n  train_freq: 8\n  gradient_steps: 2\n  buffer_size: 100\n  noise_type: 'normal'\n"
        "  noise_std: 0.1\n  policy_kwargs: \"dict(backbone='tiny', freeze_vlm=True)\"\n"
        "  env_kwargs:\n    image_size: [56, 84]\n    velocity: true\n    max_steps: 4\n"
    )
    dead = f"http://127.0.0.1:{free_port()}"
    argv = ["learn-from-buffer", "--buffer", str(buffer), "--servers", dead, "--conf-file", str(conf)]
    argv += ["--log-dir", str(tmp_path / "runs"), "--test-timeout", "0.3", "--poll-interval", "0.05", "--min-age", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # The backlog is spread over cycles of 8, oldest files first: three cycles, 2 updates per 8 transitions.
    summary = "24 transitions, 6 updates, 3 cycles, 4 publications (4 failed reloads), 0 test phases (3 without test"
    assert summary in out, out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "model.zip").is_file() and (run_dir / "policy" / "exploration_noise.pkl").is_file()
    assert (buffer / "policy" / "sb3_vlm_config.json").is_file() and not list(buffer.rglob("traj_*.pickle*"))
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["num_timesteps"] == 24 and sorted(a for a, _, _ in state["consumed"]) == [0, 0, 0, 1, 1, 1]
    assert read_signal(buffer) == "train"

    write_signal(buffer, "pause")
    (buffer / "sync" / "continue.signal").write_text("stop\n")
    with pytest.raises(ValueError, match=r"continue\.signal: expected one of \['train', 'test', 'pause'\], got 'stop'"):
        read_signal(buffer)


def test_learn_from_buffer_old_home_is_a_deprecated_alias():
    from sb3_vlm.workflows import buffer_learner
    from sb3_vlm.workflows.buffer_runs import learn_from_buffer

    with pytest.deprecated_call(match="import it from sb3_vlm.workflows.buffer_runs"):
        assert buffer_learner.learn_from_buffer is learn_from_buffer
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        buffer_learner.nope  # noqa: B018


def test_a_collector_runs_every_test_phase_even_without_train_between(tmp_path: Path) -> None:
    # A learner can end a test phase and start the next one between two polls of a collector (a short cycle filled by
    # the other collectors): the signal reads "test" both times. Before the fix the collector took the new phase for
    # the one it had run and waited; the learner got no test episode from it until its test timeout.
    env = BarnNavVecEnv(1, observation="costmap", image_size=(H, W), velocity=True, max_steps=4)
    model = VLMTD3("VLMPolicy", env, policy_kwargs={"backbone": "tiny", "freeze_vlm": True}, seed=0)
    buffer = tmp_path / "buffer"
    publish_policy(model.policy, buffer / "policy", parameter_names=list(DWA_PARAMS.names))
    write_signal(buffer, "pause")

    def test_files() -> list[Path]:
        return sorted((buffer / "test_sync").glob("*.pickle"))

    with running(build_app(buffer / "policy", ServerSettings(mode="actor", batch_delay=0.0))) as url:
        collector = start_collector(buffer, url, 0)
        try:
            write_signal(buffer, "test")
            wait_for(lambda: test_files(), 120, "the first test phase's episodes")
            first = -1
            while len(test_files()) != first:  # until the collector has run all its test worlds and waits
                first = len(test_files())
                time.sleep(2.0)
            for path in test_files():
                path.unlink()  # the learner consumed them
            write_signal(buffer, "test")  # the next phase, no "train" seen in between
            wait_for(lambda: len(test_files()) == first, 120, "the second test phase's episodes")
        finally:
            collector.terminate()
            collector.wait(timeout=30)
