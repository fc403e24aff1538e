"""The ``sb3-vlm`` CLI on the real simulator: train, kill and resume, eval/compare JSON, zoo files."""

import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
import yaml
from _paths import APPLR_DIR, needs_applr
from stable_baselines3 import TD3

from sb3_vlm.callbacks.checkpoint import REPLAY_BUFFER, STATE_JSON
from sb3_vlm.cli import main
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.zoo import default_conf, load_zoo_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CLI = [sys.executable, "-m", "sb3_vlm.cli"]


def small_applr_conf(tmp_path: Path, n_timesteps: int) -> Path:
    """The APPLR zoo file, shrunk to a test budget."""
    conf = yaml.safe_load(default_conf("applr").read_text())
    conf["BarnNav-v0"].update(
        n_timesteps=n_timesteps,
        n_envs=2,
        learning_starts=40,
        batch_size=16,
        gradient_steps=1,
        buffer_size=5000,
        policy_kwargs="dict(net_arch=[32, 32])",
    )
    conf["BarnNav-v0"]["env_kwargs"]["max_steps"] = 25
    path = tmp_path / "applr_small.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def buffer_rows(checkpoint: Path) -> int:
    with np.load(checkpoint / REPLAY_BUFFER) as data:
        return len(data["rewards"])


def test_zoo_files_parse_for_both_policies():
    applr = load_zoo_config(default_conf("applr"))
    assert applr.env_id == "BarnNav-v0" and applr.algo_kwargs["policy"] == "MlpPolicy"
    assert applr.algo_kwargs["gamma"] == 0.95 and applr.algo_kwargs["n_steps"] == 4
    assert applr.env_kwargs == {"reward": "applr", "time_step": 1.0, "max_steps": 100}
    vlm = load_zoo_config(default_conf("vlm"))
    assert vlm.env_id == "BarnNavCostmap-v0" and vlm.algo_kwargs["policy"].__name__ == "VLMTD3Policy"
    assert vlm.algo_kwargs["policy_kwargs"] == {
        "backbone": "tiny", "freeze_vlm": True, "freeze_dpt": True, "feature_cache_bytes": 2**29
    }  # fmt: skip
    with pytest.raises(ValueError, match="has no entry for 'CartPole-v1'"):
        load_zoo_config(default_conf("vlm"), "CartPole-v1")


def test_hyperparams_override_zoo_keys_and_merge_kwargs(tmp_path, capsys):
    vlm = load_zoo_config(
        default_conf("vlm"),
        hyperparams={"learning_rate": 1e-5, "policy_kwargs": "dict(freeze_dpt=False)", "env_kwargs": {"max_steps": 7}},
    )
    assert vlm.algo_kwargs["learning_rate"] == 1e-5
    assert vlm.algo_kwargs["policy_kwargs"] == {
        "backbone": "tiny", "freeze_vlm": True, "freeze_dpt": False, "feature_cache_bytes": 2**29
    }  # fmt: skip
    assert vlm.env_kwargs == {"planner": "dwa", "reward": "barn", "max_steps": 7}

    # Through the CLI, into a real run (and its saved settings, which eval and --resume read).
    conf = small_applr_conf(tmp_path, n_timesteps=60)
    overrides = ["learning_rate:2e-3", "policy_kwargs:dict(net_arch=[16])", "env_kwargs:{max_steps: 10}"]
    args = ["train", "--conf-file", str(conf), "--log-dir", str(tmp_path), "--no-progress-bar", "--final-eval", "0"]
    assert main([*args, "--hyperparams", *overrides]) == 0
    run = next(tmp_path.glob("BarnNav-v0__*"))
    model = load_algorithm(run / "model.zip")
    assert model.learning_rate == 0.002 and model.policy.net_arch == [16]
    assert model.policy.actor.mu[0].out_features == 16
    saved = json.loads((run / "run_config.json").read_text())["hyperparams"]
    assert saved == {"learning_rate": 0.002, "policy_kwargs": "dict(net_arch=[16])", "env_kwargs": {"max_steps": 10}}
    with pytest.raises(SystemExit):
        main(["train", "--hyperparams", "learning_rate"])
    assert "expected KEY:VALUE such as learning_rate:1e-5, got 'learning_rate'" in capsys.readouterr().err


def buffer_arrays(checkpoint: Path) -> dict[str, np.ndarray]:
    with np.load(checkpoint / REPLAY_BUFFER) as data:
        return {k: data[k] for k in data.files if k != "header"}


