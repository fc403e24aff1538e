"""Does training make policies better? Probes, reward ordering, APPLR from scratch and the image route.

Stages; each keeps its results in ``--work-dir`` (runs, and ``stages/*.json`` reused while their inputs are the
same), so a killed or extended run resumes where it stopped; ``--no-train`` reports the runs that reached their budget
(``applr_seeds``, ``vlm_seeds`` list them) and trains none:

1. **probes**: stock SB3 TD3 at the APPLR zoo file's settings on ``envs.probes`` (known optima);
2. **reward ordering**: default DWA, the 24-constant grid and reactive references (a rule of ours on the laser ahead,
   used here only) on the validation worlds; per reward preset, the mean return (undiscounted, and at the APPLR zoo
   file's gamma) and Spearman's rho with the nav metric; the best constant is chosen here;
3. **baselines** on the test worlds: default DWA and that best constant;
4. **APPLR from scratch**: ``sb3-vlm train --policy applr`` per seed on the fit worlds (validation worlds held out
   for its in-training evaluations), resumed if killed and extended if ``--applr-steps`` grew; its start and final
   policies on the test worlds; training return from its TensorBoard log;
5. **image route** (``--vlm``): the default supervised checkpoint (``sb3-vlm pretrain``), then ``sb3-vlm train --vlm``
   from it per seed with the shipped VLM zoo file; start and final on the test worlds, paired by episode.

Intervals: 95 % Student-t over the per-world means (episodes of a world pooled over runs and seeds); paired ones
over per-world differences. Writes ``benchmarks/results/learning.json`` and ``docs/learning_curves.png`` and
prints one JSON line. Usage::

    python benchmarks/learning.py --barn-dir /path/to/BARN [--seeds 3] [--applr-steps 500000] [--vlm]
        [--vlm-seeds 3,4,5] [--quick]

``--quick`` runs every stage at toy sizes (CI): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from scipy import stats
from stable_baselines3 import TD3
from stable_baselines3.common.env_util import make_vec_env

from envs import BarnNavVecEnv
from envs.nav_env import REWARD_PRESETS, resolve_world_ids
from envs.planners import DWA_PARAMS
from envs.probes import ContextualBandit, QuadraticBandit, TruncatedChain
from sb3_vlm.cli._args import int_list
from sb3_vlm.policies import load_policy
from sb3_vlm.workflows.evaluation import evaluate
from sb3_vlm.workflows.pretraining import PretrainSettings, pretrain
from sb3_vlm.workflows.training import START_MODEL_ZIP, TrainSettings, train
from sb3_vlm.zoo import default_conf, load_zoo_config

sys.path.insert(0, str(Path(__file__).parent))
from fidelity_barn import grid_settings, interval95  # noqa: E402
from learning_report import plot, read_curves  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVAL_SEED = 20_000
"""Seed of the test episodes: every policy meets the same noise."""


# ---------------------------------------------------------------------------------------------------------- probes
def probes(quick: bool) -> dict[str, dict[str, Any]]:
    """Stock TD3 with the APPLR zoo file's hyper-parameters on each probe: passed and the figure checked."""
    quick_sizes = {"policy_kwargs": "dict(net_arch=[64, 64])"} if quick else {}
    cfg = load_zoo_config(default_conf("applr"), hyperparams=quick_sizes)
    steps = 1_500 if quick else 4_000

    def fit(env_fn: Any, **overrides: Any) -> TD3:
        env = make_vec_env(env_fn, n_envs=cfg.n_envs, seed=0)
        model = TD3(env=env, action_noise=cfg.action_noise(env.action_space.shape[0]), seed=0,
                    **{**cfg.algo_kwargs, **overrides})  # fmt: skip
        model.learn(steps)
        return model

    out = {}
    for name, env_cls in (("quadratic_bandit", QuadraticBandit), ("contextual_bandit", ContextualBandit)):
        env = env_cls()
        obs = np.stack([env.reset(seed=i)[0] for i in range(64)])
        error = np.abs(fit(env_cls).predict(obs, deterministic=True)[0] - env.optimum(obs)).mean()
        out[name] = {"passed": bool(error < 0.1), "mean_abs_error": round(float(error), 4)}
    chain = fit(lambda: TruncatedChain(limit=5), learning_starts=256, tau=0.02)
    with th.no_grad():
        q = float(chain.critic.q1_forward(th.zeros(1, 1), th.zeros(1, 1)))
    gamma = cfg.algo_kwargs["gamma"]
    out["truncated_chain"] = {"passed": q > 0.5 / (1 - gamma), "q": round(q, 3), "bootstrapped_value": 1 / (1 - gamma)}
    return out


