"""``sb3-vlm compare``: several policies on the same held-out worlds and seeds -> table, CSV and PNG plots."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sb3_vlm.cli.evaluate import add_common_arguments, policy_of, world_list
from sb3_vlm.workflows.evaluation import SUMMARY_COLUMNS, compare, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policies", nargs="+", help="[name=]spec for each policy (see `sb3-vlm eval --help`)")
    add_common_arguments(parser)
    parser.add_argument("--out", type=Path, help="output directory (default runs/compare-<time>)")
    parser.add_argument("--plot-worlds", type=int, default=4, help="worlds drawn with trajectories")
    parser.add_argument("--json", action="store_true", help="print one JSON object per policy")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    policies = [policy_of(spec, args) for spec in args.policies]
    worlds = world_list(args.worlds, args.barn_dir)
    stats = compare(
        policies, worlds, args.runs, out, args.barn_dir, args.seed, args.max_envs, args.plot_worlds, not args.json
    )
    if args.json:
        for row in stats:
            print(json.dumps(row))
    else:
        print(format_table(stats, SUMMARY_COLUMNS))
        print(
            f"\nwritten to {out}: summary.md, summary.csv, per_world.csv, episodes.csv, "
            "per_world_nav_metric.png, trajectories.png"
        )
    return stats
