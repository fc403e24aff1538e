"""``--judge-*`` options: a VLM judge's score added to the training reward (``sb3-vlm train``) or to the collected
episodes (``sb3-vlm collect``).

Only parsing: :func:`judge_settings` turns the options into plain JSON-able settings (saved with a run, so a resumed
run judges the same way) and :func:`sb3_vlm.rewards.build.judge_reward` builds the judge and the wrapper from them.
Without ``--judge-url`` nothing changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sb3_vlm.cli._args import image_size

__all__ = ["add_arguments", "judge_settings"]


def add_arguments(parser: argparse.ArgumentParser, wrapper: bool = True) -> None:
    """Add the ``--judge-*`` options (a group "VLM judge reward") to ``parser``; ``wrapper=False`` leaves out the
    reward wrapper's own (mode, window, env weight, frame source): a collector judges whole episodes."""
    g = parser.add_argument_group("VLM judge reward", "score episodes with a VLM behind an OpenAI-compatible API")
    g.add_argument("--judge-url", help="API root with /v1, e.g. http://localhost:8000/v1 (vLLM); unset: no judge")
    g.add_argument("--judge-model", default=None, help="model name the server serves (required with --judge-url)")
    g.add_argument("--judge-task", default=None, help="task description put into the prompt")
    g.add_argument("--judge-prompt-file", type=Path, help="prompt template file ({task} {num_frames} {low} {high})")
    g.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")
    g.add_argument("--judge-weight", type=float, default=1.0, help="weight of the judge's score")
    g.add_argument("--judge-frames", type=int, default=8, help="frames per request, sampled evenly")
    g.add_argument("--judge-image-size", type=image_size, default=None, help="resize frames to HxW (default: as is)")
    g.add_argument("--judge-score-range", type=float, nargs=2, default=(0.0, 10.0), metavar=("LOW", "HIGH"))
    g.add_argument("--judge-timeout", type=float, default=30.0, help="seconds per request; a step waits no longer")
    g.add_argument("--judge-retries", type=int, default=2, help="client retries (backoff 0.5 s doubling)")
    g.add_argument("--judge-concurrency", type=int, default=8, help="requests in flight at most")
    if wrapper:
        g.add_argument("--judge-mode", choices=("terminal", "window"), default="terminal")
        g.add_argument("--judge-window", type=int, default=16, help="steps per judged window (--judge-mode window)")
        g.add_argument("--judge-env-weight", type=float, default=1.0, help="weight of the env's own reward")
        g.add_argument(
            "--judge-frame-source",
            choices=("auto", "observation", "render"),
            default="auto",
            help="frames judged: the image observation, or the top-down render (auto: observation if it is an image)",
        )


def judge_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """``{"judge": VLMJudge kwargs, "reward": wrapper kwargs}`` of the options (JSON-able; the prompt template is
    read from ``--judge-prompt-file`` now), or None without ``--judge-url``.

    :raises ValueError: ``--judge-url`` without ``--judge-model``.
    """
    if not getattr(args, "judge_url", None):
        return None
    if not args.judge_model:
        raise ValueError("--judge-url needs --judge-model (the name the server serves the model under)")
    judge: dict[str, Any] = {
        "base_url": args.judge_url,
        "model": args.judge_model,
        "api_key_env": args.judge_api_key_env,
        "num_frames": args.judge_frames,
        "image_size": list(args.judge_image_size) if args.judge_image_size else None,
        "score_range": list(args.judge_score_range),
        "timeout": args.judge_timeout,
        "max_retries": args.judge_retries,
        "max_concurrency": args.judge_concurrency,
    }
    if args.judge_task:
        judge["task"] = args.judge_task
    if args.judge_prompt_file:
        judge["prompt_template"] = Path(args.judge_prompt_file).read_text()
    reward: dict[str, Any] = {"judge_weight": args.judge_weight}
    if hasattr(args, "judge_mode"):
        reward.update(
            mode=args.judge_mode,
            window=args.judge_window,
            env_weight=args.judge_env_weight,
            frame_source=args.judge_frame_source,
        )
    return {"judge": judge, "reward": reward}
