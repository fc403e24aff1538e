"""Prompt selection, side by side on the BARN test worlds: each fixed prompt, a random prompt per window, MaskablePPO
with the learned reward, MaskablePPO with the true reward (the ceiling), for one prompt-conditioned checkpoint.

Pipeline: (1) the reward network from windows logged with random valid prompts on training worlds (or ``--reward-net``
to reuse one; its held-out numbers are then those saved with it); (2) two MaskablePPO agents with the zoo file's
settings and ``--mode``'s budget, on the mode's training worlds, one per reward; (3) every chooser on the same
``--test-worlds`` test worlds and reset seeds. Nav metric = BARN's, mean and 95 % t-interval over worlds.

Prints one JSON line: ``fixed_prompt_nav_metric`` (prompt -> {mean, low, high}), ``random_prompt_nav_metric``,
``ppo_learned_nav_metric``, ``ppo_true_nav_metric``, ``reward_net_val_corr`` (held-out episodes: per-episode sum of
predicted window returns vs the BARN metric), and the details. Usage::

    python benchmarks/prompt_selection.py --barn-dir PATH/BARN --policy CKPT [--mode quick] [--test-worlds 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch as th

from envs.worlds import SPLITS
from sb3_vlm.rewards import RewardNet
from sb3_vlm.rewards.prompt_env import make_prompt_selection_env
from sb3_vlm.rewards.prompt_eval import ENV_ID, MODES, compare_with_baselines, default_conf, train_selector
from sb3_vlm.rewards.reward_training import collect_windows, fit_reward_net
from sb3_vlm.zoo import load_zoo_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barn-dir", type=Path, required=True)
    parser.add_argument("--policy", required=True, help="prompt-conditioned checkpoint (sb3-vlm pretrain --prompts)")
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--test-worlds", type=int, default=50, help="the first N of the 50 test worlds")
    parser.add_argument("--reward-episodes", type=int, default=40, help="episodes logged for the reward network")
    parser.add_argument("--reward-net", type=Path, help="reuse this reward network instead of training one")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    t0 = time.perf_counter()
    mode = MODES[args.mode]
    conf = load_zoo_config(default_conf(), ENV_ID)
    base = dict(policy=args.policy, barn_dir=args.barn_dir, window=args.window)
    train_worlds = list(SPLITS["train"][: mode["worlds"]])
    out: dict = {"mode": args.mode, "policy": str(args.policy), "train_worlds": len(train_worlds)}

    if args.reward_net is None:
        env = make_prompt_selection_env(**base, worlds=train_worlds)
        data = collect_windows(env, args.reward_episodes, seed=args.seed)
        prompts = tuple(p.text for p in env.policy.prompts)
        net, metrics = fit_reward_net(data, prompts, env.policy.params.names, seed=args.seed)
        net_dir = Path(tempfile.mkdtemp(prefix="reward_net_"))
        net.save_pretrained(net_dir, metadata={"metrics": metrics})
    else:
        net_dir, metrics = args.reward_net, RewardNet.read_metadata(args.reward_net)["metrics"]
    val = metrics["val"]
    out.update(
        reward_net_val_corr=val["nav_metric_corr"],
        reward_net_window_corr=val["window_return_corr"],
        reward_net_success_auc=val["success_auc"],
        reward_net_true_return_corr=val["true_return_nav_metric_corr"],
        reward_net_val_episodes=val["episodes"],
    )

    models = {}
    for reward in ("learned", "true"):
        kwargs = {**conf.env_kwargs, **base, "worlds": train_worlds, "reward": reward}
        kwargs["reward_net"] = str(net_dir) if reward == "learned" else None
        models[reward] = train_selector(kwargs, conf.algo_kwargs, mode["steps"], mode["n_envs"], args.seed)
    out["train_seconds"] = time.perf_counter() - t0

    env = make_prompt_selection_env(**base, worlds="test")
    agents = {"ppo_learned": models["learned"], "ppo_true": models["true"]}
    results = compare_with_baselines(env, agents, SPLITS["test"][: args.test_worlds], seed=args.seed)

    def ci(name: str) -> dict:
        return {k: round(v, 4) for k, v in results[name]["nav_metric"].items() if k != "n"}

    out["fixed_prompt_nav_metric"] = {n.removeprefix("fixed:"): ci(n) for n in results if n.startswith("fixed:")}
    out["random_prompt_nav_metric"] = ci("random")
    out["ppo_learned_nav_metric"] = ci("ppo_learned")
    out["ppo_true_nav_metric"] = ci("ppo_true")
    out["success_rate"] = {n: round(r["success"]["mean"], 3) for n, r in results.items()}
    out["prompt_share"] = {n: r["prompt_share"] for n, r in results.items() if not n.startswith("fixed:")}
    out["test_worlds"] = args.test_worlds
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
