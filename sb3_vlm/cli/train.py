"""``sb3-vlm train``: TD3 on the embedded simulator from a zoo file (VLM policy by default, or APPLR's MLP)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList

from sb3_vlm._constants import RUN_CONFIG
from sb3_vlm.callbacks import (
    CHECKPOINT_BEST,
    CHECKPOINT_LAST,
    MODEL_ZIP,
    REPLAY_BUFFER,
    NavMetricsCallback,
    SafeCheckpointCallback,
    find_checkpoint,
)
from sb3_vlm.cli._args import parse_worlds
from sb3_vlm.cli.envs_factory import make_vec_env
from sb3_vlm.formats.buffer_npz import load_replay_buffer
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.td3.policies import VLMTD3Policy
from sb3_vlm.td3.td3 import VLMTD3
from sb3_vlm.zoo import DEFAULT_CONF_NAMES, ZooConfig, default_conf, load_zoo_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", choices=sorted(DEFAULT_CONF_NAMES), default="vlm", help="default zoo file to use")
    parser.add_argument("--conf-file", type=Path, help="rl-zoo3 YAML file (overrides --policy)")
    parser.add_argument("--env", help="env id inside the zoo file (default: its only entry)")
    parser.add_argument("--timesteps", type=int, help="override n_timesteps")
    parser.add_argument("--n-envs", type=int, help="override n_envs")
    parser.add_argument("--barn-dir", type=Path, help="train on real BARN worlds from this directory")
    parser.add_argument("--worlds", default=None, help="'train' (default), 'test', 'all' or ids like 0,6,12")
    parser.add_argument("--vlm", help="local Qwen2.5-VL or FTRL checkpoint directory (VLM policy backbone)")
    parser.add_argument("--base-model", help="base Qwen2.5-VL directory of an FTRL checkpoint given with --vlm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="runs are written under this directory")
    parser.add_argument("--resume", type=Path, help="run directory to resume from its last checkpoint")
    parser.add_argument("--checkpoint-freq", type=int, default=1000, help="env steps between checkpoints")
    parser.add_argument("--save-replay-buffer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--eval-freq", type=int, default=0, help="env steps between test-world evaluations (0: off)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--env-workers", type=int, default=1, help="simulator processes (BarnNavSubprocVecEnv if > 1)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--no-progress-bar", action="store_true")


def _is_vlm(policy: Any) -> bool:
    return policy == "VLMPolicy" or (isinstance(policy, type) and issubclass(policy, VLMTD3Policy))


def build_model(cfg: ZooConfig, env: Any, seed: int, tensorboard_log: str | None, verbose: int) -> BaseAlgorithm:
    """VLMTD3 for the VLM policy, SB3's TD3 otherwise, with the zoo file's hyper-parameters."""
    algo = VLMTD3 if _is_vlm(cfg.algo_kwargs["policy"]) else TD3
    return algo(
        env=env,
        action_noise=cfg.action_noise(env.action_space.shape[0]),
        seed=seed,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **cfg.algo_kwargs,
    )


def run(args: argparse.Namespace) -> Path:
    """Train; returns the run directory (``model.zip``, ``checkpoints/``, TensorBoard logs, ``run_config.json``)."""
    if args.resume is not None:
        run_dir = args.resume
        saved = json.loads((run_dir / RUN_CONFIG).read_text())
        args = argparse.Namespace(**{**vars(args), **{k: v for k, v in saved.items() if k != "resume"}})
        args.conf_file, args.barn_dir = Path(args.conf_file), args.barn_dir and Path(args.barn_dir)
        args.log_dir = Path(args.log_dir)
    if args.torch_threads > 0:
        th.set_num_threads(args.torch_threads)
    conf_file = args.conf_file or default_conf(args.policy)
    cfg = load_zoo_config(conf_file, args.env)
    if args.timesteps is not None:
        cfg.n_timesteps = args.timesteps
    if args.n_envs is not None:
        cfg.n_envs = args.n_envs
    if args.vlm is not None:
        if not _is_vlm(cfg.algo_kwargs["policy"]):
            raise ValueError(f"--vlm needs a VLM policy, but {conf_file} uses {cfg.algo_kwargs['policy']}")
        cfg.algo_kwargs["policy_kwargs"] = {**cfg.algo_kwargs.get("policy_kwargs", {}), "backbone": args.vlm}
        if args.base_model:
            cfg.algo_kwargs["policy_kwargs"]["base_model"] = args.base_model
    env_kwargs = {**cfg.env_kwargs, "barn_dir": args.barn_dir, "worlds": parse_worlds(args.worlds)}
    if args.resume is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = args.log_dir / f"{cfg.env_id}__{Path(conf_file).stem}__{args.seed}__{stamp}"
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
        (run_dir / RUN_CONFIG).write_text(json.dumps({**saved, "conf_file": str(conf_file)}, indent=2))

    env = make_vec_env(cfg.env_id, cfg.n_envs, seed=args.seed, n_workers=args.env_workers, **env_kwargs)
    last = find_checkpoint(run_dir / "checkpoints" / CHECKPOINT_LAST) if args.resume is not None else None
    if last is not None:
        model = load_algorithm(last / MODEL_ZIP, device="auto", env=env, tensorboard_log=str(run_dir / "tb"))
        if (last / REPLAY_BUFFER).exists():
            load_replay_buffer(model.replay_buffer, last / REPLAY_BUFFER)
        print(f"resumed from {last} at {model.num_timesteps} steps")
    else:
        model = build_model(cfg, env, args.seed, str(run_dir / "tb"), args.verbose)
    eval_env = None
    if args.eval_freq > 0:
        eval_kwargs = {**env_kwargs, "worlds": "test"}
        eval_env = make_vec_env(cfg.env_id, args.eval_episodes, seed=10_000 + args.seed, **eval_kwargs)
    callbacks = [
        NavMetricsCallback(eval_env, args.eval_freq, best_path=run_dir / "checkpoints" / CHECKPOINT_BEST),
        SafeCheckpointCallback(
            run_dir / "checkpoints", save_freq=args.checkpoint_freq, save_replay_buffer=args.save_replay_buffer
        ),
    ]
    remaining = max(cfg.n_timesteps - model.num_timesteps, 0)
    model.learn(
        remaining,
        callback=CallbackList(callbacks),
        progress_bar=not args.no_progress_bar,
        reset_num_timesteps=args.resume is None,
        tb_log_name="td3",
    )
    model.save(run_dir / "model.zip")
    if isinstance(model.policy, VLMTD3Policy):
        model.policy.save_pretrained(run_dir / "policy")
    env.close()
    if eval_env is not None:
        eval_env.close()
    print(f"trained {model.num_timesteps} steps -> {run_dir}")
    return run_dir
