"""``sb3-vlm pretrain``: FTRL's supervised stage on the embedded simulator.

1. :func:`sb3_vlm.sft.labels.generate_pairs`: pairs (scene image, good DWA parameters) by receding-horizon search
   over ``--candidates`` parameter vectors every ``--horizon`` steps of ``--n-envs`` episodes that follow the search.
2. :func:`sb3_vlm.sft.training.train_sft`: DPT head (+ LoRA with ``--lora``) with FTRL's weighted MSE on normalised
   labels.
3. A checkpoint in the FTRL layout (``--out``) that ``sb3-vlm train --vlm <out>`` starts from; its
   ``sb3_vlm_config.json`` records the base model and, under ``"sft"``, the data, settings and validation metrics.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch as th

from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import TINY
from sb3_vlm.cli._args import image_size, options, parse_worlds
from sb3_vlm.sft.data import SFTDataset
from sb3_vlm.sft.labels import generate_pairs
from sb3_vlm.sft.prompts import generate_prompt_pairs, load_prompts, report_prompts
from sb3_vlm.sft.training import LOSS_WEIGHTS, SFTConfig, make_sft_extractor, save_sft_checkpoint, train_sft


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write (FTRL layout)")
    parser.add_argument("--samples", type=int, default=6000, help="(image, parameters) pairs to generate")
    parser.add_argument("--epochs", type=int, default=SFTConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=SFTConfig.batch_size)
    parser.add_argument("--lr", type=float, default=SFTConfig.lr, help="peak AdamW learning rate (cosine schedule)")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=False, help="train LoRA too")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha = rank)")
    parser.add_argument("--backbone", default=TINY, help="'tiny', a local Qwen2.5-VL dir or an FTRL checkpoint")
    parser.add_argument("--barn-dir", type=Path, help="generate on real BARN worlds from this directory")
    parser.add_argument("--worlds", help="'train' (default: the 250 training worlds), 'test', 'all' or ids like 1,2,3")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rollouts, candidates and training")
    parser.add_argument("--image-size", type=image_size, default=DEFAULT_IMAGE_SIZE, help="HEIGHTxWIDTH (as train)")
    parser.add_argument(
        "--library", choices=("grid", "lhs"), default="lhs", help="grid: speed x turning x inflation; lhs: random"
    )
    parser.add_argument("--candidates", type=int, default=24, help="vectors of the lhs library (>= 2)")
    parser.add_argument("--horizon", type=int, default=12, help="0.5 s steps of a search window (12: 6 s)")
    parser.add_argument("--n-envs", type=int, default=8, help="episodes rolled out side by side")
    parser.add_argument("--velocity-labels", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--noise-replicas", type=int, default=3, help="copies of each candidate under fresh noise (mean return)"
    )
    parser.add_argument("--temperature", type=float, help="soft labels: softmax(return / T)-weighted candidates")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="episodes held out for validation")
    parser.add_argument("--cache-mb", type=float, default=1024, help="hidden-state cache of a frozen VLM (MiB)")
    parser.add_argument(
        "--data",
        type=Path,
        help="train on these pairs instead of generating them: a .npz (--save-data), FTRL's SFT .json, a data.csv "
        "or a directory of actor_*/data.csv (images resized to --image-size)",
    )
    parser.add_argument("--save-data", type=Path, help="also write the generated pairs to this .npz")
    parser.add_argument("--head", choices=("mse", "flow"), default="mse", help="flow: also a flow expert (flow_head/)")
    parser.add_argument("--flow-steps", type=int, default=10, help="Euler steps of the flow expert's sampler")
    parser.add_argument("--flow-train-steps", type=int, default=2000, help="gradient steps of the flow expert")
    parser.add_argument("--prompts", type=Path, help="prompt file: --samples pairs per prompt (sb3_vlm.sft.prompts)")
    parser.add_argument("--no-progress-bar", action="store_true")


def run(args: argparse.Namespace) -> Path:
    """Generate pairs (or load ``--data``), train, write the checkpoint; returns ``--out``."""
    progress = not args.no_progress_bar
    th.manual_seed(args.seed)  # fresh head weights
    if args.data is not None:
        data, data_stats = SFTDataset.load(args.data, args.image_size), {"source": str(args.data)}
    else:
        passed = options(
            args,
            *("barn_dir", "image_size", "library", "candidates", "horizon", "n_envs", "velocity_labels", "seed"),
            *("temperature", "noise_replicas"),
        )
        passed.update(worlds=parse_worlds(args.worlds), progress_bar=progress)
        if args.prompts is not None:  # prompt-conditioned policy (issue 15)
            data, data_stats = generate_prompt_pairs(load_prompts(args.prompts), args.samples, **passed)
        else:
            data, data_stats = generate_pairs(args.samples, **passed)
        data_stats.update(worlds=args.worlds, barn_dir=None if args.barn_dir is None else str(args.barn_dir))
        print(
            f"generated {len(data)} pairs from {data_stats['episodes']} episodes in {data_stats['seconds']:.1f} s "
            f"(library choices {data_stats['chosen']}, defaults first; "
            f"{data_stats['skipped_ties']} states where all candidates tie skipped)"
        )
        if args.save_data is not None:
            print(f"pairs -> {data.save(args.save_data)}")
    planner = "DWA"
    weights = LOSS_WEIGHTS[planner][: data.num_params]
    lora = dict(r=args.lora_r, lora_alpha=args.lora_r, lora_dropout=0.05) if args.lora else None
    extractor = make_sft_extractor(
        data.images.shape[1:],
        data.num_params,
        backbone=args.backbone,
        lora=lora,
        feature_cache_bytes=int(args.cache_mb * 2**20),  # each image passes a frozen VLM once
        planner=planner,
    )
    config = SFTConfig(progress_bar=progress, **options(args, "epochs", "batch_size", "lr", "val_fraction", "seed"))
    result = train_sft(extractor, data, weights, config)
    metrics = result.to_dict()
    print(
        f"validation weighted MSE (normalised): before {result.val_mse_before:.4f}, after {result.val_mse_after:.4f}, "
        f"predict-the-mean {result.val_mse_mean_baseline:.4f} ({result.n_train} train / {result.n_val} val pairs, "
        f"{result.seconds:.1f} s)"
    )
    print(
        "validation MAE (physical) after / mean baseline: "
        + ", ".join(f"{k} {v:.3g}/{result.val_mae_mean_baseline[k]:.3g}" for k, v in result.val_mae.items())
    )
    if result.val_mse_after >= result.val_mse_mean_baseline:
        print(
            "note: the head does not beat predicting the mean label on the validation episodes; the images carry "
            "little signal this backbone can use (the tiny random-weight one is a stand-in: use a real Qwen2.5-VL "
            "with --backbone, and more --samples)"
        )
    metadata = {
        "planner": planner,
        "parameter_names": list(data.names or ()),
        "image_shape": list(data.images.shape[1:]),
        "loss_weights": list(weights),
        "lora": lora,
        "data": data_stats,
        "config": asdict(config),
        "metrics": metrics,
    }
    out = save_sft_checkpoint(extractor, args.out, metadata)
    if data.prompts is not None:  # prompt-conditioned policy (issue 15)
        report_prompts(extractor, data, args.prompts, out)
    print(f"checkpoint -> {out} (start TD3 from it: sb3-vlm train --vlm {out})")
    if args.head == "flow":
        from sb3_vlm.flow import FitConfig, FlowHeadConfig
        from sb3_vlm.flow.policy import FLOW_DIR, train_flow_head

        head_config = FlowHeadConfig(action_dim=data.num_params, num_steps=args.flow_steps)
        fit_config = FitConfig(steps=args.flow_train_steps, seed=args.seed)
        train_flow_head(extractor, data, head_config, fit_config, out=out)
        print(f"flow expert -> {out / FLOW_DIR} ({args.flow_steps} Euler steps; distil it: sb3-vlm distill)")
    return out
