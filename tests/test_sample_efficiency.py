"""``benchmarks/sample_efficiency.py --quick``: the whole APPLR vs supervised->TD3 path, end to end (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = (
    "applr_env_steps",
    "applr_final_nav_metric",
    "vlm_env_steps_to_applr_final",
    "sft_label_env_steps",
    "sft_only_nav_metric",
    "sft_only_ci95",
    "dwa_nav_metric",
    "dwa_ci95",
    "best_constant_nav_metric",
)


@pytest.mark.slow
def test_quick_mode_writes_the_curves_and_the_summary(tmp_path):
    out, plot = tmp_path / "sample_efficiency.json", tmp_path / "sample_efficiency.png"
    args = [sys.executable, str(REPO / "benchmarks" / "sample_efficiency.py"), "--quick", "--out", str(out)]
    # the recipe from a checkpoint (docs/guide/supervised.md)
    args += ["--vlm-hyperparams", "policy_kwargs:dict(freeze_dpt=True)"]
    run = subprocess.run([*args, "--plot", str(plot)], capture_output=True, text=True, check=True, timeout=1500)
    line = json.loads(run.stdout.strip().splitlines()[-1])
    result = json.loads(out.read_text())
    assert plot.stat().st_size > 10_000
    for key in SUMMARY_KEYS:
        assert key in line and key in result
    assert result["sft_label_env_steps"] > 0 and result["applr_env_steps"] == 2048
    assert result["vlm_hyperparams"] == {"policy_kwargs": "dict(freeze_dpt=True)"}
    (vlm,) = result["vlm"]
    # The VLM's x-axis starts after the supervised stage's simulated steps; its first point is the SFT policy.
    assert vlm["curve"][0]["env_steps"] == vlm["label_env_steps"] and vlm["curve"][0]["td3_steps"] == 0
    assert vlm["curve"][-1]["td3_steps"] == 256
    assert [p["env_steps"] for p in result["applr"][0]["curve"]] == [0, 1024, 2048]
    assert 0.0 <= line["dwa_nav_metric"] <= 0.5