# ------------------------------------------------------------------------------------------------- reward ordering
def reactive(threshold: float, fast: float, inflation: float) -> Any:
    """A reference rule (this benchmark's only): ``max_vel_x`` = ``fast`` when the laser within +-30 degrees ahead
    is clear beyond ``threshold`` m (2 m clip), else 0.5; ``inflation_radius`` fixed; the rest default."""
    base = DWA_PARAMS.default.copy()
    base[DWA_PARAMS.index("inflation_radius")] = inflation
    vx = DWA_PARAMS.index("max_vel_x")

    def act(obs: np.ndarray) -> np.ndarray:
        clear = obs[:, 280:440].min(axis=1) * 2 + 1  # beams 280..439 of 720 over 270 degrees; obs = (r - 1) / 2
        params = np.tile(base, (len(obs), 1))
        params[:, vx] = np.where(clear > threshold, fast, 0.5)
        return params

    return act


def constant(overrides: dict[str, float]) -> Any:
    params = DWA_PARAMS.default.copy()
    for key, value in overrides.items():
        params[DWA_PARAMS.index(key)] = value
    return lambda obs: np.tile(params, (len(obs), 1))


def reward_ordering(barn_dir: Path | None, worlds: list[int], runs: int, gamma: float) -> dict[str, Any]:
    """Each reference policy on ``worlds`` x ``runs`` (APPLR's 1 s steps): its nav metric and, per preset, its mean
    return (the same steps scored by every preset); Spearman's rho per preset; the best constant of the grid."""
    refs = {"default": constant({})} | {f"constant:{k}": constant(v) for k, v in grid_settings().items()}
    for threshold, fast, inflation in ((1.0, 1.0, 0.6), (1.5, 1.5, 0.6), (1.9, 1.5, 0.6), (1.5, 2.0, 0.3),
                                       (1.0, 1.5, 0.3), (1.9, 1.0, 0.3)):  # fmt: skip
        refs[f"reactive:{threshold},{fast},{inflation}"] = reactive(threshold, fast, inflation)
    jobs = [(w, r) for r in range(runs) for w in worlds]
    rows = {}
    for name, act in refs.items():
        env = BarnNavVecEnv(len(jobs), barn_dir=barn_dir, worlds=worlds, time_step=1.0, max_steps=100)
        env.seed(EVAL_SEED)
        env.set_options([{"world_id": w} for w, _ in jobs])
        obs, live, t = env.reset(), np.ones(len(jobs), bool), 0
        returns = {p: np.zeros((2, len(jobs))) for p in REWARD_PRESETS}  # undiscounted, discounted
        metric = np.zeros(len(jobs))
        while live.any():
            obs, _, dones, infos = env.step(act(obs))
            for preset, config in REWARD_PRESETS.items():
                r = np.where(live, config.rewards(env.batch.last_terms), 0.0)
                returns[preset] += np.stack([r, r * gamma**t])
            for i in np.flatnonzero(dones & live):
                metric[i], live[i] = infos[i]["nav_metric"], False
            t += 1
        rows[name] = (
            {"nav_metric": float(metric.mean())}
            | {f"return_{p}": float(v[0].mean()) for p, v in returns.items()}
            | {f"return_{p}_gamma": float(v[1].mean()) for p, v in returns.items()}
        )
    metric = [row["nav_metric"] for row in rows.values()]

    def rho(key: str) -> float:
        return round(float(stats.spearmanr([row[key] for row in rows.values()], metric)[0]), 3)

    best = max((n for n in rows if n.startswith("constant:")), key=lambda n: rows[n]["nav_metric"])
    return {
        "reward_rank_corr": {p: rho(f"return_{p}") for p in REWARD_PRESETS},
        "reward_rank_corr_discounted": {p: rho(f"return_{p}_gamma") for p in REWARD_PRESETS},
        "gamma": gamma,
        "best_constant": best.removeprefix("constant:"),
        "references": rows,
    }


