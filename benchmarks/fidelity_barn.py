"""Fidelity of the embedded simulator against the BARN challenge's published Gazebo figures, and the price of speed.

Runs real BARN worlds x ``--runs`` seeded runs with fixed DWA parameters: the defaults (against the published
Gazebo figures), a ``max_vel_x`` sweep, an ``inflation_radius`` sweep and the "saturated" vector a bound-seeking actor
picks. ``--constant-grid`` adds the 24 constants ``max_vel_x x max_vel_theta x inflation_radius`` and reports the best
one and the per-world oracle of the grid (each world's best constant): the room a policy that looks at the scene has.
That oracle picks on the runs it is scored on, so it is optimistic; the grid therefore runs a second time with other
noise seeds, and ``oracle_heldout_nav_metric`` scores each world's first-run choice (and the best constant) there.
Episodes follow the BARN protocol: success within 1 m of the goal, any contact fails, 100 s timeout. Every episode
of every setting runs in one ``BatchSim`` of ``--batch`` slots; a finished slot takes the next episode, as a VecEnv
would. Episode (world w, run r) has the same noise seed for every setting.

Reported per setting: success / collision / timeout rates, mean time of the successful runs (s), mean BARN navigation
metric with its 95 % interval (t interval over per-world means), and simulated env-steps/s (CPU time of the run).

``--planners teb mppi ddp`` adds each of those planners' defaults (key ``planner_defaults``: the same figures per
planner, same worlds and seeds; no published Gazebo figures exist for them).

Prints one JSON line. Usage::

    python benchmarks/fidelity_barn.py --barn-dir /path/to/worlds/BARN [--runs 10] [--constant-grid] [--worlds test]
        [--planners teb mppi ddp] [--settings default]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from envs.planners.params import DWA_PARAMS, PARAMS, ParamTable
from envs.sim import COLLISION, RUNNING, SUCCESS, BatchSim
from envs.worlds import SPLITS, load_barn_world, nav_metric

TIMEOUT = 100.0
"""BARN episode limit (s)."""
PUBLISHED = {"success": 0.88, "collision": 0.048, "timeout": 0.072, "time": 33.47, "nav_metric": 0.1693}
"""The BARN challenge README's default-DWA figures in Gazebo (50 test worlds x 10 runs)."""
SATURATED = {"max_vel_x": 2.0, "max_vel_theta": 3.14, "vx_samples": 4, "vtheta_samples": 40, "inflation_radius": 0.1}
"""Every parameter at the bound an actor saturated by the speed reward picks."""
SETTINGS: dict[str, dict[str, float]] = {
    "default": {},
    **{f"max_vel_x={v}": {"max_vel_x": v} for v in (0.2, 0.5, 1.0, 1.5, 2.0)},
    **{f"inflation_radius={r}": {"inflation_radius": r} for r in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)},
    "saturated": SATURATED,
}
GRID = {"max_vel_x": (0.5, 1.0, 1.5, 2.0), "max_vel_theta": (1.57, 3.14), "inflation_radius": (0.1, 0.3, 0.6)}
"""The 24-constant grid: every combination of these values, the other parameters at their defaults."""


def grid_settings() -> dict[str, dict[str, float]]:
    """The constants of ``GRID`` by name (``"max_vel_x=0.5,max_vel_theta=1.57,inflation_radius=0.1"``, ...)."""
    combos = (dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values()))
    return {",".join(f"{k}={v}" for k, v in c.items()): c for c in combos}


def run_episodes(
    worlds: dict,
    settings: dict[str, dict[str, float]],
    runs: int,
    batch: int,
    noise: bool,
    seed: int,
    table: ParamTable = DWA_PARAMS,
) -> tuple[list[tuple[str, int, int, float]], float, int]:
    """Every (setting, world, run) episode of ``table``'s planner; ``[(setting, world id, status, time)]``, CPU
    seconds and env steps."""
    params = {}
    for name, overrides in settings.items():
        params[name] = table.default.copy()
        for key, value in overrides.items():
            params[name][table.index(key)] = value
    episodes = [(s, w, r) for s in settings for r in range(runs) for w in worlds]
    sim = BatchSim(min(batch, len(episodes)), planner=table.planner.lower(), noise=noise)
    slot: list[tuple[str, int, int] | None] = [None] * sim.n
    params_now = np.tile(table.default, (sim.n, 1))
    queue = iter(episodes)
    results: list[tuple[str, int, int, float]] = []

    def start(i: int) -> None:
        slot[i] = next(queue, None)
        if slot[i] is not None:
            name, world, run = slot[i]
            sim.reset(i, worlds[world], seed=seed * 1_000_000 + world * 1_000 + run)
            params_now[i] = params[name]

    for i in range(sim.n):
        start(i)
    steps, cpu = 0, time.process_time()
    while any(e is not None for e in slot):
        active = np.array([e is not None for e in slot])
        steps += int((active & (sim.status == RUNNING)).sum())
        sim.step(params_now)
        for i in np.flatnonzero(active & ((sim.status != RUNNING) | (sim.time >= TIMEOUT - 1e-3))):
            results.append((slot[i][0], slot[i][1], int(sim.status[i]), float(sim.time[i])))
            start(i)
    return results, time.process_time() - cpu, steps


