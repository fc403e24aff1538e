"""Fidelity of the embedded simulator against the BARN challenge's published Gazebo figures for the default DWA.

Runs the 50 real BARN test worlds x ``--runs`` seeded runs with fixed DWA parameters: the defaults, and the extreme
settings that must visibly matter (``max_vel_x`` 0.2 and 2.0, ``inflation_radius`` 0.6). Episodes follow the BARN
protocol: success within 1 m of the goal, any collision fails, 100 s timeout. Robots run in one ``BatchSim`` of
``--batch`` slots; a finished slot takes the next episode, as a VecEnv would.

Reported per setting: success / collision / timeout rates, mean time of the successful runs (s), mean time of all
runs (failures count their time at the end), mean BARN navigation metric, and simulated env-steps/s (CPU time).

Prints one JSON line. Usage::

    python benchmarks/fidelity_barn.py --barn-dir /path/to/worlds/BARN [--runs 10] [--batch 100] [--no-noise]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from envs.planners.params import DWA_PARAMS
from envs.sim import COLLISION, RUNNING, SUCCESS, BatchSim
from envs.worlds import TEST_IDS, load_barn_world, nav_metric

TIMEOUT = 100.0
"""BARN episode limit (s)."""
PUBLISHED = {"success": 0.88, "collision": 0.048, "timeout": 0.072, "time": 33.47, "nav_metric": 0.1693}
"""The BARN challenge README's default-DWA figures in Gazebo (50 test worlds x 10 runs)."""
SETTINGS = {
    "default": {},
    "max_vel_x=0.2": {"max_vel_x": 0.2},
    "max_vel_x=2.0": {"max_vel_x": 2.0},
    "inflation_radius=0.6": {"inflation_radius": 0.6},
}


def run_setting(barn_dir: Path, overrides: dict[str, float], runs: int, batch: int, noise: bool, seed: int) -> dict:
    """All episodes of one parameter setting; the summary dict described in the module docstring."""
    params = DWA_PARAMS.default.copy()
    for name, value in overrides.items():
        params[DWA_PARAMS.index(name)] = value
    worlds = {i: load_barn_world(barn_dir, i) for i in TEST_IDS}
    episodes = [(w, r) for r in range(runs) for w in TEST_IDS]
    sim = BatchSim(min(batch, len(episodes)), noise=noise)
    slot_episode: list[tuple[int, int] | None] = [None] * sim.n
    results: list[tuple[int, int, float]] = []  # (world id, status, time)
    queue = iter(episodes)

    def start(i: int) -> None:
        nxt = next(queue, None)
        slot_episode[i] = nxt
        if nxt is not None:
            sim.reset(i, worlds[nxt[0]], seed=seed * 1_000_000 + nxt[0] * 1_000 + nxt[1])

    for i in range(sim.n):
        start(i)
    table = np.tile(params, (sim.n, 1))
    steps, cpu = 0, time.process_time()
    while any(e is not None for e in slot_episode):
        active = np.array([e is not None for e in slot_episode])
        steps += int((active & (sim.status == RUNNING)).sum())
        sim.step(table)
        for i in np.flatnonzero(active & ((sim.status != RUNNING) | (sim.time >= TIMEOUT - 1e-3))):
            results.append((slot_episode[i][0], int(sim.status[i]), float(sim.time[i])))
            start(i)
    cpu = time.process_time() - cpu
    world_id, status, t = (np.array(v) for v in zip(*results, strict=True))
    success = status == SUCCESS
    optimal = np.array([worlds[w].optimal_time for w in world_id])
    return {
        "episodes": len(results),
        "success": round(float(success.mean()), 4),
        "collision": round(float((status == COLLISION).mean()), 4),
        "timeout": round(float((status == RUNNING).mean()), 4),
        "time_success": round(float(t[success].mean()), 2) if success.any() else None,
        "time_all": round(float(t.mean()), 2),
        "nav_metric": round(float(nav_metric(success, t, optimal).mean()), 4),
        "env_steps_per_s_cpu": round(steps / cpu, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barn-dir", type=Path, required=True, help="the worlds/BARN folder of a BARN checkout")
    parser.add_argument("--runs", type=int, default=10, help="runs per world (BARN: 10)")
    parser.add_argument("--batch", type=int, default=100, help="robots stepped together")
    parser.add_argument("--seed", type=int, default=0, help="base of the per-episode noise seeds")
    parser.add_argument("--no-noise", action="store_true", help="deterministic runs (every run of a world equal)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    report = {
        name: run_setting(args.barn_dir, SETTINGS[name], args.runs, args.batch, not args.no_noise, args.seed)
        for name in args.settings
    }
    print(json.dumps({"runs": args.runs, "noise": not args.no_noise, "published_default": PUBLISHED, **report}))


if __name__ == "__main__":
    main()
