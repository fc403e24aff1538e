"""``sb3-vlm distill``: reflow a supervised checkpoint's flow-matching expert into a one-step student."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sb3_vlm.flow.policy import FlowPolicy, distill
from sb3_vlm.flow.reflow import REFLOW_FIT, FitConfig
from sb3_vlm.sft.data import SFTDataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", type=Path, required=True, help="supervised checkpoint with a flow_head/")
    parser.add_argument("--data", type=Path, required=True, help="(image, parameters) pairs (.npz of pretrain)")
    parser.add_argument("--out", type=Path, required=True, help="student checkpoint directory to write")
    parser.add_argument("--use-reflow", action=argparse.BooleanOptionalAction, default=True,
                        help="train on the teacher's couplings (reflow); --no-use-reflow: on the data")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=1, help="reflow rounds (k-rectified flow)")
    parser.add_argument("--teacher-steps", type=int, help="Euler steps of the teacher's samples (default: its own)")
    parser.add_argument("--steps", type=int, default=REFLOW_FIT.steps, help="gradient steps per round")
    parser.add_argument("--batch-size", type=int, default=REFLOW_FIT.batch_size)
    parser.add_argument("--lr", type=float, default=REFLOW_FIT.lr, help="peak AdamW learning rate (cosine schedule)")
    parser.add_argument("--couplings-per-feature", type=int, default=REFLOW_FIT.couplings_per_feature,
                        help="noise draws through the teacher per training image (reflow)")  # fmt: skip
    parser.add_argument("--save-freq", type=int, default=0, help="steps between saves (0: at the end only)")
    parser.add_argument("--freeze-vision-encoder", action=argparse.BooleanOptionalAction, default=True,
                        help="the VLM stays frozen (the only mode: teacher and student share it)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> Path:
    if not args.freeze_vision_encoder:
        raise ValueError(
            "--no-freeze-vision-encoder is not supported: teacher and student share one frozen VLM and only the flow "
            "expert trains (train the VLM in `sb3-vlm pretrain --lora` first, then distil its expert)"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset = SFTDataset.load(args.data)
    teacher = FlowPolicy.from_pretrained(args.teacher, dataset.images.shape[1:])
    if args.teacher_steps is not None:
        teacher.head.config.num_steps = args.teacher_steps
    config = FitConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, save_freq=args.save_freq,
                       seed=args.seed, couplings_per_feature=args.couplings_per_feature)  # fmt: skip
    distill(teacher, dataset, args.out, config, rounds=args.rounds, teacher_path=args.teacher,
            use_reflow=args.use_reflow)  # fmt: skip
    print(f"student written to {args.out}")
    return args.out
