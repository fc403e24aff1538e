"""Env throughput through the public interfaces: ``BarnNav-v0`` (one env) vs the batched VecEnvs, per local planner.

Default planner parameters on the 50 test worlds (real BARN worlds with ``--barn-dir``, else generated ones), 0.5 s
of simulated time per step (DWA at 20 Hz, the TEB / MPPI / DDP optimisers at 10 Hz inside), finished episodes reset
automatically. Measured one after the other in the same run, with the DWA: the single env, ``BarnNavVecEnv(n_envs)``
in one process, and ``BarnNavSubprocVecEnv`` with ``n_envs`` episodes in each of ``--workers`` processes (one per
core); then the same subprocess VecEnv for every planner of ``--planners``. Prints one JSON line:
``single_steps_per_s``, ``vec_one_process_steps_per_s``, ``vec_steps_per_s`` (the DWA's worker processes),
``vec_steps_per_s_<planner>`` for each planner, simulated seconds per wall second, and the ratio to one real-time
Gazebo instance (2 steps/s at 0.5 s per step).

    python benchmarks/bench_env.py [--barn-dir PATH/worlds/BARN] [--n-envs 64] [--workers 2] [--seconds 20]
        [--planners dwa teb mppi ddp]
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

import envs
from envs.planners import PARAMS

GAZEBO_STEPS_PER_S = 2.0
"""One Gazebo instance runs about real time: 2 env steps/s at 0.5 s per step."""


def single_rate(barn_dir: str | None, seconds: float) -> float:
    env = gym.make("BarnNav-v0", barn_dir=barn_dir, worlds="test")
    env.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(env.unwrapped.default_params)
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vec_rate(venv: VecEnv, seconds: float, planner: str = "dwa") -> float:
    n_envs = venv.num_envs
    venv.seed(0)
    venv.reset()
    actions = np.tile(PARAMS[planner].default, (n_envs, 1))
    for _ in range(3):  # warm-up: world maps are built once per world
        venv.step(actions)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(actions)
        steps += n_envs
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--barn-dir", default=None)
    parser.add_argument("--n-envs", type=int, default=64, help="episodes per process")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the subprocess VecEnv")
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement time per configuration")
    parser.add_argument("--planners", nargs="+", default=list(PARAMS), choices=list(PARAMS))
    args = parser.parse_args()
    single = single_rate(args.barn_dir, args.seconds)
    kwargs = dict(barn_dir=args.barn_dir, worlds="test")
    one_process = vec_rate(envs.BarnNavVecEnv(args.n_envs, **kwargs), args.seconds)
    n_total = args.n_envs * args.workers
    per_planner = {
        planner: vec_rate(
            envs.BarnNavSubprocVecEnv(n_total, n_workers=args.workers, planner=planner, **kwargs), args.seconds, planner
        )
        for planner in dict.fromkeys(["dwa", *args.planners])
    }
    vec = per_planner["dwa"]
    print(
        json.dumps(
            {
                "single_steps_per_s": round(single, 1),
                "vec_one_process_steps_per_s": round(one_process, 1),
                "vec_steps_per_s": round(vec, 1),
                **{f"vec_steps_per_s_{planner}": round(rate, 1) for planner, rate in per_planner.items()},
                "n_envs": n_total,
                "workers": args.workers,
                "single_sim_seconds_per_wall_second": round(0.5 * single, 1),
                "vec_sim_seconds_per_wall_second": round(0.5 * vec, 1),
                "vec_vs_one_gazebo": round(vec / GAZEBO_STEPS_PER_S, 1),
                "worlds": "BARN test worlds" if args.barn_dir else "generated test worlds",
            }
        )
    )


if __name__ == "__main__":
    main()
