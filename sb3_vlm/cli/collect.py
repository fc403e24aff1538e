"""``sb3-vlm collect``: BarnNav episodes with server or local-policy parameters, written as FTRL trajectory files
(see :mod:`sb3_vlm.workflows.collector`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.planners import PARAM_TABLES
from sb3_vlm.cli import judge_options
from sb3_vlm.cli._args import options, parse_worlds
from sb3_vlm.rewards.build import make_judge
from sb3_vlm.workflows.collector import MAX_SAVE_TIME, CollectSettings, CollectSummary, collect
from sb3_vlm.workflows.sources import LocalPolicySource, ParameterSource, ServerSource


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``collect`` options to ``parser`` (run it with :func:`run`)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--server", help="inference server URL, e.g. http://127.0.0.1:7000")
    source.add_argument("--policy", type=Path, help="local policy: save_pretrained/publish_policy dir or SB3 zip")
    parser.add_argument("--base-model", help="base Qwen2.5-VL ('tiny' or a local dir) of a --policy directory")
    parser.add_argument("--buffer", type=Path, required=True, help="buffer directory (FTRL: buffer/<policy_name>)")
    parser.add_argument("--actor-id", type=int, default=0, help="actor id: actor_<id>/ (and its world by default)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--worlds", default=None, help="'train', 'test', 'all' or ids like 0,6,12 (default: actor id)")
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds directory (default: generated worlds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("train", "test"), default="train")
    parser.add_argument(
        "--follow-signal",
        action="store_true",
        help="obey <buffer>/sync/continue.signal (train/test/pause) before each episode, as FTRL's collectors; "
        "--episodes then counts training episodes",
    )
    parser.add_argument("--test-worlds", default=None, help="worlds of test phases (default: --worlds)")
    parser.add_argument("--planner", choices=sorted(PARAM_TABLES), default="DWA", help="local planner")
    parser.add_argument("--max-steps", type=int, default=200, help="steps before a timeout (200 x 0.5 s = 100 s)")
    parser.add_argument("--max-save-time", type=float, default=MAX_SAVE_TIME, help="don't save longer episodes (s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each /infer answer")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed request before falling back")
    parser.add_argument("--wait-server", type=float, default=60.0, help="seconds to wait for the server at start")
    parser.add_argument(
        "--sft",
        action="store_true",
        help="also write FTRL's SFT data: actor_<id>/data.csv rows and <buffer>/sft_data.json (pretrain --data)",
    )
    parser.add_argument("--no-progress-bar", action="store_true")
    judge_options.add_arguments(parser, wrapper=False)


def collect_settings(args: argparse.Namespace) -> CollectSettings:
    """The :class:`CollectSettings` of the options."""
    return CollectSettings(
        worlds=parse_worlds(args.worlds),
        test_worlds=parse_worlds(args.test_worlds),
        progress_bar=not args.no_progress_bar,
        env_kwargs=options(args, "max_steps", "planner"),
        **options(args, "actor_id", "episodes", "barn_dir", "seed", "mode", "max_save_time", "judge_weight"),
        **options(args, "sft", "follow_signal"),
    )


def run(args: argparse.Namespace) -> CollectSummary:
    """Collect with the options of :func:`add_arguments`; prints a one-line summary and returns the reports."""
    planner = args.planner
    source: ParameterSource | None = None
    if args.server:
        source = ServerSource(args.server, planner, args.timeout, args.retries, args.wait_server)
    elif args.policy is not None:
        source = LocalPolicySource(args.policy, PARAM_TABLES[planner], base_model=args.base_model)
    settings = judge_options.judge_settings(args)
    judge = None if settings is None else make_judge(settings)
    try:
        summary = collect(args.buffer, source, collect_settings(args), judge=judge)
    finally:
        if isinstance(source, LocalPolicySource):
            source.close()
        if judge is not None:
            judge.close()
    print(
        f"collected {len(summary.episodes)} episodes ({summary.steps} steps, {summary.fallback_steps} with default "
        f"parameters after a source failure), saved {len(summary.saved)} -> {args.buffer}"
    )
    return summary
