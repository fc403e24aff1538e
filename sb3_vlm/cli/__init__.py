"""``sb3-vlm`` command line: one subcommand per stage of the FTRL workflow."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module of sb3_vlm.cli with add_arguments/run, help)
COMMANDS = {
    "train": ("train", "TD3 on the embedded simulator (VLM policy by default; --policy applr for APPLR's MLP)"),
    "eval": ("evaluate", "evaluate one policy on chosen worlds -> per-world table"),
    "compare": ("compare", "policies on the same held-out worlds and seeds -> table, CSV, PNG plots"),
    "viz": ("viz", "draw the DPT attention-pooling weights over costmap images"),
    "serve": ("serve", "FTRL-compatible HTTP inference server (SFT head or TD3 actor)"),
    "collect": ("collect", "run BarnNav episodes with server/policy parameters, write FTRL trajectory files"),
    "pretrain": ("pretrain", "supervised stage: search good DWA parameters in the simulator, train the DPT head"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sb3-vlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(f"sb3_vlm.cli.{module}")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, TypeError, ImportError) as e:
        print(f"sb3-vlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
