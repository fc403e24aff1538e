"""``sb3-vlm eval``: a policy on chosen worlds, in the batched simulator -> per-world table.

A policy is ``[name=]spec``, any format :func:`sb3_vlm.policies.load_policy` reads: ``dwa`` / ``dwa:k=v,...``, an
APPLR ``policy_actor`` directory (time_step 1 s), an SB3 zip (the run's zoo settings reused), a ``save_pretrained``
policy directory or a supervised FTRL checkpoint.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs import BarnNavVecEnv
from envs.nav_env import resolve_world_ids
from envs.planners import DWA_PARAMS
from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm.callbacks import run_episodes
from sb3_vlm.cli._args import parse_worlds
from sb3_vlm.policies import LoadedPolicy
from sb3_vlm.policies import load_policy as _load_policy


def load_policy(spec: str, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> LoadedPolicy:
    """:func:`sb3_vlm.policies.load_policy` with DWA's parameter table, at the evaluation's image size."""
    return _load_policy(spec, params=DWA_PARAMS, image_size=image_size)


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

    :return: One record per episode: ``policy``, ``world``, ``run``, ``status``, ``time``, ``nav_metric``,
        ``opt_time``, ``trajectory`` ``[T, 2]``.
    """
    jobs = [(w, r) for r in range(runs) for w in worlds]
    records: list[dict[str, Any]] = []
    with tqdm(total=len(jobs), desc=policy.name, disable=not progress, unit="ep") as bar:
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


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds directory (default: generated worlds)")
    parser.add_argument("--worlds", default="test", help="'test' (default), 'train', 'all' or ids like 0,6,12")
    parser.add_argument("--runs", type=int, default=10, help="episodes per world (BARN: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-envs", type=int, default=100, help="episodes simulated side by side")
    parser.add_argument("--image-size", type=int, nargs=2, default=DEFAULT_IMAGE_SIZE, metavar=("H", "W"))


def world_list(text: str, barn_dir: Path | None) -> list[int]:
    """World ids of ``--worlds`` (ids present in ``barn_dir`` when given)."""
    return list(resolve_world_ids(parse_worlds(text) or "test", barn_dir))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="[name=]dwa | dwa:k=v,... | APPLR dir | model.zip | policy/checkpoint dir")
    add_common_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = load_policy(args.policy, tuple(args.image_size))
    records = evaluate(
        policy,
        world_list(args.worlds, args.barn_dir),
        args.runs,
        args.barn_dir,
        args.seed,
        args.max_envs,
        progress=not args.json,
    )
    stats = summary(records)
    if args.json:
        print(json.dumps(stats))
    else:
        print(format_table(per_world(records), ["world", "runs", "success_rate", "time", "nav_metric"]))
        print(
            format_table(
                [stats],
                [
                    "policy",
                    "episodes",
                    "success_rate",
                    "collision_rate",
                    "timeout_rate",
                    "time",
                    "nav_metric",
                    "nav_metric_ci95",
                ],
            )
        )
    return stats
