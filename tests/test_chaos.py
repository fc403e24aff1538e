"""Kills in the middle of things: ``benchmarks/chaos.py --quick`` (learner, server and collectors SIGKILLed and
restarted as docs/guide/robustness.md says, nothing lost or duplicated), and the recovery pieces it relies on, one by
one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_ckpt import build_tiny_checkpoint

from envs.planners import DWA_PARAMS
from sb3_vlm.cli import main
from sb3_vlm.formats.trajectories import load_trajectories
from sb3_vlm.serving.server import PolicyServer, ServerSettings
from sb3_vlm.workflows.bridge import BufferDirectoryBridge
from sb3_vlm.workflows.collector import EPISODES_LOG, CollectSettings, collect

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_chaos_quick_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--quick", "--out", str(tmp_path / "chaos")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["lost"] == 0 and report["duplicated"] == 0 and report["unlogged"] == 0, report
    assert report["step_count_mismatches"] == 0
    assert report["kills"] == 4 and sum(report["restarts"].values()) == 4
    assert {"learner", "server"} <= set(report["kills_by_target"]), report["kills_by_target"]
    assert report["kill_moments"].get("mid_write") == 1 and report["kill_moments"].get("mid_publication") == 1
    assert report["requested_steps"] <= report["steps"] < report["requested_steps"] + 6  # episodes of <= 6 steps
    assert report["buffer_rows"] == report["steps"]
    assert report["max_recovery_s"] is not None
    assert report["final_model_eval"]["episodes"] == 2, report["final_model_eval"]


def test_collector_restart_finishes_or_undoes_a_killed_write(tmp_path: Path) -> None:
    actor = tmp_path / "actor_0"
    actor.mkdir()
    collect(tmp_path, None, _settings(actor_id=0, episodes=2))
    logged = (actor / EPISODES_LOG).read_text()
    assert logged.splitlines() == [
        f"traj_{n}.pickle {len(r)}" for n, r in ((1, _records(actor, 1)), (2, _records(actor, 2)))
    ]
    # What a SIGKILL leaves: traj_2 logged but not renamed yet, traj_3 half written, a log line cut off, a frame.
    os.replace(actor / "traj_2.pickle", actor / "traj_2.pickle.4242.tmp")
    (actor / "traj_3.pickle.4243.tmp").write_bytes(b"\x80\x04half")
    (actor / "FTRL_000099.png.4243.tmp").write_bytes(b"\x89PNG")
    with open(actor / EPISODES_LOG, "a") as f:
        f.write("traj_3.pick")

    collect(tmp_path, None, _settings(actor_id=0, episodes=1))  # the same command, re-run
    assert not list(actor.glob("*.tmp"))
    lines = (actor / EPISODES_LOG).read_text().splitlines()
    assert lines[:2] == logged.splitlines() and lines[2].startswith("traj_3.pickle ")
    loaded = load_trajectories(tmp_path, params=DWA_PARAMS, min_age_s=0)
    assert [t.path.name for t in loaded.trajectories] == ["traj_1.pickle", "traj_2.pickle", "traj_3.pickle"]

    # Once the learner has consumed and deleted every file, numbering still continues after the ledger.
    bridge = BufferDirectoryBridge(tmp_path, min_age_s=0, hold_consumed=True)
    assert bridge.recover(committed={(0, 1), (0, 2), (0, 3)}) == (0, 0)
    for path in actor.glob("traj_*.pickle"):
        path.unlink()
    collect(tmp_path, None, _settings(actor_id=0, episodes=1))
    assert (actor / "traj_4.pickle").is_file()


def _settings(actor_id: int, episodes: int) -> CollectSettings:
    return CollectSettings(actor_id=actor_id, episodes=episodes, progress_bar=False, env_kwargs={"max_steps": 6})


def _records(actor: Path, n: int) -> list:
    from sb3_vlm.formats.safe_pickle import safe_load

    return safe_load(actor / f"traj_{n}.pickle")


def test_held_files_are_deleted_or_read_again_after_a_learner_restart(tmp_path: Path) -> None:
    collect(tmp_path, None, _settings(actor_id=3, episodes=2))
    actor = tmp_path / "actor_3"
    for n in (1, 2):  # what a learner killed before its checkpoint leaves: both held
        os.replace(actor / f"traj_{n}.pickle", actor / f"traj_{n}.pickle.consumed")
    assert not load_trajectories(tmp_path, params=DWA_PARAMS, min_age_s=0).skipped  # held files are not candidates
    bridge = BufferDirectoryBridge(tmp_path, min_age_s=0, hold_consumed=True)
    assert bridge.recover(committed={(3, 1)}) == (1, 1)  # its checkpoint held episode 1 only
    assert sorted(p.name for p in actor.glob("traj_*")) == ["traj_2.pickle"]


def test_resume_of_a_directory_that_is_not_a_learn_from_buffer_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "run_config.json").write_text(json.dumps({"policy": "vlm"}))
    assert main(["learn-from-buffer", "--resume", str(tmp_path)]) == 2
    assert "a run of `sb3-vlm train`, not of learn-from-buffer" in capsys.readouterr().err
    assert main(["learn-from-buffer", "--resume", str(tmp_path / "nope")]) == 2
    assert "no run_config.json" in capsys.readouterr().err


def test_server_starts_from_the_copy_a_cut_off_publication_left(tmp_path: Path) -> None:
    policy = build_tiny_checkpoint(tmp_path / "policy").path
    leftover = tmp_path / ".policy.old-abc123"
    leftover.mkdir()
    shutil.move(str(policy), leftover / "policy")  # killed between the two renames of the swap
    server = PolicyServer(policy, ServerSettings(params=DWA_PARAMS))
    assert server.health()["model_loaded"] and not policy.exists()
