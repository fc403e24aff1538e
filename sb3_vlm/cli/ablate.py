"""``sb3-vlm ablate``: the paper checklist's ablations in one command -> table, figure, JSON (one JSON line printed);
see :mod:`sb3_vlm.workflows.ablation`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from sb3_vlm.workflows.ablation import ALL_ARMS, AblationSettings, run_ablation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI size: tiny budgets, 2 seeds (overrides the sizes)")
    parser.add_argument("--out", type=Path, default=Path("ablation"))
    parser.add_argument("--sft", type=Path, help="supervised checkpoint to start from (default: pretrain one here)")
    parser.add_argument("--sft-samples", type=int, default=512)
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds (default: the generated ones)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=4000, help="env steps of every RL arm and seed")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-starts", type=int, default=256)
    parser.add_argument("--critic-lr", type=float, default=1e-4)
    parser.add_argument("--max-steps", type=int, default=200, help="episode length in training (0.5 s steps)")
    parser.add_argument("--worlds", type=int, default=20, help="first N test (and training) worlds of the evaluation")
    parser.add_argument("--arms", nargs="+", choices=ALL_ARMS, default=list(ALL_ARMS))


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(AblationSettings)}
    settings = AblationSettings(**{k: v for k, v in vars(args).items() if k in names})
    report = run_ablation(settings.quick() if args.quick else settings, quick=args.quick)
    print(json.dumps(report))
    return report
