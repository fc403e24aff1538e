"""BatchSim throughput: env-steps/s (0.5 s simulated each, DWA at 20 Hz inside) with default DWA on BARN worlds.

Counts only steps of running robots; a robot that finishes (success, collision, or 100 s) is reset at once to the
next test world, as a VecEnv would, so all stay busy. Measured in blocks of ``--steps`` steps after a warm-up; both
process CPU time (steadier on a shared machine) and wall time are reported, best and median block, and the CPU rate
over all blocks. The numbers move with the machine's load (a shared VM can slow 2-3x): ``reference_add_us``, the
time of one plain numpy add of the DWA's array size, tells how fast the machine was.

Prints one JSON line. Usage::

    python benchmarks/sim_speed.py --barn-dir /path/to/worlds/BARN [--robots 64 1] [--blocks 6] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from envs.planners.params import DWA_PARAMS
from envs.sim import RUNNING, BatchSim
from envs.worlds import TEST_IDS, load_barn_world


def measure(barn_dir: Path, n: int, blocks: int, steps: int) -> dict[str, float]:
    """Env-steps/s over ``blocks`` blocks of ``steps`` steps of ``n`` robots (overall, best and median block)."""
    worlds = [load_barn_world(barn_dir, i) for i in TEST_IDS]
    sim = BatchSim(n)
    episode = 0

    def restart(i: int) -> None:
        nonlocal episode
        sim.reset(i, worlds[episode % len(worlds)], seed=episode)
        episode += 1

    for i in range(n):
        restart(i)
    params = np.tile(DWA_PARAMS.default, (n, 1))
    cpu, wall, total = [], [], [0, 0.0]
    for block in range(blocks + 1):
        count, c0, w0 = 0, time.process_time(), time.perf_counter()
        for _ in range(steps):
            count += int((sim.status == RUNNING).sum())
            sim.step(params)
            for i in np.flatnonzero((sim.status != RUNNING) | (sim.time >= 100.0)):
                restart(i)
        if block:  # the first block warms up
            cpu.append(count / (time.process_time() - c0))
            wall.append(count / (time.perf_counter() - w0))
            total[0] += count
            total[1] += time.process_time() - c0
    return {
        "cpu_overall": round(total[0] / total[1]),
        "cpu_best": round(max(cpu)),
        "cpu_median": round(float(np.median(cpu))),
        "wall_best": round(max(wall)),
        "wall_median": round(float(np.median(wall))),
    }


def machine_reference() -> float:
    """Microseconds of one float32 add of 76,800 elements (the DWA's array size): how fast the machine is now."""
    x = np.ones((10, 7680), dtype=np.float32)
    best = np.inf
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(200):
            x + 1.0
        best = min(best, (time.process_time() - t0) / 200 * 1e6)
    return round(best, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barn-dir", type=Path, required=True, help="the worlds/BARN folder of a BARN checkout")
    parser.add_argument("--robots", type=int, nargs="+", default=[64, 1], help="batch sizes to measure")
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    args = parser.parse_args()
    report = {f"n{n}": measure(args.barn_dir, n, args.blocks, args.steps) for n in args.robots}
    print(json.dumps({"env_steps_per_s": report, "reference_add_us": machine_reference()}))


if __name__ == "__main__":
    main()
