"""``sb3-vlm serve``: the FTRL-compatible HTTP inference server (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sb3_vlm._constants import TINY
from sb3_vlm.cli._args import image_size
from sb3_vlm.policies import MODES
from sb3_vlm.serving.server import DEFAULT_PORT, HISTORY_SOURCES, ServerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """
    Add the ``serve`` options to ``parser`` (FTRL's ``qwen_server.py`` names are accepted as aliases).

    :param parser: A parser or sub-command parser; run it with :func:`run`.
    """
    parser.add_argument("--checkpoint", "--lora_path", required=True, help="checkpoint / policy directory")
    parser.add_argument("--mode", choices=MODES, default="sft", help="supervised head (FTRL) or TD3 actor")
    parser.add_argument("--base-model", "--base_model", default=None, help=f"'{TINY}' or a local Qwen2.5-VL dir")
    parser.add_argument("--algorithm", default="DWA", help="planner served (DWA, TEB, MPPI, DDP)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--noise-std", type=float, default=0.0, help="actor mode: exploration noise std in [-1, 1]")
    parser.add_argument("--history", choices=HISTORY_SOURCES, default=None, help="history frames: client | current")
    parser.add_argument("--input-size", type=image_size, default=None, help="resize requests to HEIGHTxWIDTH")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--quantization", choices=("nf4", "int8"), default=None)
    parser.add_argument("--load_in_4bit", action="store_const", const="nf4", dest="quantization", help="= nf4")
    parser.add_argument("--seed", type=int, default=0, help="weight seed of the tiny backbone")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-delay-ms", type=float, default=5.0, help="wait for more requests of a batch")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (MiB)")
    parser.add_argument(
        "--image-root",
        action="append",
        default=[],
        type=Path,
        help="directory image_path requests may read from (repeatable); none: image_path is refused (403)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--judge",
        action="store_true",
        help="also serve OpenAI-compatible /v1/chat/completions and /v1/models (a VLM judge for sb3_vlm.rewards)",
    )
    parser.add_argument("--judge-model", default=None, help="judge's Qwen2.5-VL dir (default: --base-model or tiny)")
    parser.add_argument("--judge-name", default=None, help="model name the judge answers to (default: dir name)")


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The :class:`~sb3_vlm.serving.server.ServerSettings` of the options."""
    from envs.planners import PARAM_TABLES

    algorithm = args.algorithm.upper()
    return ServerSettings(
        mode=args.mode,
        algorithm=algorithm,
        params=PARAM_TABLES.get(algorithm),
        base_model=args.base_model,
        noise_std=args.noise_std,
        history=args.history,
        input_size=args.input_size,
        dtype=args.dtype,
        quantization=args.quantization,
        seed=args.seed,
        max_batch_size=args.max_batch_size,
        batch_delay=args.batch_delay_ms / 1000.0,
        image_roots=args.image_root,
    )


def max_body_bytes(args: argparse.Namespace) -> int:
    """``--max-body-mb`` in bytes."""
    return int(args.max_body_mb * 1024 * 1024)


def build_judge_app(args: argparse.Namespace) -> Any:
    """The inference server's app plus the judge's chat routes (:mod:`sb3_vlm.serving.chat`), for ``--judge``."""
    from sb3_vlm.serving.app import build_app
    from sb3_vlm.serving.chat import ChatModel, add_chat_routes

    app = build_app(args.checkpoint, server_settings(args), max_body_bytes=max_body_bytes(args))
    source = args.judge_model or args.base_model or TINY
    add_chat_routes(app, ChatModel.from_source(source, name=args.judge_name, seed=args.seed))
    return app


def run(args: argparse.Namespace) -> None:
    """Serve with the options of :func:`add_arguments` (blocking)."""
    if args.judge:
        import uvicorn

        uvicorn.run(build_judge_app(args), host=args.host, port=args.port, log_level=args.log_level)
        return
    from sb3_vlm.serving.app import serve

    settings, body = server_settings(args), max_body_bytes(args)
    serve(args.checkpoint, args.host, args.port, settings, max_body_bytes=body, log_level=args.log_level)
