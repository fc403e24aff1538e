"""``sb3-vlm pretrain``: FTRL's supervised stage on the embedded simulator.

1. Pairs (scene image, good DWA parameters) by short-horizon search: ``--n-envs`` default-DWA episodes run on
   training worlds, with the simulator's sensor and actuation noise (no two episodes alike). Every ``--horizon``
   steps (0.5 s each; 4 = the DWA's own 2 s rollout time) the state of each episode is copied into ``--candidates``
   robot slots of the same batched simulator; slot ``k`` drives the next ``--horizon`` steps with vector ``k`` of a
   fixed library (the defaults and a Latin-hypercube sample of the parameter ranges, drawn once from ``--seed``),
   and the vector with the highest FTRL reward over the horizon (progress to the goal, proximity penalty,
   collision -100, success +50) labels the state's image. The copies replay the episode's own noise, so candidates
   differ by their parameters only; the default slot must end exactly where the episode itself does, which checks
   every copy. As in FTRL the labels end with the velocity after the first step of the chosen branch
   (``next_linear_vel``, ``next_angular_vel``) unless ``--no-velocity-labels``.
2. :func:`sb3_vlm.sft.training.train_sft`: DPT head (+ LoRA with ``--lora``) with FTRL's weighted MSE on normalised
   labels.
3. A checkpoint in the FTRL layout (``--out``) that ``sb3-vlm train --vlm <out>`` starts from; its
   ``sb3_vlm_config.json`` records the base model and, under ``"sft"``, the data, settings and validation metrics.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from tqdm.auto import tqdm

from envs import NavBatch
from envs.nav_env import VELOCITY_HIGH, VELOCITY_LOW
from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import TINY
from sb3_vlm.cli._args import image_size, parse_worlds
from sb3_vlm.sft.training import LOSS_WEIGHTS, SFTConfig, SFTDataset, make_sft_extractor, save_sft_checkpoint, train_sft

__all__ = ["add_arguments", "clone_slot", "generate_pairs", "run"]

VELOCITY_NAMES = ("next_linear_vel", "next_angular_vel")
"""FTRL's two extra SFT outputs (ftrl_reference §4.4)."""
TIE_TOLERANCE = 0.05
"""Horizon returns within this of the best (reward units: 5 mm of progress) count as ties; ties go to the vector
nearest the defaults, and states where every candidate ties (the choice does not matter) are skipped."""
MAX_EPISODE_STEPS = 100
"""Episode length cap of the rollouts (FTRL drops trajectories longer than 100 steps from its SFT data)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write (FTRL layout)")
    parser.add_argument("--samples", type=int, default=1000, help="(image, parameters) pairs to generate")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate (cosine schedule)")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=False, help="train LoRA too")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha = rank)")
    parser.add_argument("--backbone", default=TINY, help="'tiny', a local Qwen2.5-VL dir or an FTRL checkpoint")
    parser.add_argument("--barn-dir", type=Path, help="generate on real BARN worlds from this directory")
    parser.add_argument("--worlds", help="'train' (default: the 250 training worlds), 'test', 'all' or ids like 1,2,3")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rollouts, candidates and training")
    parser.add_argument("--image-size", type=image_size, default=DEFAULT_IMAGE_SIZE, help="HEIGHTxWIDTH (as train)")
    parser.add_argument("--candidates", type=int, default=8, help="parameter vectors tried per state (>= 2)")
    parser.add_argument("--horizon", type=int, default=4, help="0.5 s steps each candidate drives (4: DWA's 2 s)")
    parser.add_argument("--n-envs", type=int, default=8, help="episodes rolled out side by side")
    parser.add_argument("--velocity-labels", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="episodes held out for validation")
    parser.add_argument("--cache-mb", type=float, default=1024, help="hidden-state cache of a frozen VLM (MiB)")
    parser.add_argument("--data", type=Path, help="train on pairs from this .npz instead of generating them")
    parser.add_argument("--save-data", type=Path, help="also write the generated pairs to this .npz")
    parser.add_argument("--no-progress-bar", action="store_true")


def clone_slot(batch: NavBatch, src: int, dst: Sequence[int] | np.ndarray) -> None:
    """
    Copy episode ``src`` of ``batch`` (simulator, planner and env state) into slots ``dst``.

    Every per-robot field (an array whose first axis is the batch, or a list with one entry per robot) of the
    ``NavBatch``, its ``BatchSim`` and its local planner is copied; noise generators are deep-copied so that the
    copies replay ``src``'s noise. :func:`generate_pairs` verifies the copy on every use (a slot given the same
    parameters as ``src`` must follow it exactly).

    :param batch: The batched env.
    :param src: Source slot.
    :param dst: Destination slots (not containing ``src``).
    """
    dst = [int(d) for d in np.atleast_1d(dst)]
    if src in dst:
        raise ValueError(f"clone_slot: the destinations {dst} contain the source slot {src}")
    n = batch.n
    for owner in (batch, batch.sim, batch.sim.planner):
        for value in vars(owner).values():
            if isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == n:
                value[dst] = value[src]
            elif isinstance(value, list) and len(value) == n:
                for d in dst:
                    value[d] = _copy_entry(value[src])


def _copy_entry(value: Any) -> Any:
    if isinstance(value, np.random.Generator):
        return copy.deepcopy(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.copy()
    return value  # shared read-only objects: worlds, their maps


def _latin_hypercube(rng: np.random.Generator, k: int, dims: int) -> np.ndarray:
    """``k`` points in ``[-1, 1]^dims``, one in each of ``k`` equal strata of every axis."""
    strata = np.stack([rng.permutation(k) for _ in range(dims)], axis=1)
    return (strata + rng.uniform(size=(k, dims))) / k * 2.0 - 1.0


def generate_pairs(
    n_samples: int,
    *,
    barn_dir: str | Path | None = None,
    worlds: str | Sequence[int] | None = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    candidates: int = 8,
    horizon: int = 4,
    n_envs: int = 8,
    velocity_labels: bool = True,
    seed: int = 0,
    progress_bar: bool = True,
) -> tuple[SFTDataset, dict[str, Any]]:
    """
    Build (scene image, good parameters) pairs by short-horizon parameter search (see the module docstring).

    :param n_samples: Pairs to return.
    :param barn_dir: Real BARN worlds, or None for generated ones.
    :param worlds: World set (``"train"``, ``"test"``, ``"all"``, ids, or None: the 250 training worlds, generated
        or of ``barn_dir``).
    :param image_size: ``(height, width)`` of the scene images.
    :param candidates: Size ``K`` of the parameter library tried from every state (the defaults + ``K - 1``
        Latin-hypercube vectors), >= 2.
    :param horizon: Steps (0.5 s each) every candidate drives, >= 1.
    :param n_envs: Episodes rolled out side by side (the simulator holds ``n_envs * (K + 1)`` robots).
    :param velocity_labels: Append the velocity after the first step of the chosen branch (FTRL's 9 outputs).
    :param seed: Seed of worlds, noise and candidates.
    :param progress_bar: Show a tqdm bar.
    :return: The pairs (images ``[N, 3, H, W]`` uint8, labels ``[N, P]`` physical, episode ids) and statistics
        (``library`` ``[K, 7]``, how often each vector was ``chosen``, ``skipped_ties``, the mean return gain of the
        chosen vector over the defaults, ``seconds``...).
    """
    for name, value, low in (("n_samples", n_samples, 1), ("candidates", candidates, 2), ("horizon", horizon, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"generate_pairs: {name} must be an int >= {low}, got {value!r}")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"generate_pairs: n_envs must be a positive int, got {n_envs!r}")
    slots = candidates + 1
    batch = NavBatch(n_envs * slots, barn_dir=barn_dir, worlds=worlds, max_steps=MAX_EPISODE_STEPS, noise=True)
    table = batch.params
    default = table.default.astype(np.float32)
    sources = np.arange(n_envs) * slots
    branches = sources[:, None] + 1 + np.arange(candidates)[None, :]  # [G, K]; column 0 drives the defaults
    rng = np.random.default_rng(seed)
    # The candidates: one fixed library for every state, so a label is a choice among K vectors and every parameter
    # of it (not only those that mattered in that state) follows from the state.
    unit = _latin_hypercube(rng, candidates, len(table))
    unit[0] = table.to_unit(default)
    library = table.validate(table.from_unit(unit))  # [K, P]: ints rounded, as the env applies them
    library[0] = default
    episode = np.zeros(n_envs, dtype=np.int64)
    next_episode = 0

    def start(g: int) -> None:
        nonlocal next_episode
        batch.reset(int(sources[g]), rng)
        episode[g], next_episode = next_episode, next_episode + 1

    for g in range(n_envs):
        start(g)
    images, labels, groups = [], [], []
    gains, skipped, chosen = [], 0, np.zeros(candidates, dtype=np.int64)
    t0 = time.perf_counter()
    bar = tqdm(total=n_samples, desc="pairs", unit="pair", disable=not progress_bar)
    while len(labels) < n_samples:
        for g in range(n_envs):
            clone_slot(batch, int(sources[g]), branches[g])
        batch.steps[branches.ravel()] = 0  # branches never time out within the horizon
        frames = batch.costmap_obs(image_size)[sources]
        actions = np.tile(default, (batch.n, 1))
        actions[branches] = library
        alive = ~batch.done
        returns = np.zeros(batch.n)
        velocity = batch.sim.velocity
        for h in range(horizon):
            rewards, terminated, truncated, _ = batch.step(actions)
            returns += np.where(alive, rewards, 0.0)
            alive &= ~(terminated | truncated)
            if h == 0:
                velocity = batch.sim.velocity.copy()
        if not np.array_equal(batch.sim.pose[branches[:, 0]], batch.sim.pose[sources]):
            raise RuntimeError(
                "generate_pairs: a copied episode did not replay its source with the same parameters; "
                "clone_slot misses part of the simulator state (envs changed?)"
            )
        for g in range(n_envs):
            score = returns[branches[g]]
            best = score.max()
            if best - score.min() < TIE_TOLERANCE:
                skipped += 1
            elif len(labels) < n_samples:
                ties = np.flatnonzero(score >= best - TIE_TOLERANCE)
                k = int(ties[np.argmin(np.square(unit[ties] - unit[0]).sum(axis=1))])
                label = library[k].astype(np.float64)
                if velocity_labels:
                    next_velocity = np.clip(velocity[branches[g, k]], VELOCITY_LOW, VELOCITY_HIGH)
                    label = np.concatenate([label, next_velocity])
                images.append(frames[g].transpose(2, 0, 1))
                labels.append(label)
                groups.append(episode[g])
                gains.append(best - score[0])
                chosen[k] += 1
                bar.update(1)
            if batch.done[sources[g]]:
                start(g)
    bar.close()
    names = table.names + (VELOCITY_NAMES if velocity_labels else ())
    data = SFTDataset(np.stack(images), np.stack(labels), np.array(groups), names)
    stats = {
        "pairs": len(data),
        "episodes": int(len(np.unique(data.groups))),
        "skipped_ties": skipped,
        "library": library.tolist(),
        "chosen": chosen.tolist(),
        "mean_return_gain_over_default": float(np.mean(gains)),
        "candidates": candidates,
        "horizon_steps": horizon,
        "seconds": time.perf_counter() - t0,
    }
    return data, stats


def run(args: argparse.Namespace) -> Path:
    """Generate pairs (or load ``--data``), train, write the checkpoint; returns ``--out``."""
    progress = not args.no_progress_bar
    th.manual_seed(args.seed)  # fresh head weights
    if args.data is not None:
        data, data_stats = SFTDataset.load(args.data), {"source": str(args.data)}
    else:
        data, data_stats = generate_pairs(
            args.samples,
            barn_dir=args.barn_dir,
            worlds=parse_worlds(args.worlds),
            image_size=args.image_size,
            candidates=args.candidates,
            horizon=args.horizon,
            n_envs=args.n_envs,
            velocity_labels=args.velocity_labels,
            seed=args.seed,
            progress_bar=progress,
        )
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
    config = SFTConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        progress_bar=progress,
    )
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
    print(f"checkpoint -> {out} (start TD3 from it: sb3-vlm train --vlm {out})")
    return out
