"""``sb3-vlm pretrain``: FTRL's supervised stage on the embedded simulator; see :mod:`sb3_vlm.workflows.pretraining`
(the defaults of :class:`~sb3_vlm.workflows.pretraining.PretrainSettings` are the options' defaults)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sb3_vlm.cli._args import image_size, parse_worlds
from sb3_vlm.workflows.pretraining import PretrainSettings, pretrain

DEFAULTS = PretrainSettings(out=Path())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write (FTRL layout)")
    parser.add_argument("--samples", type=int, default=DEFAULTS.samples, help="(image, parameters) pairs to generate")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak AdamW learning rate (cosine schedule)")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=DEFAULTS.lora, help="train LoRA too")
    parser.add_argument("--lora-r", type=int, default=DEFAULTS.lora_r, help="LoRA rank (alpha = rank)")
    parser.add_argument(
        "--backbone", default=DEFAULTS.backbone, help="'tiny', a local Qwen2.5-VL dir or an FTRL checkpoint"
    )
    parser.add_argument("--barn-dir", type=Path, help="generate on real BARN worlds from this directory")
    parser.add_argument("--worlds", help="'train' (default: the 250 training worlds), 'test', 'all' or ids like 1,2,3")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the rollouts, candidates and training")
    parser.add_argument("--image-size", type=image_size, default=DEFAULTS.image_size, help="HEIGHTxWIDTH (as train)")
    parser.add_argument(
        "--library",
        choices=("grid", "lhs"),
        default=DEFAULTS.library,
        help="grid: speed x turning x inflation; lhs: random",
    )
    parser.add_argument("--candidates", type=int, default=DEFAULTS.candidates, help="vectors of the lhs library (>= 2)")
    parser.add_argument(
        "--horizon", type=int, default=DEFAULTS.horizon, help="0.5 s steps of a search window (12: 6 s)"
    )
    parser.add_argument("--n-envs", type=int, default=DEFAULTS.n_envs, help="episodes rolled out side by side")
    parser.add_argument("--velocity-labels", action=argparse.BooleanOptionalAction, default=DEFAULTS.velocity_labels)
    parser.add_argument(
        "--noise-replicas",
        type=int,
        default=DEFAULTS.noise_replicas,
        help="copies of each candidate under fresh noise (mean return)",
    )
    parser.add_argument(
        "--common-random-numbers",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS.common_random_numbers,
        help="every candidate of a noise replica draws the same fresh noise",
    )
    parser.add_argument("--temperature", type=float, help="soft labels: softmax(return / T)-weighted candidates")
    parser.add_argument(
        "--val-fraction", type=float, default=DEFAULTS.val_fraction, help="episodes held out for validation"
    )
    parser.add_argument(
        "--cache-mb", type=float, default=DEFAULTS.cache_mb, help="hidden-state cache of a frozen VLM (MiB)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="train on these pairs instead of generating them: a .npz (--save-data), FTRL's SFT .json, a data.csv "
        "or a directory of actor_*/data.csv (images resized to --image-size)",
    )
    parser.add_argument("--save-data", type=Path, help="also write the generated pairs to this .npz")
    parser.add_argument(
        "--head", choices=("mse", "flow"), default=DEFAULTS.head, help="flow: also a flow expert (flow_head/)"
    )
    parser.add_argument(
        "--flow-steps", type=int, default=DEFAULTS.flow_steps, help="Euler steps of the flow expert's sampler"
    )
    parser.add_argument(
        "--flow-train-steps", type=int, default=DEFAULTS.flow_train_steps, help="gradient steps of the flow expert"
    )
    parser.add_argument("--prompts", type=Path, help="prompt file: --samples pairs per prompt (sb3_vlm.sft.prompts)")
    parser.add_argument("--no-progress-bar", action="store_true")


def run(args: argparse.Namespace) -> Path:
    """Pretrain with the options of :func:`add_arguments`; returns ``--out``."""
    names = {f.name for f in dataclasses.fields(PretrainSettings)} - {"worlds", "progress_bar"}
    settings = PretrainSettings(**{k: v for k, v in vars(args).items() if k in names})
    settings.worlds, settings.progress_bar = parse_worlds(args.worlds), not args.no_progress_bar
    return pretrain(settings)
