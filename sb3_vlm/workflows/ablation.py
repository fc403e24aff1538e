"""The paper checklist's ablations (``sb3-vlm ablate``): the supervised model alone, then TD3 fine-tuning from it with
the VLM frozen vs LoRA-tuned, the DPT head tuned vs frozen, and an actor learning-rate sweep, over seeds, on the same
held-out test worlds (docs/results/ablations.md "The arms")."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from envs.planners import DWA_PARAMS
from envs.worlds import TEST_IDS, TRAIN_IDS
from sb3_vlm.policies import load_policy
from sb3_vlm.workflows.evaluation import evaluate, summary
from sb3_vlm.workflows.training import TrainSettings, train
from sb3_vlm.zoo import default_conf

__all__ = ["ARMS", "AblationSettings", "run_ablation", "seed_interval", "write_outputs"]

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
ALL_ARMS = ("sft", *ARMS)


@dataclass
class AblationSettings:
    """
    One ablation run (the ``sb3-vlm ablate`` options).

    :param out: Output directory.
    :param sft: Supervised checkpoint to start from; None: pretrain one here.
    :param sft_samples: Supervised pairs of that pretraining.
    :param barn_dir: Real BARN worlds, or None (generated ones).
    :param seeds: Seeds of every RL arm.
    :param timesteps: Env steps of every RL arm and seed.
    :param n_envs: Envs per training run.
    :param batch_size: TD3 batch size.
    :param learning_starts: Env steps before the first update.
    :param critic_lr: Critic learning rate of every arm.
    :param max_steps: Episode length in training (0.5 s steps).
    :param worlds: First N test worlds (and N training worlds) of the final evaluation.
    :param arms: Arms to run, among :data:`ALL_ARMS`.
    """

    out: Path = Path("ablation")
    sft: Path | None = None
    sft_samples: int = 512
    barn_dir: Path | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    timesteps: int = 4000
    n_envs: int = 8
    batch_size: int = 32
    learning_starts: int = 256
    critic_lr: float = 1e-4
    max_steps: int = 200
    worlds: int = 20
    arms: list[str] = field(default_factory=lambda: list(ALL_ARMS))

    def quick(self) -> AblationSettings:
        """The same run at CI size: tiny budgets, 2 seeds, 2 worlds."""
        return dataclasses.replace(
            self, sft_samples=16, seeds=[0, 1], timesteps=48, n_envs=4, batch_size=8, learning_starts=16,
            max_steps=30, worlds=2,
        )  # fmt: skip

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ALL_ARMS]
        if unknown:
            raise ValueError(f"unknown ablation arms {unknown}: choose among {list(ALL_ARMS)}")


def arm_conf(settings: AblationSettings, name: str) -> Path:
    """The VLM zoo file with arm ``name``'s change, at the run's budget, written to ``out/<name>.yml``."""
    conf = yaml.safe_load(default_conf("vlm").read_text())
    entry = conf[ENV_ID]
    entry.update(n_envs=settings.n_envs, batch_size=settings.batch_size, learning_starts=settings.learning_starts)
    entry.update(actor_lr=BASE_LR, critic_lr=settings.critic_lr)
    entry["policy_kwargs"] = {"freeze_vlm": True, "feature_cache_bytes": 2**28}  # backbone: the SFT model
    entry["env_kwargs"]["max_steps"] = settings.max_steps
    for key, value in ARMS[name].items():
        entry[key] = {**entry[key], **value} if isinstance(value, dict) else value
    if "lora" in entry["policy_kwargs"]:
        entry["policy_kwargs"].pop("feature_cache_bytes")  # the cache is off while the VLM trains
    path = settings.out / f"{name}.yml"
    path.write_text(yaml.safe_dump(conf))
    return path


def seed_interval(values: list[float]) -> float | None:
    """Half-width of the 95 % Student-t interval of the mean of ``values`` (None for one value)."""
    if len(values) < 2:
        return None
    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


def evaluate_arm(spec: str, worlds: dict[str, list[int]], barn_dir: Path | None) -> dict[str, dict[str, float]]:
    """Mean nav metric and success rate of one policy on each world set (same seeds for every policy)."""
    policy = load_policy(spec, params=DWA_PARAMS)
    rows = {
        key: summary(evaluate(policy, ids, 1, barn_dir, seed=10_000, progress=False)) for key, ids in worlds.items()
    }
    return {key: {"nav_metric": row["nav_metric"], "success_rate": row["success_rate"]} for key, row in rows.items()}


def _pretrain(settings: AblationSettings) -> Path:
    """The supervised checkpoint of the arms: ``sft_samples`` pairs on training worlds, 2 epochs."""
    from sb3_vlm.workflows.pretraining import PretrainSettings, pretrain

    run = PretrainSettings(
        out=settings.out / "sft",
        samples=settings.sft_samples,
        epochs=2,
        barn_dir=settings.barn_dir,
        worlds="train",
        seed=0,
        progress_bar=False,
    )
    return pretrain(run)


def _row(name: str, results: list[dict[str, dict[str, float]]], env_steps: int) -> dict[str, Any]:
    per_seed = [r["test"]["nav_metric"] for r in results]
    train_nav = [r["train"]["nav_metric"] for r in results]
    return {
        "arm": name,
        "seeds": len(per_seed),
        "nav_metric": float(np.mean(per_seed)),
        "nav_metric_ci95": seed_interval(per_seed),
        "success_rate": float(np.mean([r["test"]["success_rate"] for r in results])),
        "train_worlds_nav_metric": float(np.mean(train_nav)),
        "train_worlds_nav_metric_ci95": seed_interval(train_nav),
        "env_steps": env_steps,
        "nav_metric_per_seed": per_seed,
    }


def run_ablation(settings: AblationSettings, quick: bool = False) -> dict[str, Any]:
    """Run every arm and seed; write the outputs (see the module docstring) and return the report."""
    settings.out.mkdir(parents=True, exist_ok=True)
    worlds = {"test": list(TEST_IDS[: settings.worlds]), "train": list(TRAIN_IDS[: settings.worlds])}
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with open(settings.out / "train.log", "w") as log, contextlib.redirect_stdout(log):
        sft = settings.sft if settings.sft is not None else _pretrain(settings)
        for name in settings.arms:
            results = []
            for seed in [0] if name == "sft" else settings.seeds:
                spec = str(sft)
                if name != "sft":
                    run = TrainSettings(
                        conf_file=arm_conf(settings, name),
                        vlm=str(sft),
                        timesteps=settings.timesteps,
                        barn_dir=settings.barn_dir,
                        seed=seed,
                        log_dir=settings.out / "runs" / name,
                        eval_freq=0,
                        final_eval=0,
                        no_progress_bar=True,
                    )
                    spec = str(train(run) / "model.zip")
                results.append(evaluate_arm(spec, worlds, settings.barn_dir))
            rows.append(_row(name, results, 0 if name == "sft" else settings.timesteps))
    report = {
        "quick": quick,
        "worlds": "real BARN" if settings.barn_dir else "generated",
        "test_worlds": len(worlds["test"]),
        "seconds": round(time.perf_counter() - t0, 1),
        # What ran, so the table can be reproduced: every setting, sft being the checkpoint used (made here or given).
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(settings).items()},
            "sft": str(sft),
        },
        "rows": rows,
    }
    write_outputs(settings.out, report)
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
        test, train_cell = (
            cell(r["nav_metric"], r["nav_metric_ci95"]),
            cell(r["train_worlds_nav_metric"], r["train_worlds_nav_metric_ci95"]),
        )
        lines.append(
            f"| {r['arm']} | {r['seeds']} | {test} | {r['success_rate']:.0%} | {train_cell} | {r['env_steps']} |"
        )
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
