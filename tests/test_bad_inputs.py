"""Inputs a new user tries: each ends as one line on stderr with exit 2, leaves no run directory, or is accepted
(a run directory for ``eval``); exact progress totals; a dead simulator worker named."""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import envs
from envs.planners import DWA_PARAMS
from sb3_vlm.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CLI = [sys.executable, "-m", "sb3_vlm.cli"]
TINY_CONF = {
    "BarnNav-v0": {
        "n_timesteps": 61,  # not a multiple of n_envs: SB3 runs 62
        "policy": "MlpPolicy",
        "n_envs": 2,
        "learning_starts": 1000,
        "policy_kwargs": "dict(net_arch=[8])",
        "env_kwargs": {"max_steps": 10},
    }
}
QUICK = ["--final-eval", "0", "--eval-freq", "0"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def tiny_conf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("conf") / "tiny.yml"
    path.write_text(yaml.safe_dump(TINY_CONF))
    return path


@pytest.mark.parametrize("timesteps", ["-5", "0"])
def test_timesteps_below_one_is_an_error(tmp_path, timesteps):
    line = one_line_error(run_cli("train", "--timesteps", timesteps, "--log-dir", "runs", cwd=tmp_path))
    assert f"argument --timesteps: expected an integer >= 1, got {timesteps}" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("option", ["--conf-file", "--ftrl-config"])
def test_malformed_yaml_names_file_and_line(tmp_path, option):
    (tmp_path / "bad.yaml").write_text("training_config:\n  actor_lr: [1, 2\n  critic_lr: 3\n")
    line = one_line_error(run_cli("train", option, "bad.yaml", "--log-dir", "runs", cwd=tmp_path))
    assert re.search(r"bad\.yaml, line 3, column \d+: (zoo|FTRL) config is not valid YAML \(expected", line), line
    assert not (tmp_path / "runs").exists()


def test_unknown_worlds_leave_no_run_directory(tmp_path, tiny_conf, capsys):
    args = ["train", "--conf-file", str(tiny_conf), "--worlds", "99999", "--log-dir", str(tmp_path / "runs"), *QUICK]
    assert main(args) == 2
    assert "world_id must be in 0..299, got 99999" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_progress_total_is_the_steps_run_and_eval_accepts_the_run_directory(tmp_path, tiny_conf):
    result = run_cli("train", "--conf-file", str(tiny_conf), "--log-dir", "runs", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "62/62" in result.stdout and "/61" not in result.stdout, result.stdout
    run = next((tmp_path / "runs").iterdir())

    evaluated = run_cli("eval", str(run), "--worlds", "0", "--runs", "1", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"evaluating {run / 'model.zip'} (its final model)" in evaluated.stderr
    assert '"episodes": 1' in evaluated.stdout
    # Not a terminal: no progress bar whose last line is printed twice.
    bar_lines = [line for line in re.split(r"[\r\n]", evaluated.stderr) if "ep/s" in line or "ep]" in line]
    assert len(bar_lines) == len(set(bar_lines)), bar_lines

    (run / "best_model").mkdir()
    shutil.copy(run / "model.zip", run / "best_model" / "model.zip")
    evaluated = run_cli("eval", str(run), "--worlds", "0", "--runs", "1", "--json", cwd=tmp_path)
    assert f"evaluating {run / 'best_model' / 'model.zip'} (its best policy" in evaluated.stderr

    shutil.rmtree(run / "best_model")
    (run / "model.zip").unlink()
    line = one_line_error(run_cli("eval", str(run), cwd=tmp_path))
    assert f"run {run} has no best_model/ or model.zip yet" in line and "--resume" in line


def test_eval_bar_is_not_repeated_in_a_log(tmp_path):
    result = run_cli("eval", "dwa", "--worlds", "0,1", "--runs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bar_lines = [line for line in re.split(r"[\r\n]", result.stderr) if "ep/s" in line]
    assert len(bar_lines) == len(set(bar_lines)), bar_lines


def test_subproc_vec_env_names_a_dead_worker():
    venv = envs.BarnNavSubprocVecEnv(3, n_workers=2, max_steps=5)
    try:
        venv.reset()
        pid = venv.processes[1].pid
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=rf"worker 1 \(pid {pid}, episodes 2..2\) died with exit code -9"):
            venv.step(np.tile(DWA_PARAMS.default, (3, 1)))
    finally:
        venv.close()
    assert not any(p.is_alive() for p in venv.processes)
