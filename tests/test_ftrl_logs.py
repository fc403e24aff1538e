"""FTRL's logs and folders from `sb3-vlm train`: TensorBoard keys (§4.6), terminal summary, policy_step_<k>/,
best_model/best_info.txt, exploration_noise.pkl that our server loads past, test evaluation on by default."""

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from _helpers import png, running
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from envs.worlds import VAL_IDS
from sb3_vlm.callbacks.nav_metrics import path_length
from sb3_vlm.cli import main
from sb3_vlm.serving.app import build_app
from sb3_vlm.serving.client import QwenClient
from sb3_vlm.serving.server import ServerSettings
from sb3_vlm.zoo import default_conf

FTRL_KEYS = [
    "Episode_reward", "Episode_length", "Episode_nav_metric", "Test_nav_metric", "Test_time", "Test_length",
    "Test_counts", "Success_rate", "Flip_rate", "Timeout_rate", "Collision", "Actor_grad_norm", "Critic_grad_norm",
    "Actor_loss", "Critic_loss", "fps", "n_episode", "Exploration_noise", "Steps", "Time",
]  # fmt: skip


def small_vlm_conf(tmp_path: Path) -> Path:
    """The VLM zoo file at a test budget: short episodes so that training episodes end, small images."""
    conf = yaml.safe_load(default_conf("vlm").read_text())
    entry = conf["BarnNavCostmap-v0"]
    entry.update(n_timesteps=48, n_envs=4, batch_size=8, learning_starts=8, n_steps=1)
    entry["env_kwargs"].update(max_steps=6, image_size=[56, 84])
    path = tmp_path / "vlm_small.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def test_path_length():
    assert path_length(np.array([[0, 0], [3, 4], [3, 5]])) == pytest.approx(6.0)


def test_train_writes_ftrl_keys_folders_and_summary(tmp_path, capsys):
    argv = ["train", "--conf-file", str(small_vlm_conf(tmp_path)), "--log-dir", str(tmp_path / "runs"),
            "--eval-episodes", "2", "--final-eval", "0", "--no-progress-bar", "--torch-threads", "1"]  # fmt: skip
    assert main(argv) == 0  # no --eval-freq: evaluations run by default (every 48 // 5 = 9 steps)
    (run_dir,) = (tmp_path / "runs").iterdir()
    out = capsys.readouterr().out
    summaries = re.findall(r"---- step (\d+), (\d+) episodes ----", out)
    assert len(summaries) == 5, out  # at 12, 20, 28, 36, 44 (4 envs per step)
    assert "Test_nav_metric: " in out and "Episode_nav_metric: " in out

    (event_file,) = (run_dir / "tb").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    missing = [key for key in FTRL_KEYS if f"train/{key}" not in tags]
    assert missing == [], sorted(tags)
    assert any(t.startswith("train/Status_counts/") for t in tags)
    assert "train/actor_loss" in tags and "time/fps" in tags  # SB3's own keys stay
    counts = [e.value for e in events.Scalars("train/Test_counts")]
    assert counts and set(counts) == {2.0}
    # Every evaluation reaches TensorBoard, the last one too (it was lost when no episode ended after it).
    assert [e.step for e in events.Scalars("train/Test_counts")] == [int(s) for s, _ in summaries]
    assert all(0.0 <= e.value <= 0.5 for e in events.Scalars("train/Test_nav_metric"))

    # policy_step_<k>/ for each improvement (the first evaluation always is one), best_model/ with best_info.txt
    steps = sorted(int(p.name.removeprefix("policy_step_")) for p in run_dir.glob("policy_step_*"))
    assert steps and steps[0] == int(summaries[0][0]) and set(steps) <= {int(s) for s, _ in summaries}
    info = (run_dir / "best_model" / "best_info.txt").read_text()
    assert f"step: {steps[-1]}\n" in info and re.search(r"Test_nav_metric: 0\.\d{6}", info)
    chosen_on = {int(w) for w in re.search(r"worlds: ([\d,]+)", info).group(1).split(",")}
    assert len(chosen_on) == 2 and chosen_on <= set(VAL_IDS)  # selected on validation worlds, never test worlds
    for folder in (run_dir / "best_model", run_dir / f"policy_step_{steps[0]}", run_dir / "policy"):
        assert (folder / "regression_head" / "pytorch_model.bin").is_file()
        noise = pickle.loads((folder / "exploration_noise.pkl").read_bytes())
        assert isinstance(noise, float) and 0.01 - 1e-9 <= noise <= 0.1  # decaying 0.1 -> 0.01 over the run
    final = pickle.loads((run_dir / "policy" / "exploration_noise.pkl").read_bytes())
    assert final == pytest.approx(0.01)  # the end of the schedule

    # FTRL's server reads the folder as an SFT checkpoint (head + normalisation); ours too, pickle beside it.
    with running(build_app(run_dir / "best_model", ServerSettings(batch_delay=0.0))) as url:
        client = QwenClient(url, num_history_frames=0, timeout=60)
        data, _ = png(0, (56, 84))
        params = client.get_parameters_array(client.infer_from_image_bytes(data, 0.3, 0.0))
        assert params is not None and len(params) == 9 and np.all(np.isfinite(params))
