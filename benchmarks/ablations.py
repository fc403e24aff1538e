"""The paper checklist's ablations in one command: the supervised model alone, then TD3 fine-tuning from it with the
VLM frozen vs LoRA-tuned, the DPT head tuned vs frozen, and an actor learning-rate sweep, each over seeds on the
same env-step budget, all evaluated on the same held-out test worlds with the same seeds.

Arms (``ARMS``): ``base`` = VLM frozen, DPT tuned, actor lr 1e-5 (a point of the sweep); ``vlm_lora`` = base + a
fresh LoRA trained; ``dpt_frozen`` = base with the DPT head frozen (only the actor's linear head trains);
``actor_lr_<x>`` = base with actor lr x in {1e-6, 5e-6, 5e-5}; ``sft`` = the supervised checkpoint served as is
(FTRL's server: DPT head + its SFT mlp, no RL).

The supervised checkpoint is ``--sft`` or, without it, made here by ``sb3-vlm pretrain`` (``--sft-samples`` pairs).
Per arm and seed, ``sb3-vlm train`` runs the VLM zoo file from that checkpoint (``--vlm``) for ``--timesteps`` env
steps (no test evaluation during training: the held-out worlds are only for this table), then the final model runs
one episode on each of the first ``--worlds`` test worlds and, for generalisation, as many training worlds. The
per-seed mean nav metric is the replicate: each arm reports its mean over seeds with a 95 % Student-t interval on the
test and the training worlds, plus the test success rate and env steps.

Writes ``ablations.json``, ``ablations.md`` (the table) and ``ablations.png`` (nav metric +- CI per arm) into
``--out``; training output goes to ``--out/train.log``. Prints one JSON line. Usage::

    python benchmarks/ablations.py --quick                    # a few minutes on a CPU: tiny budgets, 2 seeds
    python benchmarks/ablations.py --barn-dir /path/BARN --timesteps 20000 --seeds 0 1 2 --worlds 50 --out ablation
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from envs.planners import DWA_PARAMS
from envs.worlds import TEST_IDS, TRAIN_IDS
from sb3_vlm.cli import main as cli
from sb3_vlm.policies import load_policy
from sb3_vlm.workflows.evaluation import evaluate, summary
from sb3_vlm.workflows.training import TrainSettings, train
from sb3_vlm.zoo import default_conf

ENV_ID = "BarnNavCostmap-v0"
BASE_LR = 1e-5
ARMS: dict[str, dict[str, Any]] = {
    "base": {},
    "vlm_lora": {"policy_kwargs": {"freeze_vlm": False, "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}}},
    "dpt_frozen": {"policy_kwargs": {"freeze_dpt": True}},
    "actor_lr_1e-6": {"actor_lr": 1e-6},
    "actor_lr_5e-6": {"actor_lr": 5e-6},
    "actor_lr_5e-5": {"actor_lr": 5e-5},
}
"""Changes of each RL arm to the base zoo entry (VLM frozen, DPT tuned, actor lr 1e-5)."""


def arm_conf(out: Path, name: str, change: dict[str, Any], args: argparse.Namespace) -> Path:
    """The VLM zoo file with ``change`` applied, at the run's budget, written to ``out/<name>.yml``."""
    conf = yaml.safe_load(default_conf("vlm").read_text())
    entry = conf[ENV_ID]
    entry.update(n_envs=args.n_envs, batch_size=args.batch_size, learning_starts=args.learning_starts)
    entry.update(actor_lr=BASE_LR, critic_lr=args.critic_lr)
    entry["policy_kwargs"] = {"freeze_vlm": True, "feature_cache_bytes": 2**28}  # backbone: --vlm (the SFT model)
    entry["env_kwargs"]["max_steps"] = args.max_steps
    for key, value in change.items():
        entry[key] = {**entry[key], **value} if isinstance(value, dict) else value
    if "lora" in entry["policy_kwargs"]:
        entry["policy_kwargs"].pop("feature_cache_bytes")  # the cache is off while the VLM trains
    path = out / f"{name}.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def seed_interval(values: list[float]) -> float | None:
    """Half-width of the 95 % Student-t interval of the mean of ``values`` (None for one value)."""
    if len(values) < 2:
        return None
    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


