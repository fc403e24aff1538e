"""``RayVecEnv`` vs ``BarnNavSubprocVecEnv`` on this machine, same total envs, and a scaling model to 250 actors.

Default DWA parameters on the generated test worlds, finished episodes reset automatically, as in
``bench_env.py``. Measured in the same run, in alternating windows (median over ``--rounds``), on a local Ray
instance with ``--actors`` CPUs:

* ``subproc_steps_per_s``: ``BarnNavSubprocVecEnv(n_envs, n_workers=actors)``;
* ``ray_steps_per_s``: ``RayVecEnv(n_envs, n_actors=actors)``, the same split of the same episodes;
* ``overhead_fraction = 1 - ray / subproc``: the share of throughput Ray's calls cost (the issue asks <= 0.25);
* ``ray_rpc_ms``: one ``step`` round trip through Ray with no-op environments (driver submit + actor call + get),
  with one actor and with all of them, so ``ray_driver_ms_per_actor`` = the cost the driver adds per actor
  (the no-op envs run in a ``DummyVecEnv``: its Python loop, microseconds per env, is counted as Ray's);
* ``scaling``: the model ``steps/s(N) = N * k / (t_sim(k) + t_rpc + N * t_driver)`` for N actors of k envs each,
  from the measured per-actor simulation time ``t_sim(k)`` and the two Ray costs above, up to 250 actors (APPLR's
  Condor fleet). A synchronous ``VecEnv`` waits for its slowest actor, so this is an upper bound on a real
  cluster (network latency adds to ``t_rpc``; the learner's policy forward for ``N * k`` observations is extra).

Prints one JSON line.

    python benchmarks/bench_distributed.py [--n-envs 64] [--actors 2] [--seconds 15] [--rounds 5] [--observation laser]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import gymnasium as gym
import numpy as np
import ray
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

import envs
from envs.planners import DWA_PARAMS
from sb3_vlm.distributed import RayVecEnv

MODEL_ACTORS = (2, 8, 32, 64, 128, 250)
"""Actor counts of the scaling model."""


class NoopEnv(gym.Env):
    """A 721-float observation and nothing else: what a step costs when the simulator costs nothing."""

    observation_space = spaces.Box(-1.0, 1.0, shape=(721,), dtype=np.float32)
    action_space = spaces.Box(DWA_PARAMS.low, DWA_PARAMS.high, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(721, dtype=np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(721, dtype=np.float32), 0.0, False, False, {}


def start(venv: VecEnv) -> np.ndarray:
    """Seed, reset and warm ``venv`` up (world maps are built once per world); the actions to step with."""
    venv.seed(0)
    venv.reset()
    actions = np.tile(DWA_PARAMS.default, (venv.num_envs, 1))
    for _ in range(3):
        venv.step(actions)
    return actions


def window(venv: VecEnv, actions: np.ndarray, seconds: float) -> float:
    """Env steps per second (all envs) of ``venv`` stepping ``actions`` for ``seconds``."""
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(actions)
        steps += venv.num_envs
    return steps / (time.perf_counter() - t0)


def interleaved(venvs: dict[str, VecEnv], seconds: float, rounds: int) -> dict[str, float]:
    """Median steps/s of each VecEnv over ``rounds`` alternating windows (``seconds`` each in all): on a machine
    shared with other work, alternating exposes every VecEnv to the same load."""
    actions = {name: start(venv) for name, venv in venvs.items()}
    rates: dict[str, list[float]] = {name: [] for name in venvs}
    for _ in range(rounds):
        for name, venv in venvs.items():
            rates[name].append(window(venv, actions[name], seconds / rounds))
    return {name: float(np.median(r)) for name, r in rates.items()}


def rpc_ms(n_actors: int, envs_per_actor: int, seconds: float) -> float:
    """Milliseconds per ``step`` of a ``RayVecEnv`` of no-op envs: Ray's round trip for ``n_actors`` actors."""
    fns = [NoopEnv] * (n_actors * envs_per_actor)
    venv = RayVecEnv(env_fns=fns, n_actors=n_actors)
    per_s = window(venv, start(venv), seconds)
    venv.close()
    return 1000.0 * len(fns) / per_s


def scaling_model(envs_per_actor: int, sim_ms: float, rpc_ms: float, driver_ms: float) -> dict[str, float]:
    """Predicted env steps/s for ``MODEL_ACTORS`` actors of ``envs_per_actor`` envs (see the module docstring)."""
    return {str(n): round(n * envs_per_actor / ((sim_ms + rpc_ms + n * driver_ms) / 1000.0), 1) for n in MODEL_ACTORS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=64, help="total envs (split over the actors/workers)")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors = worker processes = Ray CPUs")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement time per configuration")
    parser.add_argument("--rounds", type=int, default=5, help="alternating windows per configuration")
    parser.add_argument("--observation", default="laser", choices=("laser", "costmap"))
    args = parser.parse_args()
    kwargs = dict(worlds="test", observation=args.observation)
    k = args.n_envs // args.actors
    ray.init(num_cpus=args.actors, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    venvs = {
        "subproc": envs.BarnNavSubprocVecEnv(args.n_envs, n_workers=args.actors, **kwargs),
        "ray": RayVecEnv(args.n_envs, n_actors=args.actors, **kwargs),
        "one_actor_share": envs.BarnNavVecEnv(k, **kwargs),  # one actor's envs, no IPC: t_sim(k)
    }
    try:
        rates = interleaved(venvs, args.seconds, args.rounds)
        for venv in venvs.values():
            venv.close()
        rpc_one = rpc_ms(1, k, args.seconds / 4)
        rpc_all = rpc_ms(args.actors, k, args.seconds / 4)
    finally:
        ray.shutdown()
    subproc, ray_rate, one_process = rates["subproc"], rates["ray"], rates["one_actor_share"]
    sim_ms = 1000.0 * k / one_process
    driver_ms = max(0.0, (rpc_all - rpc_one) / max(1, args.actors - 1))
    print(
        json.dumps(
            {
                "ray_steps_per_s": round(ray_rate, 1),
                "subproc_steps_per_s": round(subproc, 1),
                "overhead_fraction": round(1.0 - ray_rate / subproc, 3),
                "actors": args.actors,
                "n_envs": args.n_envs,
                "envs_per_actor": k,
                "observation": args.observation,
                "sim_ms_per_actor_step": round(sim_ms, 2),
                "ray_rpc_ms": {"1": round(rpc_one, 2), str(args.actors): round(rpc_all, 2)},
                "ray_driver_ms_per_actor": round(driver_ms, 3),
                "scaling": scaling_model(k, sim_ms, rpc_one, driver_ms),
                "cpu_count": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
