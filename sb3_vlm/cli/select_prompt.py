"""``sb3-vlm select-prompt``: MaskablePPO (sb3-contrib) learns which prompt a frozen VLM policy gets per window.

Hyper-parameters come from the rl-zoo3 file ``--conf`` (default: ``zoo_configs/ppo_mask_prompt_selection.yml``: MLPs
128 -> 64, learning rate 3e-4, batch 64). ``--mode quick`` trains on the first 20 training worlds for 2,000 steps
with 2 envs, ``--mode full`` on the first 100 for 10,000 steps with 4 envs (the seed system's two modes); ``--steps``,
``--n-envs`` and ``--worlds`` override them. ``--reward learned`` rewards with a ``reward-net train`` network,
``--reward true`` with the simulator's return (the ceiling). After training, the agent, each fixed prompt and a random
prompt per window run ``--eval-episodes`` held-out test worlds with the same seeds; the results (BARN metric, 95 %
intervals) are printed and written with the model (``MaskablePPO`` zip) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch as th

from sb3_vlm.cli.reward_net import add_env_arguments, env_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, worlds=None)
    parser.add_argument("--mode", choices=("quick", "full"), default="quick")
    parser.add_argument("--reward", choices=("learned", "true"), default="learned")
    parser.add_argument("--reward-net", type=Path, help="reward-net train directory (needed for --reward learned)")
    parser.add_argument("--conf", type=Path, help="rl-zoo3 file (default: the installed ppo_mask_prompt_selection)")
    parser.add_argument("--steps", type=int, help="training steps (windows over all envs); default: the mode's")
    parser.add_argument("--n-envs", type=int, help="parallel envs; default: the mode's")
    parser.add_argument("--eval-episodes", type=int, default=6, help="test worlds each chooser runs (0: none)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the model and results.json")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate, save; returns the results."""
    from envs.worlds import SPLITS
    from sb3_vlm.rewards.prompt_env import make_prompt_selection_env
    from sb3_vlm.rewards.prompt_eval import ENV_ID, MODES, compare_with_baselines, default_conf, train_selector
    from sb3_vlm.zoo import load_zoo_config

    th.set_num_threads(args.threads)
    if args.reward == "learned" and args.reward_net is None:
        raise ValueError("select-prompt: --reward learned needs --reward-net DIR (sb3-vlm reward-net train)")
    mode = MODES[args.mode]
    conf = load_zoo_config(args.conf or default_conf(), ENV_ID)
    steps = args.steps or mode["steps"]
    n_envs = args.n_envs or mode["n_envs"]
    if args.worlds is None:
        args.worlds = ",".join(str(w) for w in SPLITS["train"][: mode["worlds"]])
    reward_net = None if args.reward == "true" else str(args.reward_net)
    kwargs = {**conf.env_kwargs, **env_kwargs(args, reward=args.reward, reward_net=reward_net)}
    model = train_selector(kwargs, conf.algo_kwargs, steps, n_envs, args.seed, progress_bar=not args.no_progress_bar)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.zip")
    results: dict[str, Any] = {"mode": args.mode, "reward": args.reward, "steps": steps, "n_envs": n_envs}
    if args.eval_episodes:
        eval_env = make_prompt_selection_env(**{**kwargs, "worlds": "test", "reward": "true", "reward_net": None})
        worlds = SPLITS["test"][: args.eval_episodes]
        results["eval"] = compare_with_baselines(eval_env, {"ppo": model}, worlds, seed=args.seed)
        for name, r in results["eval"].items():
            m = r["nav_metric"]
            print(
                f"{name:45s} nav metric {m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]  prompts {r['prompt_share']}"
            )
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"model and results -> {args.out}")
    return results
