"""``sb3-vlm reward-net train|eval``: the learned reward of prompt selection (:class:`sb3_vlm.rewards.RewardNet`).

``train`` rolls the prompt-selection env with a random valid prompt per window on training worlds (or reads
``--data``), fits the network with an episode-wise held-out split and writes ``model.safetensors`` + ``config.json``
(metrics and settings under ``"metadata"``). ``eval`` measures a saved network on fresh episodes (or ``--data``):
correlation of predicted and true window returns, of the per-episode predicted sum and the BARN metric, success AUC.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch as th

from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import TINY
from sb3_vlm.cli._args import image_size, options, parse_worlds


def add_env_arguments(parser: argparse.ArgumentParser, worlds: str | None = "train") -> None:
    """Options of the prompt-selection env (shared with ``select-prompt``)."""
    parser.add_argument("--policy", default=TINY, help="prompt-conditioned checkpoint (sb3-vlm pretrain --prompts)")
    parser.add_argument("--prompts", type=Path, help="prompt file (default: the checkpoint's prompts.yaml)")
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds (default: generated ones)")
    default = "the mode's first training worlds" if worlds is None else worlds
    parser.add_argument("--worlds", default=worlds, help=f"'train', 'test', 'all' or ids 1,2,3 (default: {default})")
    parser.add_argument("--window", type=int, default=4, help="BarnNav steps (0.5 s) per prompt choice")
    parser.add_argument("--max-steps", type=int, default=200, help="BarnNav steps before a timeout")
    parser.add_argument("--image-size", type=image_size, default=DEFAULT_IMAGE_SIZE, help="HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the tiny model)")
    parser.add_argument("--no-progress-bar", action="store_true")


def env_kwargs(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``make_prompt_selection_env`` from the shared options."""
    kwargs = options(args, "policy", "prompts", "barn_dir", "window", "max_steps", "image_size", "seed")
    return {**kwargs, "worlds": parse_worlds(args.worlds), **overrides}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    train = sub.add_parser("train", help="collect windows (or --data), fit, save")
    add_env_arguments(train)
    train.add_argument("--out", type=Path, required=True, help="directory to write the network to")
    train.add_argument("--episodes", type=int, default=40, help="episodes to collect")
    train.add_argument("--data", type=Path, help="train on windows from this .npz instead of collecting")
    train.add_argument("--save-data", type=Path, help="also write the collected windows to this .npz")
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--val-fraction", type=float, default=0.2, help="episodes held out")
    evaluate = sub.add_parser("eval", help="held-out metrics of a saved network")
    add_env_arguments(evaluate)
    evaluate.add_argument("--net", type=Path, required=True, help="directory written by reward-net train")
    evaluate.add_argument("--episodes", type=int, default=20, help="fresh episodes to collect")
    evaluate.add_argument("--data", type=Path, help="evaluate on windows from this .npz instead")


def _collect(args: argparse.Namespace) -> Any:
    from sb3_vlm.rewards.prompt_env import make_prompt_selection_env
    from sb3_vlm.rewards.reward_training import collect_windows

    env = make_prompt_selection_env(**env_kwargs(args))
    data = collect_windows(env, args.episodes, seed=args.seed, progress_bar=not args.no_progress_bar)
    return data, env


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train or evaluate; prints and returns the metrics."""
    from sb3_vlm.rewards.reward_net import RewardNet
    from sb3_vlm.rewards.reward_training import WindowData, evaluate_reward_net, fit_reward_net

    th.set_num_threads(args.threads)
    if args.action == "eval":
        net = RewardNet.from_pretrained(args.net)
        data = WindowData.load(args.data) if args.data is not None else _collect(args)[0]
        metrics = evaluate_reward_net(net, data)
        print(json.dumps(metrics))
        return metrics
    if args.data is not None:
        from envs.planners import DWA_PARAMS
        from sb3_vlm.rewards.prompt_env import resolve_prompts

        data = WindowData.load(args.data)
        prompts, names = tuple(p.text for p in resolve_prompts(args.policy, args.prompts)), DWA_PARAMS.names
    else:
        data, env = _collect(args)
        prompts, names = tuple(p.text for p in env.policy.prompts), env.policy.params.names
        if args.save_data is not None:
            print(f"windows -> {data.save(args.save_data)}")
    net, metrics = fit_reward_net(
        data, prompts, names, epochs=args.epochs, lr=args.lr, val_fraction=args.val_fraction, seed=args.seed
    )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in env_kwargs(args).items()}
    net.save_pretrained(args.out, metadata={"metrics": metrics, "env": settings, "windows": len(data)})
    val = metrics["val"]
    print(
        f"{len(data)} windows ({val['episodes']} held-out episodes): held-out window-return corr "
        f"{_fmt(val['window_return_corr'])}, episode nav-metric corr {_fmt(val['nav_metric_corr'])} "
        f"(true returns: {_fmt(val['true_return_nav_metric_corr'])}), success AUC {_fmt(val['success_auc'])}"
    )
    print(f"reward network -> {args.out}")
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
