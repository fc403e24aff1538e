"""VLM judge throughput and what it adds to env stepping: batched vs one request at a time.

Against an OpenAI-compatible server on 127.0.0.1: ``--server scripted`` (default), the tests' chat-completions server
(``tests/_judge_server.py``) answering after ``--server-delay-ms`` (a stand-in for model time); ``--server chat``, our
judge endpoint (:mod:`sb3_vlm.serving.chat`, what ``sb3-vlm serve --judge`` mounts) with the tiny Qwen2.5-VL
generating ``--max-tokens`` tokens on the CPU; or any running server with ``--base-url``/``--model`` (vLLM, SGLang,
Ollama). Frames are the costmap observations of
``BarnNavVecEnv`` (56 x 84), 8 per request, all different (the cache never answers).

* ``serial_requests_per_s``: ``--requests`` judgements one after the other (one in flight);
* ``batched_requests_per_s``: the same number submitted at once (``--concurrency`` in flight);
* ``added_ms_per_env_step``: wall time per ``step()`` of ``VecVLMJudgeReward(BarnNavVecEnv(--n-envs))`` in terminal
  mode minus the simulator's own ``step_wait`` in the same steps, over ``--steps`` steps (frame copies, sampling,
  hashing, encoding and the waits for the judgements of the episodes that end: at most ``--max-steps`` steps each);
* ``serial_added_ms_per_env_step``: the same with one request in flight.

Prints one JSON line.

    python benchmarks/bench_judge.py [--server scripted|chat] [--requests 64] [--concurrency 8] [--n-envs 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from envs import BarnNavVecEnv
from envs.planners import DWA_PARAMS
from sb3_vlm.rewards import VecVLMJudgeReward, VLMJudge
from sb3_vlm.rewards.judge import JudgeSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _judge_server import Reply, judge_server  # noqa: E402


@contextmanager
def local_server(kind: str, model: str, delay_ms: float) -> Iterator[str]:
    """Start the scripted server or our chat endpoint on 127.0.0.1; yield its ``.../v1`` URL."""
    if kind == "scripted":
        with judge_server(model) as server:
            server.default = Reply(delay=delay_ms / 1000.0)
            yield server.url
        return
    from _helpers import running

    from sb3_vlm.serving.chat import ChatModel, build_chat_app

    with running(build_chat_app(ChatModel.from_source("tiny", name=model))) as url:
        yield url + "/v1"


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
        print(f"note: {failed}/{n} judgements without a score (expected with the random tiny model)", file=sys.stderr)
    return n / seconds


class _TimedVecEnv(BarnNavVecEnv):
    """``BarnNavVecEnv`` that adds up the wall time of its own ``step_wait`` (the simulator's share of a step)."""

    inner_seconds = 0.0

    def step_wait(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return super().step_wait()
        finally:
            self.inner_seconds += time.perf_counter() - start


def step_ms(n_envs: int, steps: int, max_steps: int, judge: VLMJudge) -> tuple[float, float]:
    """(env ms per step, judge-added ms per step): one run, the simulator's own time subtracted from the wrapper's
    step (so the machine's load on the simulator does not enter the difference)."""
    venv = _TimedVecEnv(n_envs, observation="costmap", max_steps=max_steps)
    env = VecVLMJudgeReward(venv, judge, max_wait=60.0)
    env.seed(0)
    env.reset()
    actions = np.tile(DWA_PARAMS.default, (n_envs, 1))
    for _ in range(max_steps):  # warm-up: one episode (world maps, compiled kernels, connections)
        env.step(actions)
    venv.inner_seconds = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    total = time.perf_counter() - start
    return 1000.0 * venv.inner_seconds / steps, 1000.0 * (total - venv.inner_seconds) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("scripted", "chat"), default="scripted", help="local server to start")
    parser.add_argument("--base-url", help="a running server's .../v1 instead of a local one")
    parser.add_argument("--model", default="judge-test")
    parser.add_argument("--server-delay-ms", type=float, default=50.0, help="scripted server's answer delay")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=8, help="answer tokens per request")
    args = parser.parse_args()

    logging.getLogger("sb3_vlm.rewards").setLevel(logging.ERROR)  # the tiny model's answers are all unparsable
    rng = np.random.default_rng(0)
    served = local_server(args.server, args.model, args.server_delay_ms) if args.base_url is None else None
    with served or _given(args.base_url) as url:
        settings = {"cache_size": 0, "timeout": 60.0, "max_retries": 0, "max_tokens": args.max_tokens}
        serial = VLMJudge(JudgeSettings(url, args.model, max_concurrency=1, **settings))
        batched = VLMJudge(JudgeSettings(url, args.model, max_concurrency=args.concurrency, **settings))
        requests_per_s(batched, 4, True, rng)  # warm-up: connections, encoder
        serial_rps = requests_per_s(serial, args.requests, False, rng)
        batched_rps = requests_per_s(batched, args.requests, True, rng)
        env_ms, added = step_ms(args.n_envs, args.steps, args.max_steps, batched)
        _, added_serial = step_ms(args.n_envs, args.steps, args.max_steps, serial)
        serial.close()
        batched.close()
    scripted = args.base_url is None and args.server == "scripted"
    print(
        json.dumps(
            {
                "server": args.base_url or args.server,
                "server_delay_ms": args.server_delay_ms if scripted else None,
                "max_tokens": args.max_tokens,
                "requests": args.requests,
                "concurrency": args.concurrency,
                "frames_per_request": 8,
                "serial_requests_per_s": round(serial_rps, 2),
                "batched_requests_per_s": round(batched_rps, 2),
                "n_envs": args.n_envs,
                "episode_steps": args.max_steps,
                "env_ms_per_step": round(env_ms, 3),
                "added_ms_per_env_step": round(added, 3),
                "serial_added_ms_per_env_step": round(added_serial, 3),
            }
        )
    )


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
