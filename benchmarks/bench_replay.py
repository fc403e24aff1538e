"""Replay-buffer memory per stored transition for the costmap image observation, projected to 200k transitions.

SB3's buffers keep images as uint8 ``[3, H, W]`` (``H, W`` = ``envs.render.DEFAULT_IMAGE_SIZE``). Variants:

* ``image``: ``ReplayBuffer`` as VLMTD3 builds it by default (obs and next_obs stored, ``handle_timeout_termination``);
* ``image_optimized``: ``optimize_memory_usage=True`` (next_obs is the following slot; needs
  ``handle_timeout_termination=False``);
* ``dict_image_velocity``: ``DictReplayBuffer`` for ``{"image", "velocity"}`` (SB3 has no memory optimisation for
  Dict observations).

Per variant: ``bytes_per_transition`` from the buffer's arrays (exact), ``measured_bytes_per_transition`` from the
resident-memory growth while filling ``--measure`` transitions, and the projection for 200,000 transitions (FTRL's
buffer size). The top-level ``bytes_per_transition`` / ``projected_gib_200k`` are the default ``image`` variant.
The feature cache (``feature_cache_bytes``) comes on top; its bytes per distinct image with the tiny backbone are
measured too.

Prints one JSON line. Usage::

    python benchmarks/bench_replay.py [--measure 4000]
"""

from __future__ import annotations

import argparse
import gc
import json
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

try:
    from envs.render import DEFAULT_IMAGE_SIZE
except ImportError:  # the costmap renderer is optional here; its size is (56, 84)
    DEFAULT_IMAGE_SIZE = (56, 84)

TRANSITIONS = 200_000
GOAL_GIB = 8.0
GIB = 2**30
ACTION = spaces.Box(-1.0, 1.0, (7,), np.float32)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("bench_replay: VmRSS not found in /proc/self/status")


def array_bytes(buffer: ReplayBuffer | DictReplayBuffer) -> int:
    """Bytes of every numpy array the buffer holds (Dict observations included)."""
    total = 0
    for value in vars(buffer).values():
        arrays = value.values() if isinstance(value, dict) else [value]
        total += sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))
    return total


def measure(name: str, make: Any, sample: Any, n: int) -> dict[str, Any]:
    """Accounted and measured bytes per transition of one buffer variant."""
    gc.collect()
    before = rss_bytes()
    buffer = make(n)
    rng = np.random.default_rng(0)
    obs = sample(rng)
    for _ in range(n):
        next_obs = sample(rng)
        action = rng.uniform(-1, 1, (1, 7)).astype(np.float32)
        buffer.add(obs, next_obs, action, np.zeros(1, np.float32), np.array([False]), [{}])
        obs = next_obs
    measured = (rss_bytes() - before) / n
    accounted = array_bytes(buffer) / buffer.buffer_size
    del buffer
    gc.collect()
    return {
        "variant": name,
        "bytes_per_transition": accounted,
        "measured_bytes_per_transition": round(measured, 1),
        "projected_gib_200k": accounted * TRANSITIONS / GIB,
    }


def cache_bytes_per_image() -> dict[str, int]:
    """Feature-cache bytes per distinct image (payload + bookkeeping) with the tiny backbone, per cache mode."""
    from sb3_vlm import VLMDPTExtractor

    space = spaces.Box(0, 255, (3, *DEFAULT_IMAGE_SIZE), np.uint8)
    image = th.as_tensor(space.sample()[None])
    sizes = {}
    for name, kwargs in (
        ("hidden_float32", dict()),
        ("hidden_float16", dict(feature_cache_dtype="float16")),
        ("features", dict(freeze_dpt=True)),
    ):
        extractor = VLMDPTExtractor(space, feature_cache_bytes=2**24, **kwargs)
        with th.no_grad():
            extractor(image)
        sizes[name] = extractor.feature_cache.stats().bytes
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", type=int, default=4000, help="transitions filled for the RSS measurement")
    args = parser.parse_args(argv)

    image = spaces.Box(0, 255, (3, *DEFAULT_IMAGE_SIZE), np.uint8)
    velocity = spaces.Box(np.array([-0.5, -3.14], np.float32), np.array([2.0, 3.14], np.float32))
    dict_space = spaces.Dict({"image": image, "velocity": velocity})

    def image_sample(rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 256, (1, *image.shape), dtype=np.uint8)

    def dict_sample(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"image": image_sample(rng), "velocity": rng.uniform(-0.5, 2.0, (1, 2)).astype(np.float32)}

    def optimized(n: int) -> ReplayBuffer:
        return ReplayBuffer(n, image, ACTION, "cpu", optimize_memory_usage=True, handle_timeout_termination=False)

    variants = [
        measure("image", lambda n: ReplayBuffer(n, image, ACTION, "cpu"), image_sample, args.measure),
        measure("image_optimized", optimized, image_sample, args.measure),
        measure(
            "dict_image_velocity", lambda n: DictReplayBuffer(n, dict_space, ACTION, "cpu"), dict_sample, args.measure
        ),
    ]
    default = variants[0]
    cache = cache_bytes_per_image()
    print(
        json.dumps(
            {
                "bytes_per_transition": default["bytes_per_transition"],
                "projected_gib_200k": default["projected_gib_200k"],
                "goal_gib": GOAL_GIB,
                "meets_goal": all(v["projected_gib_200k"] <= GOAL_GIB for v in variants),
                "image_shape": list(image.shape),
                "variants": {v.pop("variant"): v for v in variants},
                "tiny_cache_bytes_per_image": cache,
                "tiny_cache_projected_gib_200k_images": {k: v * TRANSITIONS / GIB for k, v in cache.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