def evaluate_arm(spec: str, worlds: dict[str, list[int]], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Mean nav metric and success rate of one policy on each world set (same seeds for every policy)."""
    policy = load_policy(spec, params=DWA_PARAMS)
    rows = {
        key: summary(evaluate(policy, ids, 1, args.barn_dir, seed=10_000, progress=False))
        for key, ids in worlds.items()
    }
    return {key: {"nav_metric": row["nav_metric"], "success_rate": row["success_rate"]} for key, row in rows.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets and 2 seeds (overrides the sizes below)")
    parser.add_argument("--out", type=Path, default=Path("ablation"))
    parser.add_argument("--sft", type=Path, help="supervised checkpoint to start from (default: pretrain one here)")
    parser.add_argument("--sft-samples", type=int, default=512)
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds (default: the generated ones)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=4000, help="env steps of every RL arm and seed")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-starts", type=int, default=256)
    parser.add_argument("--critic-lr", type=float, default=1e-4)
    parser.add_argument("--max-steps", type=int, default=200, help="episode length in training (0.5 s steps)")
    parser.add_argument("--worlds", type=int, default=20, help="first N test worlds for the final evaluation")
    parser.add_argument("--arms", nargs="+", choices=["sft", *ARMS], default=["sft", *ARMS])
    args = parser.parse_args(argv)
    if args.quick:
        args.sft_samples, args.seeds, args.timesteps, args.n_envs = 16, [0, 1], 48, 4
        args.batch_size, args.learning_starts, args.max_steps, args.worlds = 8, 16, 30, 2
    args.out.mkdir(parents=True, exist_ok=True)
    worlds = {"test": list(TEST_IDS[: args.worlds]), "train": list(TRAIN_IDS[: args.worlds])}
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with open(args.out / "train.log", "w") as log, contextlib.redirect_stdout(log):
        sft = args.sft
        if sft is None:
            sft = args.out / "sft"
            pretrain = ["pretrain", "--out", str(sft), "--samples", str(args.sft_samples), "--epochs", "2",
                        "--worlds", "train", "--seed", "0", "--no-progress-bar"]  # fmt: skip
            if args.barn_dir is not None:
                pretrain += ["--barn-dir", str(args.barn_dir)]
            if cli(pretrain) != 0:
                raise RuntimeError(f"pretrain failed; see {args.out / 'train.log'}")
        for name in args.arms:
            results = []
            for seed in [0] if name == "sft" else args.seeds:
                if name == "sft":
                    spec = str(sft)
                else:
                    settings = TrainSettings(
                        conf_file=arm_conf(args.out, name, ARMS[name], args),
                        vlm=str(sft),
                        timesteps=args.timesteps,
                        barn_dir=args.barn_dir,
                        seed=seed,
                        log_dir=args.out / "runs" / name,
                        eval_freq=0,
                        final_eval=0,
                        no_progress_bar=True,
                    )
                    spec = str(train(settings) / "model.zip")
                results.append(evaluate_arm(spec, worlds, args))
            per_seed = [r["test"]["nav_metric"] for r in results]
            train_nav = [r["train"]["nav_metric"] for r in results]
            rows.append(
                {
                    "arm": name,
                    "seeds": len(per_seed),
                    "nav_metric": float(np.mean(per_seed)),
                    "nav_metric_ci95": seed_interval(per_seed),
                    "success_rate": float(np.mean([r["test"]["success_rate"] for r in results])),
                    "train_worlds_nav_metric": float(np.mean(train_nav)),
                    "train_worlds_nav_metric_ci95": seed_interval(train_nav),
                    "env_steps": 0 if name == "sft" else args.timesteps,
                    "nav_metric_per_seed": per_seed,
                }
            )
    report = {
        "quick": args.quick,
        "worlds": "real BARN" if args.barn_dir else "generated",
        "test_worlds": len(worlds["test"]),
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    write_outputs(args.out, report)
    print(json.dumps(report))
    return report


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    """``ablations.json``, ``ablations.md`` (table) and ``ablations.png`` (nav metric +- 95 % CI per arm)."""
    (out / "ablations.json").write_text(json.dumps(report, indent=2))
    lines = [
        "| arm | seeds | nav metric, test worlds (95 % CI) | success, test | nav metric, training worlds | env steps |",
        "|---|---|---|---|---|---|",
    ]

    def cell(mean: float, ci: float | None) -> str:
        return f"{mean:.3f}" + ("" if ci is None else f" ± {ci:.3f}")

    for r in report["rows"]:
        test, train = (
            cell(r["nav_metric"], r["nav_metric_ci95"]),
            cell(r["train_worlds_nav_metric"], r["train_worlds_nav_metric_ci95"]),
        )
        lines.append(f"| {r['arm']} | {r['seeds']} | {test} | {r['success_rate']:.0%} | {train} | {r['env_steps']} |")
    (out / "ablations.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["arm"] for r in report["rows"]]
    errors = [r["nav_metric_ci95"] or 0.0 for r in report["rows"]]
    ax.bar(names, [r["nav_metric"] for r in report["rows"]], yerr=errors, capsize=4, color="#4c72b0")
    ax.set_ylabel("nav metric (test worlds)")
    ax.set_title(f"Ablations ({report['worlds']} worlds, {report['test_worlds']} test worlds, 95 % CI over seeds)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "ablations.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
