"""Learner speed, side by side in one process: stock SB3 TD3 vs FastTD3 at the APPLR zoo settings (updates/s), the
cached VLM update at the VLM zoo settings, and end-to-end APPLR training (env steps/s, where the wall time goes).

Updates: every variant trains on its own copy of the same seeded replay data; calls of ``train(gradient_steps)``
(the zoo file's gradient steps) alternate between variants round by round, so load bursts of a shared machine hit all
of them alike; rates are from the median call. Variants: ``sb3`` (stock TD3), ``sb3_fused_adam`` (stock TD3,
``optimizer_kwargs=dict(fused=True)``), ``ours`` (FastTD3, ``MlpPolicy``: what ``sb3-vlm train`` runs), ``ours_batched``
(FastTD3, ``BatchedMlpPolicy``), ``ours_bf16`` (the latter with opt-in bf16 autocast). VLM: VLMTD3 with the tiny
backbone and the zoo file's feature cache, warmed up (each distinct image missed once), interleaved with ``ours``.

End to end: the APPLR zoo file as ``sb3-vlm train`` runs it (FastTD3, 16 envs, the zoo callbacks, test-world
evaluations, checkpoints with the replay buffer every 1,000 steps, to time their writes) for ``--e2e-seconds``; time
is attributed to the update, the simulator, VecMonitor, replay writes, action selection, each callback, checkpoints
and evaluations. The 500k projection uses the steady-state rate after ``learning_starts`` plus 5 evaluations
(``EVALS_PER_RUN``) timed here and the checkpoints ``sb3-vlm train`` writes by default (one per 5 % of the budget),
whose replay files grow to the 200k buffer, at the write speed measured here.

Prints one JSON line. Usage::

    python benchmarks/bench_learner.py [--quick] [--barn-dir /path/to/BARN] [--threads 1] [--e2e-seconds 60] \
        [--e2e-also 2x2]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import TD3
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import CostmapStandIn, fill_replay  # noqa: E402

from sb3_vlm import VLMTD3, FastTD3  # noqa: E402
from sb3_vlm.zoo import ZooConfig, default_conf, load_zoo_config  # noqa: E402

BUDGET = 500_000
"""Environment steps of the projected APPLR run (APPLR's published 500k-sample point)."""


class LaserStandIn(gym.Env):
    """The spaces of BarnNav-v0 (721-d laser observation, 7 normalised DWA parameters), random content."""

    observation_space = spaces.Box(-1.0, 1.0, (721,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def timed_calls(calls: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating round by round."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def applr_models(cfg: ZooConfig, rows: int, seed: int) -> dict[str, Any]:
    """The update variants at the APPLR zoo settings, each with the same ``rows`` x n_envs seeded transitions."""
    kwargs = {k: v for k, v in cfg.algo_kwargs.items() if k != "policy"}
    kwargs.update(buffer_size=rows * cfg.n_envs, learning_starts=0, seed=seed)
    fused = {**kwargs["policy_kwargs"], "optimizer_kwargs": {"fused": True}}
    builders = {
        "sb3": lambda env: TD3("MlpPolicy", env, **kwargs),
        "sb3_fused_adam": lambda env: TD3("MlpPolicy", env, **{**kwargs, "policy_kwargs": fused}),
        "ours": lambda env: FastTD3("MlpPolicy", env, **kwargs),
        "ours_batched": lambda env: FastTD3("BatchedMlpPolicy", env, **kwargs),
        "ours_bf16": lambda env: FastTD3("BatchedMlpPolicy", env, bf16=True, **kwargs),
    }
    models = {}
    for name, build in builders.items():
        model = build(DummyVecEnv([LaserStandIn] * cfg.n_envs))
        model.set_logger(configure(None, []))
        rng = np.random.default_rng(seed)
        for t in range(rows):
            obs, next_obs = (rng.uniform(-1, 1, (cfg.n_envs, 721)).astype(np.float32) for _ in range(2))
            actions = rng.uniform(-1, 1, (cfg.n_envs, 7)).astype(np.float32)
            dones = np.full(cfg.n_envs, (t + 1) % 100 == 0)
            model.replay_buffer.add(obs, next_obs, actions, rng.normal(size=cfg.n_envs), dones, [{}] * cfg.n_envs)
        models[name] = model
    return models


def vlm_model(transitions: int, seed: int, bf16: bool, **policy_kwargs: Any) -> VLMTD3:
    """VLMTD3 at the VLM zoo settings (tiny backbone, DPT head frozen, feature cache; ``policy_kwargs`` override
    them) on ``transitions`` seeded costmap transitions, warmed up until each distinct image has passed the backbone."""
    cfg = load_zoo_config(default_conf("vlm"))
    kwargs = {k: v for k, v in cfg.algo_kwargs.items() if k != "policy"}
    kwargs.update(buffer_size=transitions, learning_starts=0, seed=seed, bf16=bf16)
    kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **policy_kwargs}
    model = VLMTD3(cfg.algo_kwargs["policy"], CostmapStandIn(), **kwargs)
    model.set_logger(configure(None, []))
    fill_replay(model, transitions, seed)
    model.train(math.ceil(5 * (transitions + 1) / (2 * model.batch_size)), model.batch_size)
    return model


def update_rates(args: argparse.Namespace) -> dict[str, Any]:
    """Updates/s of every variant and the VLM/MLP step-time ratio, measured interleaved."""
    cfg = load_zoo_config(default_conf("applr"))
    steps, batch = cfg.algo_kwargs["gradient_steps"], cfg.algo_kwargs["batch_size"]
    models = applr_models(cfg, rows=10 if args.quick else 300, seed=args.seed)
    calls = {name: functools.partial(m.train, steps, batch) for name, m in models.items()}
    rounds = 2 if args.quick else args.rounds
    seconds = timed_calls(calls, rounds)
    out: dict[str, Any] = {f"{name}_updates_per_s": steps / s for name, s in seconds.items()}
    for name in ("ours", "ours_batched", "ours_bf16"):
        out[f"update_speedup{name[4:]}"] = seconds["sb3"] / seconds[name]

    # Torch threads: on a 2-core machine shared with other processes, threads that wait for a busy core cost more
    # than they bring; the same update with 1 and with 2 threads, interleaved.
    threads = th.get_num_threads()
    by_threads = {}
    for n in (1, 2):
        th.set_num_threads(n)
        by_threads[str(n)] = steps / timed_calls({"ours": calls["ours"]}, max(rounds // 3, 2))["ours"]
    th.set_num_threads(threads)
    out["ours_updates_per_s_by_threads"] = by_threads

    # The VLM step (2 gradient steps per call: a critic-only and a critic + actor step) beside ours' MLP step.
    transitions = 16 if args.quick else 256
    # The shipped VLM zoo file freezes the DPT head (the cache holds pooled features); ``vlm_dpt_trained`` is the
    # same step with the DPT head training on cached hidden states (the zoo default before; FTRL's GPU setting).
    vlm = {
        "vlm": vlm_model(transitions, args.seed, bf16=False),
        "vlm_bf16": vlm_model(transitions, args.seed, True),
        "vlm_dpt_trained": vlm_model(transitions, args.seed, bf16=False, freeze_dpt=False),
    }
    mlp = {"ours": models["ours"], "ours_bf16": models["ours_bf16"]}
    calls = {name: functools.partial(m.train, 2, m.batch_size) for name, m in {**vlm, **mlp}.items()}
    seconds = timed_calls(calls, rounds)
    out["vlm_cached_updates_per_s"] = 2 / seconds["vlm"]
    out["vlm_cached_bf16_updates_per_s"] = 2 / seconds["vlm_bf16"]
    out["vlm_dpt_trained_cached_updates_per_s"] = 2 / seconds["vlm_dpt_trained"]
    out["vlm_over_mlp_step_ratio"] = seconds["vlm"] / seconds["ours"]
    out["vlm_dpt_trained_over_mlp_step_ratio"] = seconds["vlm_dpt_trained"] / seconds["ours"]
    out["vlm_over_sb3_mlp_step_ratio"] = out["sb3_updates_per_s"] / out["vlm_cached_updates_per_s"]
    out["vlm_over_mlp_step_ratio_bf16"] = seconds["vlm_bf16"] / seconds["ours_bf16"]
    out["vlm_batch_size"], out["applr_batch_size"] = vlm["vlm"].batch_size, batch
    out.update(gemm_floor(models["ours"], steps, batch, out["sb3_updates_per_s"]))
    return out


def gemm_floor(model: FastTD3, steps: int, batch: int, sb3_updates_per_s: float) -> dict[str, float]:
    """What the matrix products alone allow: the update's matmul FLOPs (torch's ``FlopCounterMode``, forward and
    backward) over this CPU's measured GEMM rate at the first layer's shape, in fp32 and bf16. Everything else an
    update does (Adam, activations, autograd, sampling) comes on top, and the backward products and thin layers run
    below the first layer's rate, so ``fp32_gemm_floor_speedup`` is an optimistic bound on what any fp32 update can
    gain over stock TD3 here."""
    with FlopCounterMode(display=False) as counter:
        model.train(steps, batch)
    flop = counter.get_total_flops() / steps
    n_in = model.observation_space.shape[0] + model.action_space.shape[0]
    rates = {}
    for name, dtype in (("fp32", th.float32), ("bf16", th.bfloat16)):
        x, w = th.randn(batch, n_in, dtype=dtype), th.randn(n_in, 512, dtype=dtype)
        seconds = timed_calls({"gemm": lambda x=x, w=w: [x @ w for _ in range(20)]}, 15)["gemm"] / 20
        rates[name] = 2 * batch * n_in * 512 / seconds
    return {
        "update_gflop": flop / 1e9,
        "fp32_gemm_gflops": rates["fp32"] / 1e9,
        "bf16_gemm_gflops": rates["bf16"] / 1e9,
        "fp32_gemm_floor_updates_per_s": rates["fp32"] / flop,
        "fp32_gemm_floor_speedup": rates["fp32"] / flop / sb3_updates_per_s,
        "bf16_gemm_floor_speedup": rates["bf16"] / flop / sb3_updates_per_s,
    }


class Stopwatch:
    """Seconds spent per named part; :meth:`wrap` times methods of an object through a subclass of its type (its
    ``__dict__``, e.g. what SB3 saves of a model, stays as it was)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, obj: Any, **names: str) -> None:
        """Time ``obj.<method>`` as part ``name`` for each ``method=name``."""

        def timed(inner: Callable[..., Any], name: str) -> Callable[..., Any]:
            @functools.wraps(inner)
            def call(*a: Any, **k: Any) -> Any:
                start = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    self.seconds[name] += time.perf_counter() - start

            return call

        cls = type(obj)
        obj.__class__ = type(f"Timed{cls.__name__}", (cls,), {m: timed(getattr(cls, m), n) for m, n in names.items()})


class StopAfter(BaseCallback):
    """Ends ``learn`` after ``seconds`` of wall time, but not before the first update after ``mark_steps`` (the
    learning start); records the time and step count at ``mark_steps``."""

    def __init__(self, seconds: float, mark_steps: int):
        super().__init__()
        self.seconds, self.mark_steps = seconds, mark_steps
        self.start = self.mark_time = time.perf_counter()
        self.marked_at: int | None = None

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.marked_at is None and self.num_timesteps > self.mark_steps:
            self.marked_at, self.mark_time = self.num_timesteps, time.perf_counter()
        # Runs past ``seconds`` until the step after the mark, so that at least one update call is timed.
        return self.marked_at in (None, self.num_timesteps) or time.perf_counter() - self.start < self.seconds


def end_to_end(args: argparse.Namespace, env_workers: int = 1) -> dict[str, Any]:
    """The APPLR zoo file through ``sb3-vlm train``'s pieces (the simulator split over ``env_workers`` processes, as
    ``--env-workers``), with the wall time attributed (see module doc)."""
    from sb3_vlm.callbacks import NavMetricsCallback, SafeCheckpointCallback
    from sb3_vlm.callbacks.checkpoint import REPLAY_BUFFER
    from sb3_vlm.workflows.training import (
        EVALS_PER_RUN,
        TrainSettings,
        build_model,
        default_checkpoint_freq,
        make_vec_env,
        zoo_config,
    )

    settings = TrainSettings(policy="applr", barn_dir=args.barn_dir, seed=0)
    if args.quick:
        settings.n_envs, settings.hyperparams = 4, {"learning_starts": 64}
    _, cfg, env_kwargs = zoo_config(settings)
    env = make_vec_env(cfg.env_id, cfg.n_envs, seed=0, n_workers=env_workers, **env_kwargs)
    eval_env = make_vec_env(cfg.env_id, 2 if args.quick else 10, seed=10_000, **{**env_kwargs, "worlds": "test"})
    model = build_model(cfg, env, 0, None, 0)
    watch = Stopwatch()
    watch.wrap(model, train="update", _sample_action="action_selection")
    watch.wrap(model.replay_buffer, add="replay_writes")
    watch.wrap(env.venv, step_wait="simulator")
    watch.wrap(env, step_wait="simulator_and_vec_monitor")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        nav = NavMetricsCallback(eval_env, BUDGET // EVALS_PER_RUN, best_path=run_dir / "best", policy_dir=run_dir)
        checkpoints = SafeCheckpointCallback(run_dir / "checkpoints", save_freq=1000, save_replay_buffer=True)
        callbacks = [nav, checkpoints, *cfg.callbacks()]
        for cb in callbacks:
            name = f"callback:{type(cb).__name__}"
            watch.wrap(cb, on_step=name, on_rollout_end=name, on_training_end=name)
        saves: list[tuple[float, float, int, int]] = []  # (end time, seconds, bytes, replay bytes) per checkpoint
        save = checkpoints.save

        def timed_save(name: str, **state: Any) -> Path:
            start = time.perf_counter()
            path = save(name, **state)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            replay = (path / REPLAY_BUFFER).stat().st_size
            saves.append((time.perf_counter(), time.perf_counter() - start, size, replay))
            return path

        checkpoints.save = timed_save  # type: ignore[method-assign]
        stop = StopAfter(args.e2e_seconds, cfg.algo_kwargs.get("learning_starts", 100))
        start = time.perf_counter()
        model.learn(10**9, callback=CallbackList([stop, *callbacks]))
        end = time.perf_counter()
        start_eval = time.perf_counter()
        nav.evaluate()
        eval_seconds = time.perf_counter() - start_eval
    env.close()
    eval_env.close()

    wall, steps = end - start, model.num_timesteps
    parts = dict(watch.seconds)
    parts["vec_monitor"] = parts.pop("simulator_and_vec_monitor") - parts["simulator"]
    parts["checkpoints"] = sum(s for _, s, *_ in saves)
    callbacks_total = sum(v for k, v in parts.items() if k.startswith("callback:"))
    parts["callbacks_without_checkpoints"] = callbacks_total - parts["checkpoints"]
    for key in [k for k in parts if k.startswith("callback:")]:
        parts[key.replace("callback:", "of_which:")] = parts.pop(key)  # per callback, checkpoints included
    parts["other"] = wall - sum(v for k, v in parts.items() if not k.startswith("of_which:"))

    # 500k projection: steady-state steps (after learning_starts, checkpoints taken out) + checkpoints (the model, and
    # a replay file that grows with the buffer; cost proportional to bytes, at this run's speed) + the evaluations.
    marked = stop.marked_at if stop.marked_at is not None else steps
    late_saves = sum(s for t, s, *_ in saves if t > stop.mark_time)
    per_step = (end - stop.mark_time - late_saves) / max(steps - marked, 1)
    model_bytes, replay_per_transition = saves[-1][2] - saves[-1][3], saves[-1][3] / max(steps, 1)
    bytes_per_second = sum(b for _, _, b, _ in saves) / max(parts["checkpoints"], 1e-9)
    buffer = cfg.algo_kwargs["buffer_size"]
    freq = default_checkpoint_freq(BUDGET)  # what `sb3-vlm train` does; this run saves every 1,000 steps to time it
    n_saves = BUDGET // freq
    written = n_saves * model_bytes + sum(min(k * freq, buffer) for k in range(1, n_saves + 1)) * replay_per_transition
    projected = {
        "training": BUDGET * per_step,
        "checkpoints": written / bytes_per_second,
        "evaluations": EVALS_PER_RUN * eval_seconds,
    }
    evals_here = EVALS_PER_RUN * eval_seconds * steps / BUDGET  # this run's share of a run's evaluations
    return {
        "applr_env_steps_per_s": steps / wall,
        "applr_steady_env_steps_per_s": 1 / per_step,
        "applr_500k_minutes": sum(projected.values()) / 60,
        "applr_500k_projection_minutes": {k: v / 60 for k, v in projected.items()},
        "callbacks_and_evaluations_share": (callbacks_total + evals_here) / (wall + evals_here),
        "e2e_seconds": wall,
        "e2e_env_steps": steps,
        "e2e_seconds_by_part": parts,
        "e2e_share_by_part": {k: v / wall for k, v in parts.items()},
        "evaluation_seconds": eval_seconds,
        "checkpoints_written": len(saves),
        "checkpoint_model_bytes": model_bytes,
        "checkpoint_replay_bytes_per_transition": replay_per_transition,
        "checkpoint_write_mb_per_s": bytes_per_second / 2**20,
        "applr_500k_checkpoint_gb_written": written / 2**30,
        "worlds": "real BARN" if args.barn_dir else "generated",
    }


E2E_SUMMARY = ("applr_env_steps_per_s", "applr_steady_env_steps_per_s", "applr_500k_minutes", "e2e_share_by_part")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: tiny replay, 2 rounds, 4 envs, 1 s run")
    parser.add_argument("--barn-dir", type=Path, default=None, help="real BARN worlds (default: generated worlds)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of update calls")
    parser.add_argument("--e2e-seconds", type=float, default=60.0, help="wall time of the end-to-end run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--e2e-also",
        default="",
        help="more end-to-end configurations after the default one, as WORKERSxTHREADS (e.g. 2x2: the simulator in 2 "
        "processes, 2 torch threads); reported under e2e_by_config",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.e2e_seconds = min(args.e2e_seconds, 1.0)
    if args.threads:
        th.set_num_threads(args.threads)
    load_before = os.getloadavg()
    start = time.perf_counter()
    out: dict[str, Any] = update_rates(args)
    out.update(end_to_end(args))
    by_config = {f"1x{th.get_num_threads()}": {k: out[k] for k in E2E_SUMMARY}}
    for config in filter(None, args.e2e_also.split(",")):
        workers, threads = (int(v) for v in config.split("x"))
        default_threads = th.get_num_threads()
        th.set_num_threads(threads)
        by_config[config] = {k: v for k, v in end_to_end(args, workers).items() if k in E2E_SUMMARY}
        th.set_num_threads(default_threads)
    out["e2e_by_config"] = by_config
    out.update(
        threads=th.get_num_threads(),
        cpu=cpu_name(),
        load_before=list(load_before),
        load_after=list(os.getloadavg()),
        quick=args.quick,
        torch_version=th.__version__,
        wall_seconds=time.perf_counter() - start,
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