# ------------------------------------------------------------------------------------------------------ evaluation
def per_world(spec: str, worlds: list[int], runs: int, barn_dir: Path | None) -> np.ndarray:
    """Nav metric of policy ``spec`` on each world ``[W]``, mean over ``runs`` seeded episodes (same for all)."""
    records = evaluate(load_policy(spec, params=DWA_PARAMS), worlds, runs, barn_dir, seed=EVAL_SEED, progress=False)
    return np.array([np.mean([r["nav_metric"] for r in records if r["world"] == w]) for w in worlds])


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % t half-width of per-world values ``[W]``."""
    low, high = interval95(values)
    return round(float(values.mean()), 4), round((high - low) / 2, 4)


def cached(work_dir: Path, name: str, key: dict[str, Any], compute: Any) -> Any:
    """``compute()``, kept in ``<work_dir>/stages/<name>.json`` with ``key`` and reused while ``key`` is the same."""
    path = work_dir / "stages" / f"{name}.json"
    key = json.loads(json.dumps(key, default=str))
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            return saved["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "value": value}, indent=1))
    return value


def run_seeds(run_dirs: list[Path]) -> list[int]:
    """The seed of each run directory, from its ``run_config.json``."""
    return [json.loads((d / "run_config.json").read_text())["seed"] for d in run_dirs]


def finished(log_dir: Path, seed: int, timesteps: int) -> Path | None:
    """The run of ``seed`` in ``log_dir`` if it ended (``model.zip``) at ``timesteps`` steps or more."""
    for run_dir in sorted(log_dir.glob(f"*__{seed}__*"))[-1:]:
        saved = json.loads((run_dir / "run_config.json").read_text())
        if (run_dir / "model.zip").is_file() and saved["timesteps"] >= timesteps:
            return run_dir
    return None


def run_or_resume(settings: TrainSettings) -> Path:
    """The run of ``settings.seed`` in ``settings.log_dir``: trained, resumed from its last checkpoint if it was
    killed, or extended if ``settings.timesteps`` grew; returns its directory."""
    done = finished(settings.log_dir, settings.seed, settings.timesteps)
    if done is not None:
        return done
    found = sorted(settings.log_dir.glob(f"*__{settings.seed}__*"))
    if not found:
        return train(settings)
    run_dir = found[-1]
    saved = json.loads((run_dir / "run_config.json").read_text())
    saved["timesteps"] = max(saved["timesteps"], settings.timesteps)
    (run_dir / "run_config.json").write_text(json.dumps(saved, indent=2))
    return train(TrainSettings(resume=run_dir))


def scored(model: Path, test: list[int], args: argparse.Namespace) -> np.ndarray:
    """:func:`per_world` of a saved policy, kept in ``--work-dir/stages`` while the file is unchanged."""
    stat = model.stat()
    key = {
        "model": str(model.resolve()),
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "args": (test, args.runs, args.barn_dir),
    }
    name = "score_" + "_".join(model.resolve().parts[-2:]).replace(".", "_")
    return np.array(
        cached(args.work_dir, name, key, lambda: per_world(str(model), test, args.runs, args.barn_dir).tolist())
    )


def seed_mean(curves: list[list[dict[str, float]]]) -> list[tuple[int, float]]:
    """``(env_steps, mean nav metric)`` of every seed's k-th evaluation (runs evaluate at the first rollout end past
    each multiple of ``eval_freq``, a few steps apart per seed: the latest seed's steps are reported)."""
    n = min(len(c) for c in curves)
    steps = [max(int(c[k]["env_steps"]) for c in curves) for k in range(n)]
    return [(steps[k], round(float(np.mean([c[k]["nav_metric"] for c in curves])), 4)) for k in range(n)]


