"""``sb3-vlm learn-from-buffer``: FTRL's training loop over collectors that run elsewhere (``sb3-vlm collect
--follow-signal``, or FTRL's ROS/Gazebo collectors); see :mod:`sb3_vlm.workflows.buffer_learner`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sb3_vlm.workflows.buffer_learner import learn_from_buffer
from sb3_vlm.workflows.training import TrainSettings
from sb3_vlm.zoo import DEFAULT_CONF_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buffer", type=Path, required=True, help="collectors' buffer directory (actor_<id>/...)")
    parser.add_argument("--servers", nargs="*", default=[], metavar="URL", help="inference servers to /reload")
    parser.add_argument("--policy", choices=sorted(DEFAULT_CONF_NAMES), default="vlm", help="default zoo file")
    parser.add_argument("--conf-file", type=Path, help="rl-zoo3 YAML file (overrides --policy)")
    parser.add_argument("--ftrl-config", type=Path, help="FTRL RL YAML over the zoo file's values")
    parser.add_argument("--ftrl-base", type=Path, help="base YAML the --ftrl-config file is deep-merged over")
    parser.add_argument("--env", help="env id inside the zoo file (default: its only entry)")
    parser.add_argument("--timesteps", type=int, help="transitions to train on (FTRL max_step; default n_timesteps)")
    parser.add_argument("--vlm", help="local Qwen2.5-VL or FTRL checkpoint directory (VLM policy backbone)")
    parser.add_argument("--base-model", help="base Qwen2.5-VL directory of an FTRL checkpoint given with --vlm")
    parser.add_argument("--seed", type=int, help="default: the --ftrl-config file's env_config.seed, else 0")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="runs are written under this directory")
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
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    settings = TrainSettings(**{k: v for k, v in vars(args).items() if k in names})
    learner = {
        "collect_per_step": args.collect_per_step,
        "update_per_step": args.update_per_step,
        "pre_collect": args.pre_collect,
        "test_every": args.test_every,
        "test_episodes": args.test_episodes,
        "test_timeout": args.test_timeout,
        "poll_interval": args.poll_interval,
        "min_age_s": args.min_age,
        "publish_dir": args.publish_dir,
        "server_noise": args.server_noise,
    }
    return learn_from_buffer(settings, args.buffer, args.servers, **learner)
