"""``sb3-vlm compare``: several policies on the same held-out worlds and seeds -> table, CSV and PNG plots.

``--worlds train,test`` (several split names) compares them on each split in turn (``<out>/<split>/``) and reports
generalisation side by side: nav metric and success on each split per policy, and the train - test gap
(``generalisation.md``, ``generalisation.csv``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from envs.worlds import SPLITS
from sb3_vlm.cli.evaluate import add_common_arguments, policy_of, world_list
from sb3_vlm.policies import LoadedPolicy
from sb3_vlm.workflows.evaluation import SUMMARY_COLUMNS, compare, format_table, generalisation, write_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policies", nargs="+", help="[name=]spec for each policy (see `sb3-vlm eval --help`)")
    add_common_arguments(parser)
    parser.add_argument("--out", type=Path, help="output directory (default runs/compare-<time>)")
    parser.add_argument("--plot-worlds", type=int, default=4, help="worlds drawn with trajectories")
    parser.add_argument("--json", action="store_true", help="print one JSON object per policy")
    parser.add_argument("--max-worlds", type=int, help="only the first N worlds of each set")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    policies = [policy_of(spec, args) for spec in args.policies]
    splits = [s.strip() for s in args.worlds.split(",")]
    if len(splits) > 1 and all(s in SPLITS for s in splits):
        return _generalisation(args, policies, splits, out)
    worlds = world_list(args.worlds, args.barn_dir)[: args.max_worlds]
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


def _generalisation(
    args: argparse.Namespace, policies: list[LoadedPolicy], splits: list[str], out: Path
) -> list[dict[str, Any]]:
    """The same policies on each split (same seeds), then one side-by-side table."""
    by_set = {}
    for split in splits:
        worlds = world_list(split, args.barn_dir)[: args.max_worlds]
        by_set[split] = compare(
            policies, worlds, args.runs, out / split, args.barn_dir, args.seed, args.max_envs, args.plot_worlds, False
        )
    rows = generalisation(by_set)
    columns = list(rows[0])
    write_csv(out / "generalisation.csv", rows, columns)
    (out / "generalisation.md").write_text(format_table(rows, columns) + "\n")
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows, columns))
        print(f"\nwritten to {out}: generalisation.md, generalisation.csv and one compare directory per split")
    return rows
