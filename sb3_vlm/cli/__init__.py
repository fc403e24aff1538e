"""``sb3-vlm`` command line: one subcommand per stage of the FTRL workflow.

Only the chosen subcommand's module is imported (``sb3-vlm --help`` imports no torch, simulator or VLM code).
Bad input prints one line: a file error naming its path (missing, unreadable, a directory), or a ``ValueError``,
``ImportError`` or ``OSError`` that our code raises with a message naming the input and the fix. Anything else is
a bug and shows its traceback, as does every error with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

# subcommand -> (module of sb3_vlm.cli with add_arguments/run, help)
COMMANDS = {
    "train": ("train", "TD3 on the embedded simulator (VLM policy by default; --policy applr for APPLR's MLP)"),
    "eval": ("evaluate", "evaluate one policy on chosen worlds -> per-world table"),
    "compare": ("compare", "policies on the same held-out worlds and seeds -> table, CSV, PNG plots"),
    "viz": ("viz", "draw the DPT attention-pooling weights over costmap images"),
    "serve": ("serve", "FTRL-compatible HTTP inference server (SFT head or TD3 actor)"),
    "collect": ("collect", "run BarnNav episodes with server/policy parameters, write FTRL trajectory files"),
    "learn-from-buffer": (
        "learn_from_buffer",
        "FTRL's training loop over external collectors: trajectory files in, published policy + /reload out",
    ),
    "pretrain": ("pretrain", "supervised stage: search good DWA parameters in the simulator, train the DPT head"),
    "distill": ("distill", "reflow a checkpoint's flow-matching expert into a one-step student (one shared VLM)"),
    "reward-net": ("reward_net", "train / evaluate the learned reward of prompt selection (RewardNet)"),
    "select-prompt": ("select_prompt", "MaskablePPO chooses the prompt of a frozen VLM policy per window"),
    "ablate": ("ablate", "the paper checklist's ablations (SFT, VLM/DPT frozen vs tuned, actor lr) x seeds -> table"),
}

_OUR_PACKAGES = tuple(str(Path(importlib.util.find_spec(p).origin).parent) for p in ("sb3_vlm", "envs"))  # type: ignore[arg-type,union-attr]


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (exit 2): the usage of ``train`` alone is a dozen lines."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s arguments are defined (its module imported), the others are listed."""
    parser = _Parser(prog="sb3-vlm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module_obj = importlib.import_module(f"sb3_vlm.cli.{module}")
            module_obj.add_arguments(sub_parser)
            sub_parser.set_defaults(func=module_obj.run)
    return parser


def is_input_error(error: BaseException) -> bool:
    """Whether ``error`` is about the user's input rather than a bug (see the module docstring)."""
    if isinstance(error, OSError) and error.filename is not None:
        return True
    if not isinstance(error, (ValueError, ImportError, OSError)):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    # The innermost frame is ours: a deliberate, worded raise (not, say, numpy failing on a bug of ours).
    return bool(frames) and frames[-1].filename.startswith(_OUR_PACKAGES)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    try:
        args.func(args)
    except (ValueError, ImportError, OSError) as e:
        if args.debug or not is_input_error(e):
            raise
        print(f"sb3-vlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
