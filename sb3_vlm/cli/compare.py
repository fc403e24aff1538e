"""``sb3-vlm compare``: several policies on the same held-out worlds and seeds -> table, CSV and PNG plots."""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from envs.worlds import get_world  # noqa: E402
from sb3_vlm.cli.evaluate import (  # noqa: E402
    add_common_arguments,
    evaluate,
    format_table,
    load_policy,
    per_world,
    summary,
    world_list,
)

SUMMARY_COLUMNS = [
    "policy",
    "episodes",
    "success_rate",
    "collision_rate",
    "timeout_rate",
    "time",
    "nav_metric",
    "nav_metric_ci95",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policies", nargs="+", help="[name=]spec for each policy (see `sb3-vlm eval --help`)")
    add_common_arguments(parser)
    parser.add_argument("--out", type=Path, help="output directory (default runs/compare-<time>)")
    parser.add_argument("--plot-worlds", type=int, default=4, help="worlds drawn with trajectories")
    parser.add_argument("--json", action="store_true", help="print one JSON object per policy")


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_per_world(rows: Sequence[dict[str, Any]], policies: Sequence[str], path: Path) -> None:
    """Grouped bars of the mean nav metric per world, one colour per policy."""
    worlds = sorted({r["world"] for r in rows})
    value = {(r["policy"], r["world"]): r["nav_metric"] for r in rows}
    width = 0.8 / len(policies)
    fig, ax = plt.subplots(figsize=(min(16, max(8, 0.1 * len(worlds) * len(policies))), 4.5))
    x = np.arange(len(worlds))
    for k, name in enumerate(policies):
        ax.bar(x + k * width, [value[(name, w)] for w in worlds], width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, [str(w) for w in worlds], rotation=90, fontsize=7)
    ax.set_xlabel("world")
    ax.set_ylabel("BARN nav metric (mean over runs)")
    ax.set_ylim(0, 0.5)
    ax.legend()
    ax.set_title("Nav metric per test world")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(
    records: Sequence[dict[str, Any]], policies: Sequence[str], worlds: Sequence[int], barn_dir: Path | None, path: Path
) -> None:
    """Run-0 trajectories of every policy over the map of each world (obstacles, reference path)."""
    fig, axes = plt.subplots(1, len(worlds), figsize=(3.2 * len(worlds), 6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, w in zip(axes[0], worlds, strict=True):
        world = get_world(w, barn_dir)
        ax.scatter(*world.cylinders.T, s=6, c="0.3", marker="o", linewidths=0)
        ax.plot(*world.reference_path.T, "k--", lw=0.8, label="reference path")
        for k, name in enumerate(policies):
            rec = next(r for r in records if r["policy"] == name and r["world"] == w and r["run"] == 0)
            ax.plot(
                *rec["trajectory"].T,
                color=colours[k % len(colours)],
                lw=1.5,
                label=f"{name}: {rec['status']} {rec['time']:.0f}s",
            )
        ax.set_xlim(-5.2, 0.7)
        ax.set_ylim(-0.3, 14)
        ax.set_aspect("equal")
        ax.set_title(f"world {w}", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    worlds = world_list(args.worlds, args.barn_dir)
    records: list[dict[str, Any]] = []
    names: list[str] = []
    for spec in args.policies:
        policy = load_policy(spec, tuple(args.image_size))
        if policy.name in names:
            raise ValueError(f"two policies are named {policy.name!r}: name them, e.g. a={spec}")
        names.append(policy.name)
        records += evaluate(policy, worlds, args.runs, args.barn_dir, args.seed, args.max_envs, progress=not args.json)
    stats = [summary([r for r in records if r["policy"] == name]) for name in names]
    worlds_rows = per_world(records)
    write_csv(out / "episodes.csv", records, ["policy", "world", "run", "status", "time", "nav_metric", "opt_time"])
    write_csv(out / "per_world.csv", worlds_rows, ["policy", "world", "runs", "success_rate", "time", "nav_metric"])
    write_csv(out / "summary.csv", stats, list(stats[0]))
    table = format_table(stats, SUMMARY_COLUMNS)
    (out / "summary.md").write_text(table + "\n")
    plot_per_world(worlds_rows, names, out / "per_world_nav_metric.png")
    plot_trajectories(records, names, worlds[: args.plot_worlds], args.barn_dir, out / "trajectories.png")
    if args.json:
        for row in stats:
            print(json.dumps(row))
    else:
        print(table)
        print(
            f"\nwritten to {out}: summary.md, summary.csv, per_world.csv, episodes.csv, "
            "per_world_nav_metric.png, trajectories.png"
        )
    return stats