def route(name: str, runs_dirs: list[Path], test: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Start and final policies of each seed's run on the test worlds, curves from its logs."""
    start = np.stack([scored(d / START_MODEL_ZIP, test, args) for d in runs_dirs])
    final = np.stack([scored(d / "model.zip", test, args) for d in runs_dirs])
    curves = [read_curves(d) for d in runs_dirs]
    out: dict[str, Any] = {}
    out[f"{name}_start_nav_metric"], out[f"{name}_start_ci95"] = mean_ci(start.mean(axis=0))
    out[f"{name}_final_nav_metric"], out[f"{name}_final_ci95"] = mean_ci(final.mean(axis=0))
    out[f"{name}_improvement"], out[f"{name}_improvement_ci95"] = mean_ci((final - start).mean(axis=0))
    out[f"{name}_final_per_seed"] = [round(float(v), 4) for v in final.mean(axis=1)]
    out[f"{name}_curves"] = curves
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds (default: generated ones)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/learning"), help="runs kept here (resumable)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--applr-steps", type=int, default=500_000)
    parser.add_argument("--eval-every", type=int, default=10_000, help="env steps between validation evaluations")
    parser.add_argument("--runs", type=int, default=4, help="episodes per test world of every policy")
    parser.add_argument("--order-runs", type=int, default=2, help="episodes per validation world, reward ordering")
    parser.add_argument("--vlm", action="store_true", help="also run the image route")
    parser.add_argument("--vlm-steps", type=int, default=40_000)
    parser.add_argument(
        "--vlm-seeds",
        type=int_list,
        help="image-route seeds, e.g. 3,4,5 "
        "(default: 0 .. --seeds - 1); fresh seeds confirm a budget chosen after a look at earlier ones",
    )
    parser.add_argument("--quick", action="store_true", help="every stage at toy sizes: the figures mean nothing")
    parser.add_argument(
        "--no-train", action="store_true", help="report the runs that reached their budget; train or resume none"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "learning_curves.png")
    args = parser.parse_args()
    n_val, n_test = 50, 50
    if args.quick:
        args.seeds, args.applr_steps, args.eval_every, args.vlm_steps = 1, 512, 256, 64
        args.runs, args.order_runs, n_val, n_test = 1, 1, 4, 4
    t0 = time.time()
    # One torch thread, as the runs get (torch_threads=1): the probes' default two threads beside a busy core stall
    # (a 2-core VM: 20 min instead of 2 for the probes, docs/guide/speed.md "threads").
    th.set_num_threads(1)
    cfg = load_zoo_config(default_conf("applr"))
    val = list(resolve_world_ids("val", args.barn_dir))
    val = val[:: max(len(val) // n_val, 1)]
    test = list(resolve_world_ids("test", args.barn_dir))[:n_test]
    print("probes", flush=True)
    probe_results = cached(args.work_dir, "probes", {"quick": args.quick}, lambda: probes(args.quick))
    result: dict[str, Any] = {"probes": probe_results}
    print("reward ordering on the validation worlds", flush=True)
    ordering = (args.barn_dir, val[:n_val], args.order_runs, cfg.algo_kwargs["gamma"])
    result.update(cached(args.work_dir, "reward_ordering", {"args": ordering}, lambda: reward_ordering(*ordering)))
    best = "dwa:" + result["best_constant"]
    for key, spec in (("dwa", "dwa"), ("best_constant", best)):
        baseline = (spec, test, args.runs, args.barn_dir)
        value = cached(args.work_dir, key, {"args": baseline}, lambda b=baseline: mean_ci(per_world(*b)))
        result[f"{key}_nav_metric"], result[f"{key}_ci95"] = value
    common = dict(barn_dir=args.barn_dir, eval_freq=args.eval_every, eval_episodes=n_val, final_eval=0,
                  checkpoint_freq=None, no_progress_bar=True, torch_threads=1)  # fmt: skip
    applr_runs = []
    for seed in range(args.seeds):
        print(f"APPLR seed {seed}", flush=True)
        log_dir = args.work_dir / "applr"
        if args.no_train:
            applr_runs += filter(None, [finished(log_dir, seed, args.applr_steps)])
            continue
        applr_runs.append(run_or_resume(TrainSettings(policy="applr", timesteps=args.applr_steps, seed=seed,
                                                      log_dir=log_dir, **common)))  # fmt: skip
    if not applr_runs:
        sys.exit(f"--no-train: no APPLR run in {args.work_dir / 'applr'} reached {args.applr_steps} steps")
    result["applr_seeds"] = run_seeds(applr_runs)
    result.update(route("applr", applr_runs, test, args))
    first, last = zip(*(c["return_first_last"] for c in result["applr_curves"]), strict=True)
    result.update(applr_env_steps=args.applr_steps, applr_return_first=list(first), applr_return_last=list(last))
    if args.vlm:
        ckpt = args.work_dir / "sft"
        if not (ckpt / "sb3_vlm_config.json").is_file():  # the default supervised checkpoint (quick: 64 pairs)
            sizes = {"samples": 64} if args.quick else {}
            pretrain(PretrainSettings(ckpt, barn_dir=args.barn_dir, worlds="fit", **sizes))
        label_steps = json.loads((ckpt / "sb3_vlm_config.json").read_text())["sft"]["data"]["env_steps"]
        sft_args = (str(ckpt.resolve()), test, args.runs, args.barn_dir)
        stamp = (ckpt / "sb3_vlm_config.json").stat().st_mtime
        sft_only = cached(
            args.work_dir, "sft_only", {"args": sft_args, "mtime": stamp}, lambda: mean_ci(per_world(*sft_args))
        )
        vlm_runs = []
        for seed in args.vlm_seeds or range(args.seeds):
            print(f"image route seed {seed}", flush=True)
            if args.no_train:
                vlm_runs += filter(None, [finished(args.work_dir / "vlm", seed, args.vlm_steps)])
                continue
            settings = TrainSettings(policy="vlm", vlm=str(ckpt), timesteps=args.vlm_steps, seed=seed,
                                     log_dir=args.work_dir / "vlm", **common)  # fmt: skip
            vlm_runs.append(run_or_resume(settings))
        if not vlm_runs:
            sys.exit(f"--no-train: no image-route run in {args.work_dir / 'vlm'} reached {args.vlm_steps} steps")
        result["vlm_seeds"] = run_seeds(vlm_runs)
        result.update(route("vlm", vlm_runs, test, args))
        result.update(sft_only_nav_metric=sft_only[0], sft_only_ci95=sft_only[1], sft_label_env_steps=label_steps)
        # P6 on one world set (validation): the first eval step where the image route's seed-mean curve reaches
        # APPLR's seed-mean final validation metric, label steps added.
        applr_final_val = float(np.mean([c["val"][-1]["nav_metric"] for c in result["applr_curves"]]))
        vlm_mean = seed_mean([c["val"] for c in result["vlm_curves"]])
        reached = [steps + label_steps for steps, value in vlm_mean if value >= applr_final_val]
        result.update(applr_final_val_nav_metric=round(applr_final_val, 4), vlm_val_curve_seed_mean=vlm_mean)
        result["vlm_env_steps_to_applr_final"] = min(reached) if reached else None
    result.update(seeds=len(applr_runs), quick=args.quick, seconds=round(time.time() - t0, 1),
                  settings={**vars(args), "val_worlds": val[:n_val], "test_worlds": test})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    plot(result, args.plot)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("curves") and k != "references"}, default=str))


if __name__ == "__main__":
    main()
