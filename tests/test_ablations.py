"""The paper checklist's ablation command (`sb3-vlm ablate --quick`) end to end: table, figure, JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_ablation_writes_table_figure_and_json(tmp_path):
    args = [sys.executable, "-m", "sb3_vlm.cli", "ablate", "--quick", "--out", str(tmp_path),
            "--arms", "sft", "base", "dpt_frozen"]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=1200, cwd=REPO).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1  # one JSON line; training output went to train.log
    report = json.loads(lines[0])
    assert [r["arm"] for r in report["rows"]] == ["sft", "base", "dpt_frozen"]
    for row in report["rows"]:
        assert 0.0 <= row["nav_metric"] <= 0.5 and 0.0 <= row["success_rate"] <= 1.0
        assert row["seeds"] == (1 if row["arm"] == "sft" else 2) and len(row["nav_metric_per_seed"]) == row["seeds"]
        assert row["env_steps"] == (0 if row["arm"] == "sft" else 48)
        assert (row["nav_metric_ci95"] is None) == (row["arm"] == "sft")  # one seed: no interval
    assert json.loads((tmp_path / "ablations.json").read_text()) == report
    assert report["settings"]["arms"] == ["sft", "base", "dpt_frozen"] and report["settings"]["out"] == str(tmp_path)
    table = (tmp_path / "ablations.md").read_text().splitlines()
    assert table[0].startswith("| arm | seeds | nav metric, test worlds (95 % CI)") and len(table) == 2 + 3
    assert all(0.0 <= r["train_worlds_nav_metric"] <= 0.5 for r in report["rows"])  # generalisation column
    assert (tmp_path / "ablations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "runs" / "base").iterdir())) == 2  # one run per seed
