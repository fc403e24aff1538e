"""``benchmarks/learning.py --quick``: every stage end to end at toy sizes (slow), and resuming reuses the runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = (
    "probes reward_rank_corr dwa_nav_metric dwa_ci95 best_constant_nav_metric best_constant_ci95 applr_env_steps "
    "applr_final_nav_metric applr_final_ci95 applr_return_first applr_return_last vlm_start_nav_metric "
    "vlm_final_nav_metric vlm_improvement vlm_improvement_ci95 sft_only_nav_metric sft_label_env_steps "
    "vlm_env_steps_to_applr_final seeds settings"
).split()


@pytest.mark.slow
def test_quick_mode_writes_every_key_and_resumes(tmp_path):
    out, plot, work = tmp_path / "learning.json", tmp_path / "curves.png", tmp_path / "work"
    args = [sys.executable, str(REPO / "benchmarks" / "learning.py"), "--quick", "--vlm", "--work-dir", str(work)]
    args += ["--out", str(out), "--plot", str(plot)]
    subprocess.run(args, capture_output=True, text=True, check=True, timeout=1800)
    result = json.loads(out.read_text())
    assert [k for k in KEYS if k not in result] == []
    assert set(result["probes"]) == {"quadratic_bandit", "contextual_bandit", "truncated_chain"}
    assert set(result["reward_rank_corr"]) == {"applr", "ftrl", "barn"}
    assert plot.stat().st_size > 10_000
    runs = sorted(p for p in work.glob("*/*__0__*") if p.is_dir())  # stages/ holds files named after them
    assert [r.parent.name for r in runs] == ["applr", "vlm"] and all((r / "start_model.zip").is_file() for r in runs)
    # A second call finds the finished runs and trains nothing more.
    stamps = {r: (r / "model.zip").stat().st_mtime for r in runs}
    subprocess.run(args, capture_output=True, text=True, check=True, timeout=1800)
    assert {r: (r / "model.zip").stat().st_mtime for r in runs} == stamps
    # The stages before the runs are kept too; --no-train reports the finished runs only (a larger budget: none).
    stems = {p.stem for p in (work / "stages").glob("*.json")}
    assert {s for s in stems if not s.startswith("score_")} == {
        "probes",
        "reward_ordering",
        "dwa",
        "best_constant",
        "sft_only",
    }
    assert len([s for s in stems if s.startswith("score_")]) == 4  # start and final of each route's run
    stages = {p: p.stat().st_mtime for p in (work / "stages").glob("*.json")}
    subprocess.run([*args, "--no-train"], capture_output=True, text=True, check=True, timeout=1800)
    assert json.loads(out.read_text())["applr_seeds"] == [0]
    assert {p: p.stat().st_mtime for p in (work / "stages").glob("*.json")} == stages
    # --vlm-seeds picks the image-route seeds reported: seed 1 never ran, so there is nothing to report.
    missing = subprocess.run([*args, "--no-train", "--vlm-seeds", "1"], capture_output=True, text=True, timeout=1800)
    assert missing.returncode != 0 and "no image-route run" in missing.stderr


def test_vlm_seeds_that_are_not_integers_are_refused_by_name():
    args = [sys.executable, str(REPO / "benchmarks" / "learning.py"), "--vlm-seeds", "3,x"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--vlm-seeds: expected integers separated by commas" in done.stderr
    assert "got '3,x'" in done.stderr
