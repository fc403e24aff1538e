"""TD3 gradient-step throughput, side by side: SB3's stock TD3 vs VLMTD3 without and with the feature cache.

Three configurations train on the same replay data (a seeded chain of costmap-sized uint8 images) with the tiny
Qwen2.5-VL backbone, the same extractor settings (frozen VLM, trainable DPT head) and the same batch:

* ``sb3``: ``stable_baselines3.TD3("CnnPolicy", features_extractor_class=VLMDPTExtractor)``, SB3's default of one
  extractor (and so one backbone) per network: actor, actor target, critic, critic target;
* ``ours``: ``VLMTD3("VLMPolicy")``, one shared backbone, run once on obs and once on next_obs per gradient step;
* ``ours_cached``: the same with ``feature_cache_bytes``; it first warms up with untimed gradient steps (each distinct
  image misses once), then is measured at steady state.

Each configuration runs in its own subprocess (this script re-invoking itself with ``--worker``), so peak RSS is its
own. Steps/s is from the median of blocks of 2 gradient steps (``*_steps_per_s_mean`` is the plain mean); torch uses
one thread by default, which keeps numbers steadier on a shared machine. Backbone passes are images through a
backbone forward (a pre-hook on every backbone) per replayed sample (gradient steps x batch). Checkpoint bytes are the
size of ``model.save()``'s zip.

Prints one JSON line. Usage::

    python benchmarks/bench_train.py [--batch-size 64] [--steps 10] [--transitions 256] [--cache-mib 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

try:
    from envs.render import DEFAULT_IMAGE_SIZE
except ImportError:  # the costmap renderer is optional here; its size is (56, 84)
    DEFAULT_IMAGE_SIZE = (56, 84)

CONFIGS = ("sb3", "ours", "ours_cached")
ACTION_DIM = 7  # the DWA parameters, normalised to [-1, 1]


class CostmapStandIn(gym.Env):
    """The spaces of the costmap navigation env (uint8 HWC image, 7 normalised planner parameters), random content.

    :param image_size: ``(H, W)`` of the image.
    """

    def __init__(self, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE):
        self.observation_space = spaces.Box(0, 255, (*image_size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def build_model(config: str, args: argparse.Namespace) -> Any:
    """The algorithm of ``config`` with an empty replay buffer of ``args.transitions`` entries."""
    from stable_baselines3 import TD3

    from sb3_vlm import VLMTD3, VLMDPTExtractor

    common = dict(batch_size=args.batch_size, buffer_size=args.transitions, learning_starts=0, seed=args.seed)
    if config == "sb3":
        extractor_kwargs = dict(backbone="tiny", freeze_vlm=True)
        policy_kwargs = dict(features_extractor_class=VLMDPTExtractor, features_extractor_kwargs=extractor_kwargs)
        return TD3("CnnPolicy", CostmapStandIn(), policy_kwargs=policy_kwargs, **common)
    policy_kwargs: dict[str, Any] = dict(backbone="tiny", freeze_vlm=True)
    if config == "ours_cached":
        policy_kwargs["feature_cache_bytes"] = args.cache_mib * 2**20
    return VLMTD3("VLMPolicy", CostmapStandIn(), policy_kwargs=policy_kwargs, **common)


def fill_replay(model: Any, transitions: int, seed: int) -> str:
    """
    Add a seeded chain of ``transitions`` steps (``transitions + 1`` distinct images; episodes of 50 steps end by
    truncation) to the model's replay buffer.

    :return: SHA-1 of the stored observations, to check that every configuration got the same data.
    """
    import hashlib

    rng = np.random.default_rng(seed)
    shape = model.observation_space.shape  # channel-first after SB3's VecTransposeImage
    frames = rng.integers(0, 256, (transitions + 1, 1, *shape), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (transitions, 1, ACTION_DIM)).astype(np.float32)
    rewards = rng.normal(size=(transitions, 1)).astype(np.float32)
    for t in range(transitions):
        end = (t + 1) % 50 == 0
        info = [{"TimeLimit.truncated": end}]
        model.replay_buffer.add(frames[t], frames[t + 1], actions[t], rewards[t], np.array([end]), info)
    return hashlib.sha1(model.replay_buffer.observations.tobytes()).hexdigest()


def backbones(model: Any) -> list[th.nn.Module]:
    from sb3_vlm.model.backbone import VLMBackbone

    return [m for m in model.policy.modules() if isinstance(m, VLMBackbone)]


def worker(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one configuration in this process."""
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed

    if args.threads:
        th.set_num_threads(args.threads)
    model = build_model(config, args)
    model.set_logger(configure(None, []))
    replay_sha1 = fill_replay(model, args.transitions, args.seed)
    unique_backbones = {id(m): m for m in backbones(model)}
    storages = {p.untyped_storage().data_ptr(): p for m in unique_backbones.values() for p in m.parameters()}

    images = [0]

    def count(module: th.nn.Module, inputs: tuple) -> None:
        images[0] += inputs[0].shape[0]

    handles = [m.register_forward_pre_hook(count) for m in unique_backbones.values()]
    set_random_seed(args.seed)
    result: dict[str, Any] = {"replay_sha1": replay_sha1}
    warmup = 2
    if config == "ours_cached":
        # Steady state: each distinct image has missed once; 5 expected lookups per image leave ~e^-5 unseen.
        warmup = max(warmup, math.ceil(5 * (args.transitions + 1) / (2 * args.batch_size)))
    start = time.perf_counter()
    model.train(gradient_steps=warmup, batch_size=args.batch_size)
    result["warmup_steps"] = warmup
    result["warmup_seconds"] = time.perf_counter() - start
    result["warmup_backbone_passes_per_sample"] = images[0] / (warmup * args.batch_size)

    images[0] = 0
    # Blocks of 2 steps (policy_delay 2: one critic-only and one critic+actor step); the median block is robust to
    # other processes' bursts on a shared machine, the mean is reported beside it.
    blocks = []
    for _ in range(args.steps // 2):
        start = time.perf_counter()
        model.train(gradient_steps=2, batch_size=args.batch_size)
        blocks.append(time.perf_counter() - start)
    for handle in handles:
        handle.remove()
    result["steps_per_s"] = 2 / float(np.median(blocks))
    result["steps_per_s_mean"] = args.steps / sum(blocks)
    result["backbone_passes_per_sample"] = images[0] / (args.steps * args.batch_size)
    result["backbone_passes_per_step"] = images[0] / args.steps
    result["backbone_copies"] = len(unique_backbones)
    result["backbone_param_bytes"] = sum(p.untyped_storage().nbytes() for p in storages.values())
    cache = model.policy.features_extractor.feature_cache if config != "sb3" else None
    if cache is not None:
        stats = cache.stats()
        result.update(
            cache_hit_rate=stats.hit_rate,
            cache_entries=stats.entries,
            cache_bytes=stats.bytes,
            cache_misses=stats.misses,
            cache_hits=stats.hits,
        )
    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "model.zip"))
        result["checkpoint_bytes"] = os.path.getsize(os.path.join(tmp, "model.zip"))
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result["torch_threads"] = th.get_num_threads()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every configuration in its own subprocess; merge their numbers into one flat dict."""
    start = time.perf_counter()
    forwarded = [
        f"--batch-size={args.batch_size}",
        f"--steps={args.steps}",
        f"--transitions={args.transitions}",
        f"--cache-mib={args.cache_mib}",
        f"--threads={args.threads}",
        f"--seed={args.seed}",
    ]
    results = {}
    for config in CONFIGS:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", config, *forwarded],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise RuntimeError(f"bench_train: worker {config!r} failed with exit code {proc.returncode}")
        results[config] = json.loads(proc.stdout.strip().splitlines()[-1])
    if len({r.pop("replay_sha1") for r in results.values()}) != 1:
        raise RuntimeError("bench_train: the configurations did not train on the same replay data")

    out: dict[str, Any] = {}
    for config, numbers in results.items():
        out.update({f"{config}_{k}": v for k, v in numbers.items()})
    sb3, ours, cached = (results[c] for c in CONFIGS)
    out.update(
        speedup_ours_vs_sb3=ours["steps_per_s"] / sb3["steps_per_s"],
        speedup_ours_cached_vs_sb3=cached["steps_per_s"] / sb3["steps_per_s"],
        criteria={
            "ours_cached_at_least_3x_sb3_steps_per_s": cached["steps_per_s"] >= 3 * sb3["steps_per_s"],
            "ours_passes_per_sample_at_most_2": ours["backbone_passes_per_sample"] <= 2,
            "ours_cached_steady_passes_per_sample_below_0.2": cached["backbone_passes_per_sample"] < 0.2,
            "ours_one_backbone_in_memory": ours["backbone_copies"] == cached["backbone_copies"] == 1,
        },
        batch_size=args.batch_size,
        gradient_steps=args.steps,
        transitions=args.transitions,
        distinct_images=args.transitions + 1,
        image_size=list(DEFAULT_IMAGE_SIZE),
        backbone="tiny",
        torch_version=th.__version__,
        wall_seconds=time.perf_counter() - start,
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="replay batch of every configuration")
    parser.add_argument("--steps", type=int, default=10, help="timed gradient steps (even: policy_delay is 2)")
    parser.add_argument("--transitions", type=int, default=256, help="replay transitions (distinct images - 1)")
    parser.add_argument("--cache-mib", type=int, default=256, help="feature cache budget of ours_cached, MiB")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (0: torch's default; 1: steadier if shared)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.steps % 2:
        parser.error(f"--steps must be a positive even number (policy_delay 2), got {args.steps}")
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
    else:
        print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
