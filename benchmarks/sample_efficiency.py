"""Sample efficiency of the VLM route (supervised stage -> TD3) against APPLR (TD3 from scratch), on real BARN worlds.

Everything trains on the 250 training worlds and is evaluated on the 50 test worlds; nothing is selected on the test
worlds (the best constant vector is chosen on training worlds, checkpoints are the last ones).

* baselines on the test worlds (``--runs`` episodes per world): default DWA, the best constant (chosen on
  ``--constant-worlds`` training worlds among the 24-constant grid of ``fidelity_barn.py`` and the mean of the
  supervised labels, what an MSE head predicts from an image that tells it nothing), the published APPLR actor;
* APPLR (``zoo_configs/td3_applr_barnnav.yml``: MLP on the laser) from scratch, ``--seeds`` seeds, ``--applr-steps``
  environment steps, evaluated every ``--eval-every`` steps (one episode per test world); its final value is the
  mean of its last three evaluations;
* VLM: ``sb3-vlm pretrain`` with its defaults (labels searched on the training worlds; the simulated steps of every
  candidate branch are counted as environment steps and start its x-axis), evaluated alone, then
  ``sb3-vlm train --vlm <checkpoint>`` (``zoo_configs/td3_vlm_barnnav.yml``, with ``--vlm-hyperparams`` overrides
  such as ``policy_kwargs:dict(freeze_dpt=True)``) for ``--vlm-steps`` steps, evaluated the same way.

Writes ``benchmarks/results/sample_efficiency.json`` and ``docs/sample_efficiency.png`` (nav metric +- 95 % interval
across seeds vs environment steps, default DWA, the best constant and the published APPLR actor as lines) and prints
one JSON line with the summary keys. Usage::

    python benchmarks/sample_efficiency.py --barn-dir /path/to/BARN [--seeds 3] [--applr-steps 200000] [--quick]

``--quick`` is a smoke test of the whole path (a few worlds, tiny budgets): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from envs.nav_env import resolve_world_ids
from envs.planners import DWA_PARAMS
from sb3_vlm._constants import SB3_VLM_CONFIG
from sb3_vlm.cli._args import hyperparam
from sb3_vlm.policies import load_policy
from sb3_vlm.policies.base import LoadedPolicy, SB3Policy
from sb3_vlm.workflows.evaluation import evaluate, summary
from sb3_vlm.workflows.pretraining import PretrainSettings, pretrain
from sb3_vlm.workflows.training import TrainSettings, build_model, make_vec_env, zoo_config

sys.path.insert(0, str(Path(__file__).parent))
from fidelity_barn import grid_settings, run_episodes, summarise  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APPLR_ACTOR = ROOT.parent / "shared" / "data" / "applr"
"""Default place of the published APPLR actor (``policy_actor``)."""
EVAL_SEED = 20_000
"""Seed of the test episodes: every policy meets the same noise."""


def nav_metric(policy: LoadedPolicy, worlds: list[int], runs: int, barn_dir: Path | None, seed: int) -> dict:
    """Test-world nav metric of ``policy``: mean and 95 % normal half-width over episodes, success rate and the
    per-episode metrics."""
    records = evaluate(policy, worlds, runs, barn_dir, seed=seed, progress=False)
    row = summary(records)
    return {
        "nav_metric": row["nav_metric"],
        "ci95": row["nav_metric_ci95"],
        "success": row["success_rate"],
        "episodes": [r["nav_metric"] for r in records],
    }


def best_constant(
    barn_dir: Path | None, n_worlds: int, runs: int, seed: int, extra: dict[str, dict[str, float]]
) -> tuple[str, dict[str, float]]:
    """The constant with the best nav metric on ``n_worlds`` training worlds (evenly spaced ids), among the
    24-constant grid and ``extra`` ones (name -> parameter overrides)."""
    from envs.worlds import get_world

    train = resolve_world_ids("train", barn_dir)
    ids = [train[i] for i in np.linspace(0, len(train) - 1, min(n_worlds, len(train))).astype(int)]
    worlds = {w: get_world(w, barn_dir) for w in ids}
    settings = {**grid_settings(), **extra}
    results, _, _ = run_episodes(worlds, settings, runs, 200, True, seed)
    table = summarise(results, worlds)
    name = max(table, key=lambda k: table[k]["nav_metric"])
    return name, settings[name]


class TestCurve(BaseCallback):
    """Every ``every`` env steps (and before the first), the nav metric of the live policy on the test worlds."""

    def __init__(self, every: int, measure: Callable[[BaseAlgorithm], dict], offset: int = 0):
        super().__init__()
        self.every, self.measure, self.offset = every, measure, offset
        self.points: list[dict[str, Any]] = []
        self._next = 0

    def _on_training_start(self) -> None:
        self._record()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._record()
        return True

    def _on_training_end(self) -> None:
        if self.points[-1]["td3_steps"] != self.num_timesteps:
            self._record()

    def _record(self) -> None:
        point = self.measure(self.model)
        self.points.append({"env_steps": self.offset + self.num_timesteps, "td3_steps": self.num_timesteps, **point})
        self._next = self.num_timesteps + self.every
        print(f"  {self.offset + self.num_timesteps:>8} env steps: nav metric {point['nav_metric']:.3f}", flush=True)


def train_curve(settings: TrainSettings, every: int, test: list[int], offset: int = 0) -> list[dict[str, Any]]:
    """One TD3 run from the zoo file of ``settings``, its live policy evaluated on the ``test`` worlds (one episode
    each) every ``every`` steps; returns the points (``offset`` is added to the env steps)."""
    _, cfg, env_kwargs = zoo_config(settings)
    env = make_vec_env(cfg.env_id, cfg.n_envs, seed=settings.seed, **env_kwargs)
    model = build_model(cfg, env, settings.seed, None, 0)
    observation = "laser" if cfg.env_id == "BarnNav-v0" else "costmap"
    # What the policy needs of an evaluation env: its control period, episode length, image settings.
    eval_kwargs = {k: v for k, v in env_kwargs.items() if k in ("time_step", "max_steps", "image_size", "velocity")}

    def measure(live: BaseAlgorithm) -> dict:
        policy = SB3Policy("live", "sb3", live, observation, DWA_PARAMS.names, eval_kwargs)
        return nav_metric(policy, test, 1, settings.barn_dir, EVAL_SEED)

    curve = TestCurve(every, measure, offset)
    model.learn(cfg.n_timesteps, callback=CallbackList([curve, *cfg.callbacks()]), progress_bar=True)
    env.close()
    return curve.points


def mean_curve(curves: list[list[dict]], key: str = "nav_metric") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and 95 % t half-width across seeds of each point's ``key`` (curves cut to the shortest)."""
    n = min(len(c) for c in curves)
    steps = np.array([p["env_steps"] for p in curves[0][:n]])
    values = np.array([[p[key] for p in c[:n]] for c in curves])
    if len(curves) < 2:
        return steps, values[0], np.zeros(n)
    half = scipy_stats.t.ppf(0.975, len(curves) - 1) * values.std(axis=0, ddof=1) / np.sqrt(len(curves))
    return steps, values.mean(axis=0), half


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for algo, color in (("applr", "tab:blue"), ("vlm", "tab:red")):
        steps, mean, half = mean_curve([run["curve"] for run in result[algo]])
        ax.plot(steps, mean, color=color, label=f"{algo.upper()} ({len(result[algo])} seeds)")
        ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
    for key, label, style in (
        ("dwa_nav_metric", "default DWA", "k--"),
        ("best_constant_nav_metric", "best constant (training worlds)", "g:"),
        ("published_applr_nav_metric", "published APPLR actor", "b-."),
    ):
        if result.get(key) is not None:
            ax.axhline(result[key], color=style[0], linestyle=style[1:], label=label)
    ax.set_xlabel("environment steps (VLM: supervised-label steps included)")
    ax.set_ylabel(f"nav metric, {len(result['test_worlds'])} BARN test worlds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds (default: generated ones)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--applr-steps", type=int, default=200_000)
    parser.add_argument("--vlm-steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=10_000, help="env steps between test evaluations")
    parser.add_argument("--vlm-eval-every", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3, help="episodes per test world of the baselines and SFT")
    parser.add_argument("--constant-worlds", type=int, default=50, help="training worlds of the constant search")
    parser.add_argument("--samples", type=int, default=None, help="SFT pairs (default: pretrain's)")
    parser.add_argument("--test-worlds", type=int, default=50, help="the first N test worlds")
    parser.add_argument("--applr-actor", type=Path, default=APPLR_ACTOR, help="published APPLR actor directory")
    parser.add_argument(
        "--vlm-hyperparams",
        nargs="+",
        type=hyperparam,
        default=[],
        metavar="KEY:VALUE",
        help="zoo overrides of the VLM TD3 stage, as train --hyperparams (e.g. 'policy_kwargs:dict(freeze_dpt=True)')",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny budgets, few worlds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sample_efficiency.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "sample_efficiency.png")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.applr_steps, args.vlm_steps, args.eval_every, args.vlm_eval_every = 1, 2048, 256, 1024, 128
        args.runs, args.constant_worlds, args.samples, args.test_worlds = 1, 3, 64, 3
    t0 = time.time()
    test = list(resolve_world_ids("test", args.barn_dir))[: args.test_worlds]
    common = dict(barn_dir=args.barn_dir, worlds="train", final_eval=0, no_progress_bar=False)
    with tempfile.TemporaryDirectory() as tmp:
        vlm_runs = []
        for seed in range(args.seeds):
            print(f"VLM seed {seed}: supervised stage")
            ckpt = Path(tmp) / f"sft_{seed}"
            samples = {} if args.samples is None else {"samples": args.samples}  # else pretrain's default
            settings = PretrainSettings(ckpt, barn_dir=args.barn_dir, worlds="train", seed=seed, progress_bar=False)
            pretrain(dataclasses.replace(settings, **samples))
            label_steps = json.loads((ckpt / SB3_VLM_CONFIG).read_text())["sft"]["data"]["env_steps"]
            sft = nav_metric(load_policy(str(ckpt), params=DWA_PARAMS), test, args.runs, args.barn_dir, EVAL_SEED)
            vlm_runs.append({"seed": seed, "checkpoint": ckpt, "label_env_steps": label_steps, "sft_only": sft})
        # What an MSE head regresses to when the image tells it nothing: the mean label, as a constant candidate.
        label_mean = np.load(vlm_runs[0]["checkpoint"] / "normalization" / "param_mean.npy")[: len(DWA_PARAMS)]
        extra = {
            "supervised_label_mean": dict(zip(DWA_PARAMS.names, DWA_PARAMS.validate(label_mean).tolist(), strict=True))
        }
        name, constant = best_constant(args.barn_dir, args.constant_worlds, 2, 1, extra)
        baselines = {"dwa": "dwa", "best_constant": "dwa:" + ",".join(f"{k}={v:.4g}" for k, v in constant.items())}
        if args.applr_actor.is_dir():
            baselines["published_applr"] = str(args.applr_actor)
        measured = {
            key: nav_metric(load_policy(spec, params=DWA_PARAMS), test, args.runs, args.barn_dir, EVAL_SEED)
            for key, spec in baselines.items()
        }
        result: dict[str, Any] = {
            "barn_dir": None if args.barn_dir is None else str(args.barn_dir),
            "test_worlds": test,
            "seeds": args.seeds,
            "quick": args.quick,
            "vlm_hyperparams": dict(args.vlm_hyperparams),
            "best_constant": name,
            "best_constant_params": constant,
            **{f"{k}_nav_metric": v["nav_metric"] for k, v in measured.items()},
            **{f"{k}_ci95": v["ci95"] for k, v in measured.items()},
            "applr": [],
            "vlm": [],
        }
        for seed in range(args.seeds):
            print(f"APPLR seed {seed}")
            settings = TrainSettings(policy="applr", timesteps=args.applr_steps, seed=seed, **common)
            result["applr"].append({"seed": seed, "curve": train_curve(settings, args.eval_every, test)})
        for run in vlm_runs:
            ckpt, label_steps = str(run.pop("checkpoint")), run["label_env_steps"]
            print(f"VLM seed {run['seed']}: TD3 from the supervised checkpoint ({label_steps} label env steps)")
            settings = TrainSettings(
                policy="vlm",
                timesteps=args.vlm_steps,
                vlm=ckpt,
                seed=run["seed"],
                hyperparams=dict(args.vlm_hyperparams) or None,
                **common,
            )
            result["vlm"].append({**run, "curve": train_curve(settings, args.vlm_eval_every, test, label_steps)})
    summarise_result(result)
    result["seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.plot)
    keys = (
        "applr_env_steps applr_final_nav_metric vlm_env_steps_to_applr_final goal_reached sft_label_env_steps "
        "sft_only_nav_metric sft_only_ci95 dwa_nav_metric dwa_ci95 best_constant_nav_metric best_constant_ci95 "
        "published_applr_nav_metric seeds quick seconds"
    ).split()
    print(json.dumps({k: result.get(k) for k in keys}))


def summarise_result(result: dict) -> None:
    """The summary keys of the issue: APPLR's final value (mean of its last three evaluations, mean over seeds),
    the first VLM step count whose mean over seeds reaches it, and the supervised stage's figures."""
    applr_steps, applr_mean, _ = mean_curve([r["curve"] for r in result["applr"]])
    final = float(np.mean(applr_mean[-3:]))
    vlm_steps, vlm_mean, _ = mean_curve([r["curve"] for r in result["vlm"]])
    reached = np.flatnonzero(vlm_mean >= final)
    sft = np.concatenate([r["sft_only"]["episodes"] for r in result["vlm"]])
    result.update(
        applr_env_steps=int(applr_steps[-1]),
        applr_final_nav_metric=final,
        vlm_env_steps_to_applr_final=int(vlm_steps[reached[0]]) if len(reached) else None,
        sft_label_env_steps=int(np.mean([r["label_env_steps"] for r in result["vlm"]])),
        sft_only_nav_metric=float(sft.mean()),
        sft_only_ci95=float(1.96 * sft.std(ddof=1) / np.sqrt(len(sft))),
    )
    steps_to = result["vlm_env_steps_to_applr_final"]
    result["goal_reached"] = steps_to is not None and steps_to <= result["applr_env_steps"] / 5


if __name__ == "__main__":
    main()