def interval95(per_world: np.ndarray) -> list[float]:
    """95 % t interval of the mean of per-world values ``[W]``."""
    half = stats.t.ppf(0.975, len(per_world) - 1) * per_world.std(ddof=1) / np.sqrt(len(per_world))
    return [round(float(per_world.mean() - half), 4), round(float(per_world.mean() + half), 4)]


def summarise(results: list[tuple[str, int, int, float]], worlds: dict) -> dict[str, dict]:
    """Per setting: the rates, times and metric described in the module docstring, and ``per_world`` metric means."""
    out = {}
    for name in dict.fromkeys(r[0] for r in results):
        world_id, status, t = (np.array(v) for v in zip(*(r[1:] for r in results if r[0] == name), strict=True))
        success = status == SUCCESS
        metric = nav_metric(success, t, np.array([worlds[w].optimal_time for w in world_id]))
        ids = sorted(worlds)
        per_world = np.array([metric[world_id == w].mean() for w in ids])
        out[name] = {
            "episodes": len(status),
            "success": round(float(success.mean()), 4),
            "collision": round(float((status == COLLISION).mean()), 4),
            "timeout": round(float((status == RUNNING).mean()), 4),
            "time_success": round(float(t[success].mean()), 2) if success.any() else None,
            "nav_metric": round(float(metric.mean()), 4),
            "nav_metric_95": interval95(per_world),
            "per_world": per_world,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barn-dir", type=Path, required=True, help="the worlds/BARN folder of a BARN checkout")
    parser.add_argument("--worlds", choices=["test", "train"], default="test", help="BARN split (test: the 50)")
    parser.add_argument("--runs", type=int, default=10, help="runs per world (BARN: 10)")
    parser.add_argument("--batch", type=int, default=200, help="robots stepped together")
    parser.add_argument("--seed", type=int, default=0, help="base of the per-episode noise seeds")
    parser.add_argument("--no-noise", action="store_true", help="deterministic runs (every run of a world equal)")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--constant-grid", action="store_true", help="also run the 24-constant grid")
    parser.add_argument("--grid-runs", type=int, default=2, help="runs per world of each grid constant")
    parser.add_argument("--planners", nargs="*", default=[], choices=[p for p in PARAMS if p != "dwa"],
                        help="also run these planners' defaults")  # fmt: skip
    args = parser.parse_args()
    worlds = {i: load_barn_world(args.barn_dir, i) for i in SPLITS[args.worlds]}
    noise = not args.no_noise
    results, cpu, steps = run_episodes(
        worlds, {s: SETTINGS[s] for s in args.settings}, args.runs, args.batch, noise, args.seed
    )
    report = summarise(results, worlds)
    if args.constant_grid:
        # The grid runs twice with disjoint noise seeds: choices made on the first runs are scored on the second.
        grid, heldout = {}, {}
        for table, seed in ((grid, args.seed), (heldout, args.seed + 1)):
            grid_results, grid_cpu, grid_steps = run_episodes(
                worlds, grid_settings(), args.grid_runs, args.batch, noise, seed
            )
            cpu, steps = cpu + grid_cpu, steps + grid_steps
            table.update(summarise(grid_results, worlds))
        best = max(grid, key=lambda name: grid[name]["nav_metric"])
        per_world = np.array([g["per_world"] for g in grid.values()])  # [settings, worlds]
        choice = per_world.argmax(axis=0)  # each world's best constant on the first runs
        oracle_heldout = np.array([h["per_world"] for h in heldout.values()])[choice, np.arange(len(worlds))]
        report["constant_grid"] = {
            "runs": args.grid_runs,
            "best": best,
            "best_nav_metric": grid[best]["nav_metric"],
            "best_nav_metric_95": grid[best]["nav_metric_95"],
            "best_heldout_nav_metric": heldout[best]["nav_metric"],
            "best_heldout_nav_metric_95": heldout[best]["nav_metric_95"],
            "oracle_nav_metric": round(float(per_world.max(axis=0).mean()), 4),
            "oracle_heldout_nav_metric": round(float(oracle_heldout.mean()), 4),
            "oracle_heldout_nav_metric_95": interval95(oracle_heldout),
            "all": {name: g["nav_metric"] for name, g in grid.items()},
        }
    if args.planners:
        report["planner_defaults"] = {}
        for planner in args.planners:
            planner_results, planner_cpu, planner_steps = run_episodes(
                worlds, {"default": {}}, args.runs, args.batch, noise, args.seed, PARAMS[planner]
            )
            summary = summarise(planner_results, worlds)["default"]
            summary["env_steps_per_s_cpu"] = round(planner_steps / planner_cpu, 1)
            report["planner_defaults"][planner] = summary
    for summary in [*report.values(), *report.get("planner_defaults", {}).values()]:
        summary.pop("per_world", None)
    print(
        json.dumps(
            {
                "worlds": args.worlds,
                "runs": args.runs,
                "noise": noise,
                "env_steps_per_s_cpu": round(steps / cpu, 1),
                "published_default": PUBLISHED,
                **report,
            }
        )
    )


if __name__ == "__main__":
    main()
