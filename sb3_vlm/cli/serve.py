"""``sb3-vlm serve``: the FTRL-compatible HTTP inference server (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse

from envs.planners import PARAM_TABLES
from sb3_vlm.server import add_serve_arguments as add_arguments
from sb3_vlm.server import run_serve

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> None:
    run_serve(args, PARAM_TABLES)
