"""``sb3-vlm learn-from-buffer``: FTRL's training loop over collectors that run elsewhere (``sb3-vlm collect
--follow-signal``, or FTRL's ROS/Gazebo collectors); see :mod:`sb3_vlm.workflows.buffer_learner`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sb3_vlm.cli._args import options
from sb3_vlm.cli.train import add_model_arguments, settings_of
from sb3_vlm.workflows.buffer_runs import learn_from_buffer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buffer", type=Path, help="collectors' buffer directory (actor_<id>/...); required")
    parser.add_argument(
        "--resume", type=Path, help="continue a (killed) run of this command from its checkpoint; other options unused"
    )
    parser.add_argument("--servers", nargs="*", default=[], metavar="URL", help="inference servers to /reload")
    add_model_arguments(parser)
    parser.add_argument("--collect-per-step", type=int, help="new transitions per cycle (default: zoo train_freq)")
    parser.add_argument("--update-per-step", type=int, help="gradient steps per cycle (default: zoo gradient_steps)")
    parser.add_argument(
        "--pre-collect", type=int, help="transitions before the first update (default: zoo learning_starts)"
    )
    parser.add_argument("--test-every", type=int, default=1, help="cycles between test phases (0: on request only)")
    parser.add_argument("--test-episodes", type=int, default=1, help="test episodes a test phase waits for")
    parser.add_argument("--test-timeout", type=float, default=900.0, help="seconds a test phase waits")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls of the buffer")
    parser.add_argument("--min-age", type=float, default=2.0, help="skip files modified less than this ago (s)")
    parser.add_argument("--publish-dir", type=Path, help="policy directory the servers serve (default <buffer>/policy)")
    parser.add_argument("--server-noise", action="store_true", help="send the exploration noise with each /reload")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--verbose", type=int, default=0)


def run(args: argparse.Namespace) -> Path:
    """Run the loop with the options of :func:`add_arguments`; returns the run directory."""
    learner = options(args, "collect_per_step", "update_per_step", "pre_collect", "test_every", "test_episodes")
    learner.update(
        options(args, "test_timeout", "poll_interval", "publish_dir", "server_noise"), min_age_s=args.min_age
    )
    return learn_from_buffer(settings_of(args), args.buffer, args.servers, resume=args.resume, **learner)
