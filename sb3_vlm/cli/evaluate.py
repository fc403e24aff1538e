"""``sb3-vlm eval``: a policy on chosen worlds, in the batched simulator -> per-world table.

A policy is ``[name=]spec``, any format :func:`sb3_vlm.policies.load_policy` reads: ``dwa`` / ``dwa:k=v,...``, an
APPLR ``policy_actor`` directory (time_step 1 s), an SB3 zip (the run's zoo settings reused), a ``save_pretrained``
policy directory, a supervised FTRL checkpoint, or a training run directory (its ``best_model/`` or ``model.zip``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from envs.nav_env import resolve_world_ids
from envs.planners import DWA_PARAMS
from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import RUN_CONFIG
from sb3_vlm.callbacks.checkpoint import MODEL_ZIP
from sb3_vlm.callbacks.nav_metrics import BEST_MODEL_DIR
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


def run_model(spec: str) -> str:
    """``spec`` with a training run directory (it holds ``run_config.json``) replaced by the run's policy, said on
    stderr: ``best_model/`` (best test nav metric during the run) if it was written, else the final ``model.zip``.
    Any other spec is returned as is.

    :raises FileNotFoundError: for a run that has neither yet (killed early: resume it, or pass a checkpoint).
    """
    name, _, target = spec.partition("=") if "=" in spec.partition(":")[0] else ("", "", spec)
    run = Path(target)
    if not (run / RUN_CONFIG).is_file():
        return spec
    best = run / BEST_MODEL_DIR
    for choice in (best / MODEL_ZIP, best, run / MODEL_ZIP):
        if choice.exists():
            kind = "its final model" if choice == run / MODEL_ZIP else "its best policy on the test worlds"
            print(f"run {run}: evaluating {choice} ({kind})", file=sys.stderr)
            return f"{name or run.name}={choice}"
    raise FileNotFoundError(
        f"run {run} has no {BEST_MODEL_DIR}/ or {MODEL_ZIP} yet (killed early?): `sb3-vlm train --resume {run}` "
        f"finishes it, or pass {run / 'checkpoints' / 'last' / MODEL_ZIP}"
    )


def policy_of(spec: str, args: argparse.Namespace) -> LoadedPolicy:
    """``spec`` (a run directory: see :func:`run_model`) loaded with DWA's parameter table, at ``--image-size``."""
    return load_policy(run_model(spec), params=DWA_PARAMS, image_size=tuple(args.image_size))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "policy", help="[name=]dwa | dwa:k=v,... | APPLR dir | model.zip | policy/checkpoint dir | runs/<run>"
    )
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
