"""Evaluation on held-out worlds: every policy meets the same worlds and seeds in the batched simulator; tables with
95% intervals, CSV files and plots (``sb3-vlm eval`` and ``sb3-vlm compare``)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs import BarnNavVecEnv
from envs.planners import DWA_PARAMS
from envs.worlds import get_world
from sb3_vlm.callbacks.nav_metrics import run_episodes
from sb3_vlm.policies import LoadedPolicy

__all__ = [
    "SUMMARY_COLUMNS",
    "compare",
    "evaluate",
    "format_table",
    "generalisation",
    "per_world",
    "summary",
    "write_csv",
]

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


def evaluate(
    policy: LoadedPolicy,
    worlds: Sequence[int],
    runs: int,
    barn_dir: str | Path | None = None,
    seed: int = 0,
    max_envs: int = 100,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``runs`` episodes of ``policy`` on each world, all batched; the episode of (world, run) has the same seed
    for every policy, so policies meet the same noise.

    :param progress: A progress bar on stderr when it is a terminal.
    :return: One record per episode: ``policy``, ``world``, ``run``, ``status``, ``time``, ``nav_metric``,
        ``opt_time``, ``trajectory`` ``[T, 2]``.
    """
    jobs = [(w, r) for r in range(runs) for w in worlds]
    records: list[dict[str, Any]] = []
    # disable=None: a bar on a terminal only; in a log file its carriage returns would repeat the last line
    with tqdm(total=len(jobs), desc=policy.name, disable=None if progress else True, unit="ep") as bar:
        for start in range(0, len(jobs), max_envs):
            chunk = jobs[start : start + max_envs]
            venv = BarnNavVecEnv(
                len(chunk), observation=policy.observation, barn_dir=barn_dir, worlds=list(worlds), **policy.env_kwargs
            )
            # Episode j of the whole evaluation gets seed + j, whatever the chunking.
            act = lambda obs: policy.act(obs, DWA_PARAMS)  # noqa: E731
            finals = run_episodes(act, venv, seed + start, [{"world_id": w} for w, _ in chunk])
            for (w, r), info in zip(chunk, finals, strict=True):
                records.append(
                    {
                        "policy": policy.name,
                        "world": w,
                        "run": r,
                        "status": info["status"],
                        "time": info["time"],
                        "nav_metric": info["nav_metric"],
                        "opt_time": info["opt_time"],
                        "trajectory": info["trajectory"],
                    }
                )
            bar.update(len(chunk))
    return records


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rates, mean time of successful runs, mean nav metric, each with a 95% normal interval half-width."""
    status = np.array([r["status"] for r in records])
    metric = np.array([r["nav_metric"] for r in records])
    times = np.array([r["time"] for r in records])[status == "success"]
    n = len(records)

    def ci(x: np.ndarray) -> float:
        return float(1.96 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")

    success = (status == "success").astype(float)
    return {
        "policy": records[0]["policy"],
        "episodes": n,
        "success_rate": float(success.mean()),
        "success_ci95": ci(success),
        "collision_rate": float(np.mean(status == "collision")),
        "timeout_rate": float(np.mean(status == "timeout")),
        "time": float(times.mean()) if len(times) else float("nan"),
        "time_ci95": ci(times),
        "nav_metric": float(metric.mean()),
        "nav_metric_ci95": ci(metric),
    }


def per_world(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, world): runs, success rate, mean time of successes, mean nav metric."""
    rows = []
    for key in sorted({(r["policy"], r["world"]) for r in records}, key=lambda k: (k[1], k[0])):
        group = [r for r in records if (r["policy"], r["world"]) == key]
        ok = [r["time"] for r in group if r["status"] == "success"]
        rows.append(
            {
                "policy": key[0],
                "world": key[1],
                "runs": len(group),
                "success_rate": float(np.mean([r["status"] == "success" for r in group])),
                "time": float(np.mean(ok)) if ok else float("nan"),
                "nav_metric": float(np.mean([r["nav_metric"] for r in group])),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 3 decimals)."""

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


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
    plt = _pyplot()
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
    plt = _pyplot()
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


def compare(
    policies: Sequence[LoadedPolicy],
    worlds: Sequence[int],
    runs: int,
    out: Path,
    barn_dir: Path | None = None,
    seed: int = 0,
    max_envs: int = 100,
    plot_worlds: int = 4,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """
    Evaluate ``policies`` on the same worlds and seeds; write ``summary.md``, ``summary.csv``, ``per_world.csv``,
    ``episodes.csv``, ``per_world_nav_metric.png`` and ``trajectories.png`` into ``out``.

    :return: One summary row per policy.
    :raises ValueError: if two policies have the same name.
    """
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    names: list[str] = []
    for policy in policies:
        if policy.name in names:
            raise ValueError(f"two policies are named {policy.name!r}: name them, e.g. a=<spec>")
        names.append(policy.name)
        records += evaluate(policy, worlds, runs, barn_dir, seed, max_envs, progress=progress)
    stats = [summary([r for r in records if r["policy"] == name]) for name in names]
    worlds_rows = per_world(records)
    write_csv(out / "episodes.csv", records, ["policy", "world", "run", "status", "time", "nav_metric", "opt_time"])
    write_csv(out / "per_world.csv", worlds_rows, ["policy", "world", "runs", "success_rate", "time", "nav_metric"])
    write_csv(out / "summary.csv", stats, list(stats[0]))
    (out / "summary.md").write_text(format_table(stats, SUMMARY_COLUMNS) + "\n")
    plot_per_world(worlds_rows, names, out / "per_world_nav_metric.png")
    plot_trajectories(records, names, worlds[:plot_worlds], barn_dir, out / "trajectories.png")
    return stats


def generalisation(by_set: dict[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Side by side, per policy, the :func:`summary` rows of several world sets (e.g. ``{"train": ..., "test":
    ...}``, each as :func:`compare` returns them): ``nav_metric (<set>)``, ``nav_metric_ci95 (<set>)``,
    ``success_rate (<set>)`` for each set, then ``gap`` = first set's nav metric minus the last's."""
    sets = list(by_set)
    rows = []
    for i, first in enumerate(by_set[sets[0]]):
        row: dict[str, Any] = {"policy": first["policy"]}
        for name in sets:
            stats = by_set[name][i]
            assert stats["policy"] == first["policy"], "every world set must list the policies in the same order"
            for key in ("nav_metric", "nav_metric_ci95", "success_rate"):
                row[f"{key} ({name})"] = stats[key]
        row["gap"] = row[f"nav_metric ({sets[0]})"] - row[f"nav_metric ({sets[-1]})"]
        rows.append(row)
    return rows


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
