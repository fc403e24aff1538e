"""``sb3-vlm viz``: where the DPT attention pooling looks, drawn over the costmap images it sees."""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import TINY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", default=TINY, help="VLMTD3 .zip, policy/FTRL checkpoint directory, or 'tiny' (default)"
    )
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds directory (default: generated worlds)")
    parser.add_argument("--worlds", type=int, nargs="+", default=[0, 6, 12, 18], help="one frame per world")
    parser.add_argument("--steps", type=int, default=12, help="default-DWA steps before the frame is taken")
    parser.add_argument("--image-size", type=int, nargs=2, default=DEFAULT_IMAGE_SIZE, metavar=("H", "W"))
    parser.add_argument("--out", type=Path, default=Path("attention.png"))


def run(args: argparse.Namespace) -> Path:
    from sb3_vlm.workflows.attention import attention_figure  # torch, matplotlib: not for --help

    size = (args.image_size[0], args.image_size[1])
    return attention_figure(args.model, args.worlds, args.steps, size, args.barn_dir, args.out)
