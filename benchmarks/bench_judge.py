"""VLM judge throughput and what it adds to env stepping: batched vs one request at a time.

Against an OpenAI-compatible server: by default the scripted chat-completions server of the tests on 127.0.0.1
(``tests/_judge_server.py``) answering after ``--server-delay-ms`` (a stand-in for model time), or any real one with
``--base-url``/``--model`` (vLLM, SGLang, Ollama, ``sb3-vlm serve --judge``). Frames are the costmap observations of
``BarnNavVecEnv`` (56 x 84), 8 per request, all different (the cache never answers).

* ``serial_requests_per_s``: ``--requests`` judgements one after the other (one in flight);
* ``batched_requests_per_s``: the same number submitted at once (``--concurrency`` in flight);
* ``added_ms_per_env_step``: wall time per ``step()`` of ``VecVLMJudgeReward(BarnNavVecEnv(--n-envs))`` in terminal
  mode minus that of the bare VecEnv, over ``--steps`` steps (episodes of ``--max-steps`` steps end together, so
  every ``--max-steps``-th step waits for ``--n-envs`` concurrent judgements);
* ``serial_added_ms_per_env_step``: the same with one request in flight.

Prints one JSON line.

    python benchmarks/bench_judge.py [--requests 64] [--concurrency 8] [--server-delay-ms 50] [--n-envs 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from envs import BarnNavVecEnv
from envs.planners import DWA_PARAMS
from sb3_vlm.rewards import VecVLMJudgeReward, VLMJudge

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _judge_server import Reply, judge_server  # noqa: E402


def _frames(k: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(8)]


def requests_per_s(judge: VLMJudge, n: int, batched: bool, rng: np.random.Generator) -> float:
    batches = [_frames(k, rng) for k in range(n)]
    start = time.perf_counter()
    if batched:
        results = [f.result() for f in [judge.submit(b) for b in batches]]
    else:
        results = [judge.score(b) for b in batches]
    seconds = time.perf_counter() - start
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"warning: {failed}/{n} judgements failed", file=sys.stderr)
    return n / seconds


def ms_per_step(n_envs: int, steps: int, max_steps: int, judge: VLMJudge | None) -> float:
    venv = BarnNavVecEnv(n_envs, observation="costmap", max_steps=max_steps)
    env = venv if judge is None else VecVLMJudgeReward(venv, judge, max_wait=60.0)
    env.seed(0)
    env.reset()
    actions = np.tile(DWA_PARAMS.default, (n_envs, 1))
    for _ in range(max_steps):  # warm-up: one episode (world maps, compiled kernels, connections)
        env.step(actions)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    return 1000.0 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running server's .../v1 (default: the scripted test server)")
    parser.add_argument("--model", default="judge-test")
    parser.add_argument("--server-delay-ms", type=float, default=50.0, help="scripted server's answer delay")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=20)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    served = judge_server(args.model) if args.base_url is None else nullcontext()
    with served as server:
        if server is not None:
            server.default = Reply(delay=args.server_delay_ms / 1000.0)
        url = args.base_url or server.url
        settings = {"cache_size": 0, "timeout": 60.0, "max_retries": 0}
        serial = VLMJudge(url, args.model, max_concurrency=1, **settings)
        batched = VLMJudge(url, args.model, max_concurrency=args.concurrency, **settings)
        requests_per_s(batched, 4, True, rng)  # warm-up: connections, encoder
        serial_rps = requests_per_s(serial, args.requests, False, rng)
        batched_rps = requests_per_s(batched, args.requests, True, rng)
        bare_before = ms_per_step(args.n_envs, args.steps, args.max_steps, None)
        judged = ms_per_step(args.n_envs, args.steps, args.max_steps, batched)
        judged_serial = ms_per_step(args.n_envs, args.steps, args.max_steps, serial)
        bare = (bare_before + ms_per_step(args.n_envs, args.steps, args.max_steps, None)) / 2
        serial.close()
        batched.close()
    print(
        json.dumps(
            {
                "server": "scripted" if args.base_url is None else args.base_url,
                "server_delay_ms": args.server_delay_ms if args.base_url is None else None,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "frames_per_request": 8,
                "serial_requests_per_s": round(serial_rps, 2),
                "batched_requests_per_s": round(batched_rps, 2),
                "n_envs": args.n_envs,
                "episode_steps": args.max_steps,
                "env_ms_per_step": round(bare, 3),
                "added_ms_per_env_step": round(judged - bare, 3),
                "serial_added_ms_per_env_step": round(judged_serial - bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
