"""Generated worlds against the published ones: field density, reference path length and default-DWA success.

The world statistics cover all 300 worlds of each source; the DWA runs cover the 50 test worlds x ``--runs`` seeded
runs of each source, side by side in one run of the same simulator (``BarnNavVecEnv``, BARN's 100 s limit, same
seeds), so the comparison holds whatever the simulator's dynamics are. Without ``--barn-dir`` only the generated
worlds are measured. Prints one JSON line. Usage::

    python benchmarks/generated_worlds.py [--barn-dir /path/to/worlds/BARN] [--runs 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from envs import BarnNavVecEnv
from envs.planners import DWA_PARAMS
from envs.worlds import N_WORLDS, TEST_IDS, get_world


def world_stats(barn_dir: Path | None) -> dict[str, float]:
    """Mean and standard deviation of field density and reference path length (m) over the 300 worlds."""
    worlds = [get_world(i, barn_dir) for i in range(N_WORLDS)]
    density = np.array([w.field_density for w in worlds])
    length = np.array([w.path_length for w in worlds])
    return {
        "density": round(float(density.mean()), 4),
        "density_std": round(float(density.std()), 4),
        "path_length": round(float(length.mean()), 3),
        "path_length_std": round(float(length.std()), 3),
    }


def default_dwa(barn_dir: Path | None, runs: int, seed: int) -> dict[str, float | int]:
    """Default DWA on the 50 test worlds x ``runs``: success, collision and timeout rates and successes per world."""
    world_ids = [w for _ in range(runs) for w in TEST_IDS]
    venv = BarnNavVecEnv(len(world_ids), barn_dir=barn_dir, worlds="test")
    venv.seed(seed)
    venv.set_options([{"world_id": w} for w in world_ids])
    venv.reset()
    status: list[str | None] = [None] * venv.num_envs
    actions = np.tile(DWA_PARAMS.default, (venv.num_envs, 1))
    while any(s is None for s in status):
        _, _, dones, infos = venv.step(actions)
        for i in np.flatnonzero(dones):
            status[i] = status[i] or infos[i]["status"]
    counts = Counter(status)
    per_world = Counter(w for w, s in zip(world_ids, status, strict=True) if s == "success")
    return {
        "episodes": len(status),
        "success": round(counts["success"] / len(status), 4),
        "collision": round(counts["collision"] / len(status), 4),
        "timeout": round(counts["timeout"] / len(status), 4),
        "worlds_always_failed": sum(per_world[w] == 0 for w in TEST_IDS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barn-dir", type=Path, help="the worlds/BARN folder of a BARN checkout")
    parser.add_argument("--runs", type=int, default=2, help="seeded runs per test world")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (the others follow)")
    args = parser.parse_args()
    sources = {"generated": None} if args.barn_dir is None else {"generated": None, "real": args.barn_dir}
    report = {
        name: {**world_stats(barn_dir), "default_dwa": default_dwa(barn_dir, args.runs, args.seed)}
        for name, barn_dir in sources.items()
    }
    print(json.dumps({"runs": args.runs, "seed": args.seed, **report}))


if __name__ == "__main__":
    main()
