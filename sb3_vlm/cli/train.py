"""``sb3-vlm train``: TD3 on the embedded simulator from a zoo file (VLM policy by default, or APPLR's MLP); see
:mod:`sb3_vlm.workflows.training`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sb3_vlm.cli import judge_options
from sb3_vlm.cli._args import hyperparam, parse_worlds, positive_int
from sb3_vlm.workflows.training import EVAL_WORLDS, TrainSettings, train
from sb3_vlm.zoo import DEFAULT_CONF_NAMES


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the model and the run directory (``train`` and ``learn-from-buffer``)."""
    parser.add_argument("--policy", choices=sorted(DEFAULT_CONF_NAMES), default="vlm", help="default zoo file to use")
    parser.add_argument("--conf-file", type=Path, help="rl-zoo3 YAML file (overrides --policy)")
    parser.add_argument(
        "--ftrl-config", type=Path, help="FTRL RL YAML (training_config, env_config, ...) over the zoo file's values"
    )
    parser.add_argument("--ftrl-base", type=Path, help="base YAML the --ftrl-config file is deep-merged over (FTRL)")
    parser.add_argument("--env", help="env id inside the zoo file (default: its only entry)")
    parser.add_argument("--timesteps", type=positive_int, help="override n_timesteps")
    parser.add_argument(
        "--hyperparams",
        nargs="+",
        type=hyperparam,
        metavar="KEY:VALUE",
        help="override zoo keys (rl-zoo3's option), e.g. learning_rate:1e-5 'policy_kwargs:dict(freeze_dpt=True)' "
        "(policy_kwargs and env_kwargs merge into the file's)",
    )
    parser.add_argument("--vlm", help="local Qwen2.5-VL or FTRL checkpoint directory (VLM policy backbone)")
    parser.add_argument("--base-model", help="base Qwen2.5-VL directory of an FTRL checkpoint given with --vlm")
    parser.add_argument("--seed", type=int, help="default: the --ftrl-config file's env_config.seed, else 0")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="runs are written under this directory")


def settings_of(args: argparse.Namespace) -> TrainSettings:
    """The :class:`TrainSettings` fields among ``args``."""
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    settings = TrainSettings(**{k: v for k, v in vars(args).items() if k in names})
    settings.hyperparams = dict(args.hyperparams) if args.hyperparams else None
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--n-envs", type=positive_int, help="override n_envs")
    parser.add_argument("--barn-dir", type=Path, help="train on real BARN worlds from this directory")
    parser.add_argument("--worlds", default=None, help="'train' (default), 'test', 'all' or ids like 0,6,12")
    parser.add_argument("--resume", type=Path, help="run directory to resume from its last checkpoint")
    parser.add_argument(
        "--checkpoint-freq", type=int, help="env steps between checkpoints (default: 5 %% of the budget, >= 1,000)"
    )
    parser.add_argument("--save-replay-buffer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--eval-freq", type=int, help="env steps between in-training evaluations (default: 5 per run; 0: off)"
    )
    parser.add_argument("--eval-episodes", type=int, default=10, help="worlds of each in-training evaluation")
    parser.add_argument(
        "--eval-worlds",
        choices=EVAL_WORLDS,
        default="val",
        help="in-training evaluations and best_model/ on the validation worlds carved from the training worlds "
        "(default; the run fits on the other 200) or on the test worlds (FTRL's test phases, for parity runs)",
    )
    parser.add_argument("--env-workers", type=int, default=1, help="simulator processes (BarnNavSubprocVecEnv if > 1)")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="torch CPU threads (0: half the cores, the rest for the simulator)"
    )
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--no-progress-bar", action="store_true")
    parser.add_argument(
        "--final-eval", type=int, default=10, help="test worlds of the closing check against default DWA (0: off)"
    )
    parser.add_argument(
        "--ray-address",
        help="collect with Ray: 'auto' or HOST:PORT of a cluster ('local' starts one here); needs sb3-vlm[ray]",
    )
    parser.add_argument("--collectors", type=int, default=2, help="Ray collector actors (with --ray-address)")
    judge_options.add_arguments(parser)


def run(args: argparse.Namespace) -> Path:
    """Train with the options of :func:`add_arguments`; returns the run directory."""
    settings = settings_of(args)
    settings.worlds = parse_worlds(args.worlds)
    settings.judge = judge_options.judge_settings(args)
    if args.ray_address is not None:
        from sb3_vlm.distributed.training import train_async  # Ray is an optional extra

        return train_async(settings, None if args.ray_address == "local" else args.ray_address, args.collectors)
    return train(settings)