def test_train_kill_and_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    conf = small_applr_conf(tmp_path, n_timesteps=600)
    base = ["train", "--conf-file", str(conf), "--checkpoint-freq", "100", "--no-progress-bar"]

    assert main([*base, "--log-dir", str(tmp_path / "full")]) == 0
    full_run = next((tmp_path / "full").iterdir())
    full_rows = buffer_rows(full_run / "checkpoints" / "last")
    assert full_rows == 300  # 600 steps over 2 envs

    proc = subprocess.Popen(
        [*CLI, *base, "--log-dir", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    state = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").glob("*/checkpoints/last/" + STATE_JSON))
        if found and json.loads(found[0].read_text())["num_timesteps"] >= 200:
            state = found[0]
            break
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert state is not None, "no checkpoint at >= 200 steps before the kill"
    killed_run = state.parents[2]
    assert not (killed_run / "model.zip").exists()  # it really died mid-run
    snapshot = tmp_path / "at_kill"
    shutil.copytree(state.parent, snapshot)
    saved = load_algorithm(snapshot / "model.zip")
    saved_rows = buffer_arrays(snapshot)

    # What the resumed run starts from: the checkpoint's weights and buffer, exactly.
    started: dict[str, Any] = {}
    learn = TD3.learn

    def recording_learn(self, *args, **kwargs):
        started["weights"] = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        started["rows"] = {k: np.copy(getattr(self.replay_buffer, k)) for k in saved_rows}
        started["pos"], started["steps"] = self.replay_buffer.pos, self.num_timesteps
        return learn(self, *args, **kwargs)

    monkeypatch.setattr(TD3, "learn", recording_learn)
    assert main(["train", "--resume", str(killed_run), "--no-progress-bar"]) == 0
    n = len(saved_rows["rewards"])
    assert started["steps"] == json.loads((snapshot / STATE_JSON).read_text())["num_timesteps"] == saved.num_timesteps
    assert started["pos"] == n
    for key, value in saved.policy.state_dict().items():
        assert th.equal(started["weights"][key], value), key
    for key, rows in saved_rows.items():
        np.testing.assert_array_equal(started["rows"][key][:n], rows, err_msg=key)
        assert not started["rows"][key][n:].any(), key  # nothing else in the buffer yet

    last = killed_run / "checkpoints" / "last"
    assert json.loads((last / STATE_JSON).read_text())["num_timesteps"] == 600
    assert buffer_rows(last) == full_rows
    final_rows = buffer_arrays(last)
    for key, rows in saved_rows.items():
        np.testing.assert_array_equal(final_rows[key][:n], rows, err_msg=key)  # kept, then appended to
    final = load_algorithm(killed_run / "model.zip")
    assert any(not th.equal(final.policy.state_dict()[k], v) for k, v in saved.policy.state_dict().items())


def test_train_with_simulator_worker_processes(tmp_path):
    conf = small_applr_conf(tmp_path, n_timesteps=120)
    args = ["train", "--conf-file", str(conf), "--env-workers", "2", "--log-dir", str(tmp_path), "--no-progress-bar"]
    assert main(args) == 0
    run = next(tmp_path.glob("BarnNav-v0__*"))
    rows = buffer_rows(run / "checkpoints" / "last")
    assert rows == 60 and (run / "model.zip").stat().st_size > 0  # 120 steps over the 2 envs of 2 workers


def test_eval_and_compare_json(tmp_path, capsys):
    assert main(["eval", "dwa", "--worlds", "0,6", "--runs", "1", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["episodes"] == 2 and 0 <= stats["success_rate"] <= 1 and 0 <= stats["nav_metric"] <= 0.5

    out = tmp_path / "cmp"
    args = ["compare", "dwa", "slow=dwa:max_vel_x=0.2", "--worlds", "0,6", "--runs", "2", "--json", "--out", str(out)]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["policy"] for r in rows] == ["dwa", "slow"]
    for name in (
        "summary.md",
        "summary.csv",
        "per_world.csv",
        "episodes.csv",
        "per_world_nav_metric.png",
        "trajectories.png",
    ):
        assert (out / name).stat().st_size > 0
    ok = [r for r in rows if r["success_rate"] > 0]
    if len(ok) == 2:
        assert rows[1]["time"] > rows[0]["time"]  # 0.2 m/s is slower than 0.5 m/s


def test_compare_generalisation_train_and_test_worlds_side_by_side(tmp_path, capsys):
    out = tmp_path / "gen"
    args = ["compare", "dwa", "slow=dwa:max_vel_x=0.2", "--worlds", "train,test", "--max-worlds", "2", "--runs", "1"]
    assert main([*args, "--json", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["policy"] for r in rows] == ["dwa", "slow"]
    for split in ("train", "test"):  # each split evaluated as `compare --worlds <split>` would
        summary = (out / split / "summary.csv").read_text().splitlines()
        assert len(summary) == 3
        episodes = (out / split / "episodes.csv").read_text().splitlines()[1:]
        expected = {"train": {"1", "2"}, "test": {"0", "6"}}[split]  # the first 2 worlds of the split
        assert {line.split(",")[1] for line in episodes} == expected
        for row in rows:
            assert 0.0 <= row[f"nav_metric ({split})"] <= 0.5 and 0.0 <= row[f"success_rate ({split})"] <= 1.0
    for row in rows:
        assert row["gap"] == pytest.approx(row["nav_metric (train)"] - row["nav_metric (test)"])
    assert (out / "generalisation.md").read_text().startswith("| policy | nav_metric (train) |")


def test_eval_of_an_n_step_zip_does_not_warn(tmp_path, capsys):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs import BarnNav

    model = TD3("MlpPolicy", DummyVecEnv([BarnNav]), n_steps=4, policy_kwargs=dict(net_arch=[8]))
    model.save(tmp_path / "applr.zip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["eval", str(tmp_path / "applr.zip"), "--worlds", "0", "--runs", "1", "--json"]) == 0
    assert not [w for w in caught if "n_steps" in str(w.message)]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 1


@needs_applr
def test_eval_published_applr_actor(capsys):
    assert main(["eval", f"applr={APPLR_DIR}", "--worlds", "0", "--runs", "1", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["policy"] == "applr" and stats["episodes"] == 1


def test_help_is_fast_and_imports_nothing_heavy():
    probe = (
        "import sys, time; t = time.perf_counter(); from sb3_vlm.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'stable_baselines3', 'envs', 'numba') "
        "if m in sys.modules]; print(heavy, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    heavy, seconds = out.stdout.rsplit("]", 1)
    assert heavy == "[" and float(seconds) < 1.0
    started = time.perf_counter()
    result = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "pretrain" in result.stdout
    assert result.stderr == ""  # e.g. no bitsandbytes "Failed to load CPU gemm_4bit_forward" line
    assert time.perf_counter() - started < 3.0


@pytest.mark.parametrize(
    "command", ["train", "eval", "compare", "viz", "serve", "collect", "pretrain", "learn-from-buffer", "ablate"]
)
def test_commands_import_no_optional_quantization_stack(command):
    # peft pulls in bitsandbytes (its "Failed to load CPU gemm_4bit_forward" line and seconds of import time):
    # only LoRA/adapter and quantized backbones need them, and they import them when used.
    probe = (
        "import sys; from sb3_vlm.cli import build_parser; build_parser(sys.argv[1]); "
        "print([m for m in ('peft', 'bitsandbytes') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe, command], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]" and "gemm_4bit" not in out.stderr


def test_cli_errors_are_clear(capsys):
    assert main(["eval", "nonsense-policy", "--worlds", "0", "--runs", "1"]) == 2
    assert "expected 'dwa'" in capsys.readouterr().err
    assert main(["train", "--conf-file", "/nonexistent.yml"]) == 2
    assert "zoo config /nonexistent.yml not found" in capsys.readouterr().err


def test_cli_bugs_keep_their_traceback(monkeypatch, capsys):
    from sb3_vlm.cli import evaluate

    def buggy(args):
        return np.zeros(3) + np.zeros(4)  # a ValueError raised inside numpy: a bug, not bad input

    monkeypatch.setattr(evaluate, "run", buggy)
    with pytest.raises(ValueError, match="broadcast"):
        main(["eval", "dwa"])
    monkeypatch.undo()
    with pytest.raises(ValueError, match="expected 'dwa'"):
        main(["--debug", "eval", "nonsense-policy", "--worlds", "0", "--runs", "1"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id, conf, packages",
    [("BarnNav-v0", "applr", ["envs"]), ("BarnNavCostmap-v0", "vlm", ["envs", "sb3_vlm"])],
)
def test_stock_rl_zoo_trains_and_enjoys_our_files(tmp_path, env_id, conf, packages):
    common = ["--algo", "td3", "--env", env_id, "--gym-packages", *packages, "-f", str(tmp_path)]
    train = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        *common,
        "--conf-file",
        str(default_conf(conf)),
        "-n",
        "160",
        "--hyperparams",
        "n_envs:2",
        "learning_starts:64",
        "batch_size:8",
        "--eval-freq",
        "-1",
    ]
    subprocess.run(train, check=True, capture_output=True, timeout=600)
    assert (tmp_path / "td3" / f"{env_id}_1" / f"{env_id}.zip").is_file()
    enjoy = [sys.executable, "-m", "rl_zoo3.enjoy", *common, "--no-render", "-n", "20"]
    subprocess.run(enjoy, check=True, capture_output=True, timeout=600)
