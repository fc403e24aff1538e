"""``sb3-vlm eval``: a policy on chosen worlds, in the batched simulator -> per-world table.

A policy is ``[name=]spec``, any format :func:`sb3_vlm.policies.load_policy` reads: ``dwa`` / ``dwa:k=v,...``, an
APPLR ``policy_actor`` directory (time_step 1 s), an SB3 zip (the run's zoo settings reused), a ``save_pretrained``
policy directory or a supervised FTRL checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from envs.nav_env import resolve_world_ids
from envs.planners import DWA_PARAMS
from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm.cli._args import parse_worlds
from sb3_vlm.policies import LoadedPolicy, load_policy
from sb3_vlm.workflows.evaluation import SUMMARY_COLUMNS, evaluate, format_table, per_world, summary


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``eval`` and ``compare``."""
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds directory (default: generated worlds)")
    parser.add_argument("--worlds", default="test", help="'test' (default), 'train', 'all' or ids like 0,6,12")
    parser.add_argument("--runs", type=int, default=10, help="episodes per world (BARN: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-envs", type=int, default=100, help="episodes simulated side by side")
    parser.add_argument("--image-size", type=int, nargs=2, default=DEFAULT_IMAGE_SIZE, metavar=("H", "W"))


def world_list(text: str, barn_dir: Path | None) -> list[int]:
    """World ids of ``--worlds`` (ids present in ``barn_dir`` when given)."""
    return list(resolve_world_ids(parse_worlds(text) or "test", barn_dir))


def policy_of(spec: str, args: argparse.Namespace) -> LoadedPolicy:
    """``spec`` loaded with DWA's parameter table, at ``--image-size``."""
    return load_policy(spec, params=DWA_PARAMS, image_size=tuple(args.image_size))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="[name=]dwa | dwa:k=v,... | APPLR dir | model.zip | policy/checkpoint dir")
    add_common_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> dict[str, Any]:
    worlds = world_list(args.worlds, args.barn_dir)
    records = evaluate(
        policy_of(args.policy, args), worlds, args.runs, args.barn_dir, args.seed, args.max_envs, not args.json
    )
    stats = summary(records)
    if args.json:
        print(json.dumps(stats))
    else:
        print(format_table(per_world(records), ["world", "runs", "success_rate", "time", "nav_metric"]))
        print(format_table([stats], SUMMARY_COLUMNS))
    return stats
