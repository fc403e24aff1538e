"""``benchmarks/bench_learner.py --quick``: one JSON line with the learner-speed keys (figures are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = (
    "sb3_updates_per_s",
    "ours_updates_per_s",
    "update_speedup",
    "vlm_cached_updates_per_s",
    "vlm_over_mlp_step_ratio",
    "vlm_dpt_trained_over_mlp_step_ratio",
    "applr_env_steps_per_s",
    "applr_500k_minutes",
    "threads",
    "cpu",
    "load_before",
    "callbacks_and_evaluations_share",
    "e2e_share_by_part",
    "update_gflop",
    "fp32_gemm_floor_speedup",
    "bf16_gemm_floor_speedup",
)


def test_quick_mode_prints_one_json_line_with_the_keys():
    script = REPO / "benchmarks" / "bench_learner.py"
    run = subprocess.run(
        [sys.executable, str(script), "--quick", "--e2e-also", "2x2"], capture_output=True, text=True, check=True
    )
    (line,) = run.stdout.strip().splitlines()
    result = json.loads(line)
    assert all(key in result for key in KEYS), sorted(set(KEYS) - set(result))
    assert result["quick"] is True and result["threads"] == 1 and result["worlds"] == "generated"
    parts = result["e2e_seconds_by_part"]
    assert {"update", "simulator", "replay_writes", "checkpoints", "callbacks_without_checkpoints"} <= set(parts)
    assert all(result[k] > 0 for k in ("sb3_updates_per_s", "ours_updates_per_s", "applr_500k_minutes"))
    # the simulator in 2 worker processes with 2 torch threads, beside the default 1x1
    assert set(result["e2e_by_config"]) == {"1x1", "2x2"}
    assert all(c["applr_env_steps_per_s"] > 0 for c in result["e2e_by_config"].values())
