"""Supervised stage (FTRL's SFT, ftrl_reference §2.7, §3): regress planner parameters from scene images.

The model is a :class:`~sb3_vlm.model.extractor.VLMDPTExtractor` whose DPT head keeps its regression ``mlp``: image ->
backbone (frozen, or LoRA) -> DPT pooled feature -> ``mlp`` -> ``P`` normalised parameters. Training follows FTRL:

* labels normalised ``(y - mean) / (std + 1e-8)`` with the column mean and population std of the training labels
  (stored as ``normalization/param_mean.npy`` / ``param_std.npy``), plus Gaussian label noise (0.01);
* loss = mean over batch and parameters of ``w_j * (pred - label)**2``, ``w`` the planner's loss weights
  (``planner_configs``: :data:`LOSS_WEIGHTS`);
* AdamW, linear warm-up (3 %) then cosine decay, no weight decay.

Differences, for a CPU and small data: the learning rate and batch size are the caller's (FTRL: 2e-5, 8, one epoch
on 200k samples), gradients are clipped, and a validation split (by episode when ``groups`` are given) measures the
weighted MSE before and after training against the predict-the-mean baseline (the normalised label is 0 for the
training mean, so that baseline's loss is the weighted variance of the validation labels).

The result is written in the FTRL layout (:func:`save_sft_checkpoint`), which ``VLMDPTExtractor(backbone=<dir>)``,
``VLMTD3Policy(backbone=<dir>)``, ``sb3-vlm train --vlm <dir>`` and ``sb3-vlm serve --checkpoint <dir>`` load.
Nothing here imports the simulator: data are arrays.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from tqdm.auto import tqdm

from sb3_vlm._constants import TINY
from sb3_vlm.formats.checkpoint import write_checkpoint
from sb3_vlm.model.extractor import VLMDPTExtractor

__all__ = [
    "LOSS_WEIGHTS",
    "NORM_EPS",
    "SFTConfig",
    "SFTDataset",
    "SFTResult",
    "evaluate",
    "make_sft_extractor",
    "normalization_stats",
    "normalize",
    "save_sft_checkpoint",
    "split_train_val",
    "train_sft",
    "weighted_mse",
]

NORM_EPS = 1e-8
"""FTRL's epsilon of the label normalisation ``(y - mean) / (std + eps)``."""

LOSS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "DWA": (1.0, 1.0, 0.75, 0.75, 0.75, 0.75, 1.25, 1.0, 1.0),
    "TEB": (1.25, 1.0, 0.75, 0.75, 1.0, 1.25, 1.25, 1.0, 1.0),
    "MPPI": (1.0, 1.0, 0.75, 0.75, 1.0, 1.0, 0.75, 1.25, 1.0, 1.0),
    "DDP": (1.0, 1.0, 0.75, 0.75, 1.25, 1.25, 1.0, 1.0),
}
"""Per-parameter loss weights of FTRL's ``planner_configs`` (ftrl_reference §2.7): the planner's parameters followed
by ``next_linear_vel`` and ``next_angular_vel``. A head without the two velocities uses the leading entries."""


@dataclass
class SFTDataset:
    """
    (scene image, planner parameters) pairs.

    :param images: ``[N, 3, H, W]`` uint8, channel-first (what the extractor sees after SB3's ``VecTransposeImage``).
    :param labels: ``[N, P]`` targets in physical units (float).
    :param groups: ``[N]`` int episode id of each pair, or None; the validation split keeps episodes whole.
    :param names: The ``P`` parameter names, or None.
    :param prompts: ``[N]`` str: the prompt each label was searched for (:mod:`sb3_vlm.sft.prompts`), or None.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    prompts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.float64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"SFTDataset: images must be uint8 [N, 3, H, W], got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.ndim != 2 or len(self.labels) != len(self.images):
            raise ValueError(
                f"SFTDataset: labels must be [N, P] with N = {len(self.images)} images, got {self.labels.shape}"
            )
        if not np.all(np.isfinite(self.labels)):
            raise ValueError("SFTDataset: labels must be finite, got NaN or inf")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != (len(self.images),):
                raise ValueError(f"SFTDataset: groups must be [N] = [{len(self.images)}], got {self.groups.shape}")
        if self.prompts is not None:
            self.prompts = np.asarray(self.prompts, dtype=np.str_)
            if self.prompts.shape != (len(self.images),):
                raise ValueError(f"SFTDataset: prompts must be [N] = [{len(self.images)}], got {self.prompts.shape}")
        if self.names is not None:
            self.names = tuple(str(n) for n in self.names)
            if len(self.names) != self.labels.shape[1]:
                raise ValueError(
                    f"SFTDataset: {self.labels.shape[1]} label columns but {len(self.names)} names: {self.names}"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_params(self) -> int:
        """``P``, the label columns."""
        return int(self.labels.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the arrays to a ``.npz`` file (no pickle) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"images": self.images, "labels": self.labels}
        if self.groups is not None:
            arrays["groups"] = self.groups
        if self.names is not None:
            arrays["names"] = np.array(self.names, dtype=np.str_)
        if self.prompts is not None:
            arrays["prompts"] = self.prompts
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> SFTDataset:
        """Read a file written by :meth:`save` (``allow_pickle=False``), or FTRL's SFT data (a ``.json``, a
        ``data.csv`` or a directory of ``actor_*/data.csv``, see :mod:`sb3_vlm.formats.ftrl_sft`), its images
        resized to ``image_size`` ``(H, W)``."""
        if Path(path).suffix != ".npz":
            from sb3_vlm.formats.ftrl_sft import read_ftrl_sft

            if image_size is None:
                raise ValueError(f"SFTDataset.load: FTRL SFT data {path} needs the image_size to resize to")
            ftrl = read_ftrl_sft(path, image_size)
            return cls(ftrl.images, ftrl.labels, ftrl.groups, ftrl.names)
        with np.load(path, allow_pickle=False) as data:
            names = tuple(data["names"].tolist()) if "names" in data else None
            groups = data["groups"] if "groups" in data else None
            prompts = data["prompts"] if "prompts" in data else None
            return cls(data["images"], data["labels"], groups, names, prompts)


@dataclass
class SFTConfig:
    """Hyper-parameters of :func:`train_sft` (FTRL's values where they fit a CPU run, see the module docstring)."""

    epochs: int = field(default=3, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=64, metadata={"help": "pairs per optimiser step (FTRL: 8)"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate (FTRL: 2e-5)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (FTRL: 0)"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "fraction of the steps with a linear warm-up"})
    label_noise_std: float = field(default=0.01, metadata={"help": "Gaussian noise on normalised labels (FTRL)"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of the pairs (episodes) held out"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "gradient clipping (None: off)"})
    seed: int = field(default=0, metadata={"help": "split, shuffling, dropout and label-noise seed"})
    progress_bar: bool = field(default=True, metadata={"help": "tqdm bar over the optimiser steps"})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SFTConfig: {name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"SFTConfig: lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"SFTConfig: warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"SFTConfig: val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.weight_decay < 0 or self.label_noise_std < 0:
            raise ValueError(
                f"SFTConfig: weight_decay and label_noise_std must be >= 0, got {self.weight_decay}, "
                f"{self.label_noise_std}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"SFTConfig: max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


@dataclass
class SFTResult:
    """
    What :func:`train_sft` measured. Losses are the weighted MSE in normalised units; MAEs are in physical units.

    :param val_mse_before: Validation loss of the model before training.
    :param val_mse_after: Validation loss after training.
    :param val_mse_mean_baseline: Validation loss of predicting the training mean (normalised 0).
    :param val_mae: Per-parameter validation MAE after training (name -> value).
    :param val_mae_mean_baseline: Per-parameter validation MAE of predicting the training mean.
    :param train_loss: Mean training loss of each epoch (with label noise and dropout).
    :param val_mse: Validation loss after each epoch.
    :param n_train: Training pairs.
    :param n_val: Validation pairs.
    :param steps: Optimiser steps.
    :param seconds: Wall time of the training (evaluations included).
    :param param_mean: Label mean ``[P]`` of the training split (float64).
    :param param_std: Label std ``[P]`` (ddof 0) of the training split (float64).
    """

    val_mse_before: float
    val_mse_after: float
    val_mse_mean_baseline: float
    val_mae: dict[str, float]
    val_mae_mean_baseline: dict[str, float]
    train_loss: list[float]
    val_mse: list[float]
    n_train: int
    n_val: int
    steps: int
    seconds: float
    param_mean: np.ndarray
    param_std: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metrics (the statistics are in the checkpoint's ``normalization/``, not repeated here)."""
        data = asdict(self)
        del data["param_mean"], data["param_std"]
        return data


def normalization_stats(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    FTRL's label statistics.

    :param labels: ``[N, P]`` physical values.
    :return: Column mean and population std (ddof 0), each ``[P]`` float64.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"normalization_stats: labels must be a non-empty [N, P] array, got shape {labels.shape}")
    return labels.mean(axis=0), labels.std(axis=0)


def normalize(labels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(labels - mean) / (std + NORM_EPS)``: ``[N, P]`` physical -> ``[N, P]`` float32 normalised."""
    return ((np.asarray(labels, dtype=np.float64) - mean) / (std + NORM_EPS)).astype(np.float32)


def weighted_mse(pred: th.Tensor, target: th.Tensor, weights: th.Tensor | None = None) -> th.Tensor:
    """
    FTRL's regression loss: mean over batch and parameters of ``w_j * (pred - target)**2``.

    :param pred: ``[B, P]`` normalised predictions.
    :param target: ``[B, P]`` normalised labels.
    :param weights: ``[P]`` loss weights, or None (plain MSE).
    :return: Scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"weighted_mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    squared = (pred - target) ** 2
    if weights is not None:
        squared = squared * weights
    return squared.mean()


def split_train_val(
    n: int, val_fraction: float, groups: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """
    Random train/validation split of ``n`` pairs; with ``groups`` whole groups (episodes) go to one side, so
    near-duplicate consecutive frames never straddle the split.

    :param n: Number of pairs (>= 2).
    :param val_fraction: Target fraction of pairs in the validation split, in (0, 1).
    :param groups: ``[n]`` group id per pair, or None.
    :param seed: RNG seed.
    :return: Sorted train and validation indices, both non-empty.
    """
    if n < 2:
        raise ValueError(f"split_train_val needs at least 2 pairs, got {n}")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_val = min(max(1, round(n * val_fraction)), n - 1)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    ids = rng.permutation(np.unique(groups))
    if len(ids) < 2:
        raise ValueError(f"split_train_val: a split by group needs at least 2 groups, got {len(ids)}")
    sizes = np.array([np.count_nonzero(groups == g) for g in ids])
    # Smallest prefix of the shuffled groups that reaches the target, keeping at least one group for training.
    k = int(np.searchsorted(np.cumsum(sizes), n * val_fraction)) + 1
    val = np.isin(groups, ids[: min(max(k, 1), len(ids) - 1)])
    return np.flatnonzero(~val), np.flatnonzero(val)


def make_sft_extractor(
    image_shape: Sequence[int],
    num_params: int,
    backbone: str | os.PathLike = TINY,
    lora: Mapping[str, Any] | None = None,
    feature_cache_bytes: int = 0,
    **kwargs: Any,
) -> VLMDPTExtractor:
    """
    A :class:`VLMDPTExtractor` set up for SFT: trainable DPT head, frozen VLM (or a fresh trainable LoRA).

    :param image_shape: ``(3, H, W)`` of the uint8 images.
    :param num_params: ``P`` of a fresh head (ignored when ``backbone`` is an FTRL checkpoint).
    :param backbone: ``"tiny"``, a local Qwen2.5-VL directory, or an FTRL checkpoint to continue from.
    :param lora: ``LoraConfig`` kwargs (e.g. ``dict(r=8, lora_alpha=8)``) to train LoRA too, or None.
    :param feature_cache_bytes: With a frozen VLM, cache the backbone's hidden states (each image passes it once).
    :param kwargs: Other :class:`VLMDPTExtractor` arguments (``image_size``, ``planner``, ``dtype``...). The tiny
        backbone's weight seed stays the extractor's default: every loader of the checkpoint rebuilds the same base.
    :return: The extractor, in eval mode.
    """
    space = spaces.Box(0, 255, shape=tuple(int(s) for s in image_shape), dtype=np.uint8)
    return VLMDPTExtractor(
        space,
        backbone=backbone,
        freeze_vlm=lora is None,
        freeze_dpt=False,
        lora=lora,
        num_params=num_params,
        feature_cache_bytes=feature_cache_bytes if lora is None else 0,
        **kwargs,
    )


def _predict(extractor: VLMDPTExtractor, images: th.Tensor, prompts: np.ndarray | None = None) -> th.Tensor:
    """Normalised SFT predictions ``[B, P]``: the extractor's pooled feature (of the images with their prompts, if
    any) through the head's ``mlp``."""
    return extractor.dpt.mlp(extractor(images, prompts=None if prompts is None else prompts.tolist()))


@th.no_grad()
def evaluate(
    extractor: VLMDPTExtractor,
    images: np.ndarray,
    targets: np.ndarray,
    weights: th.Tensor | None = None,
    batch_size: int = 64,
    prompts: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """
    Weighted MSE of the extractor's SFT head on normalised targets, in eval mode (its mode is restored).

    :param extractor: The model.
    :param images: ``[N, 3, H, W]`` uint8.
    :param targets: ``[N, P]`` normalised labels.
    :param weights: ``[P]`` loss weights or None.
    :param batch_size: Images per forward pass.
    :param prompts: ``[N]`` prompt texts of a prompt-conditioned model, or None.
    :return: The loss (mean over pairs and parameters) and the predictions ``[N, P]`` (normalised, float32).
    """
    was_training = extractor.training
    extractor.train(False)
    try:
        preds = [
            _predict(extractor, th.from_numpy(images[i : i + batch_size]), _rows(prompts, i, batch_size)).numpy()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        extractor.train(was_training)
    pred = np.concatenate(preds).astype(np.float32)
    loss = weighted_mse(th.from_numpy(pred), th.from_numpy(np.asarray(targets, dtype=np.float32)), weights)
    return float(loss), pred


def _rows(prompts: np.ndarray | None, start: int, size: int) -> np.ndarray | None:
    return None if prompts is None else prompts[start : start + size]


def _loss_weights(weights: Sequence[float] | None, num_params: int) -> th.Tensor | None:
    if weights is None:
        return None
    w = th.as_tensor(np.asarray(weights, dtype=np.float32))
    if w.shape != (num_params,) or not bool(th.all(w >= 0)):
        raise ValueError(f"loss_weights must be {num_params} non-negative numbers, got {list(np.asarray(weights))}")
    return w


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` (HF's ``cosine`` schedule)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train_sft(
    extractor: VLMDPTExtractor,
    data: SFTDataset,
    loss_weights: Sequence[float] | None = None,
    config: SFTConfig | None = None,
) -> SFTResult:
    """
    Train the extractor's DPT head (and LoRA, if it has trainable LoRA) on ``data`` with FTRL's weighted MSE, in
    place. Afterwards ``extractor.param_mean`` / ``param_std`` hold the training-label statistics, so
    ``extractor.predict_parameters`` returns physical values and :func:`save_sft_checkpoint` writes them.

    :param extractor: Model from :func:`make_sft_extractor`; its head must predict ``data.num_params`` values.
    :param data: Pairs; images must match the extractor's observation space.
    :param loss_weights: ``[P]`` weights (e.g. ``LOSS_WEIGHTS["DWA"]``), or None for plain MSE.
    :param config: Hyper-parameters (defaults: :class:`SFTConfig`).
    :return: Metrics and statistics.
    """
    config = config or SFTConfig()
    if extractor.dpt.num_params != data.num_params:
        raise ValueError(
            f"train_sft: the head predicts {extractor.dpt.num_params} values but the labels have {data.num_params} "
            "columns; build the extractor with num_params=data.num_params"
        )
    space = extractor._observation_space
    if not isinstance(space, spaces.Box):
        raise TypeError(f"train_sft needs an extractor on image observations (a Box), got {space}")
    expected = tuple(space.shape)
    if tuple(data.images.shape[1:]) != expected:
        raise ValueError(f"train_sft: images must be [N, {', '.join(map(str, expected))}], got {data.images.shape}")
    weights = _loss_weights(loss_weights, data.num_params)
    trainable = [p for p in extractor.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("train_sft: the extractor has no trainable parameter (freeze_dpt=True and no LoRA)")
    names = data.names or tuple(f"param_{j}" for j in range(data.num_params))

    start = time.perf_counter()
    train_idx, val_idx = split_train_val(len(data), config.val_fraction, data.groups, config.seed)
    mean, std = normalization_stats(data.labels[train_idx])
    targets = normalize(data.labels, mean, std)
    val_images, val_targets = data.images[val_idx], targets[val_idx]
    val_prompts = None if data.prompts is None else data.prompts[val_idx]
    baseline = float(weighted_mse(th.zeros(len(val_idx), data.num_params), th.from_numpy(val_targets), weights))
    before, _ = evaluate(extractor, val_images, val_targets, weights, config.batch_size, val_prompts)

    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = th.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = th.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, math.ceil(total * config.warmup_ratio)))
    generator = th.Generator().manual_seed(config.seed)
    train_loss: list[float] = []
    val_curve: list[float] = []
    pred = np.zeros_like(val_targets)
    bar = tqdm(total=total, desc="sft", unit="step", disable=not config.progress_bar)
    # Dropout draws from the global torch RNG: seed it for this run without leaving a trace outside.
    with th.random.fork_rng(devices=[]):
        th.manual_seed(config.seed)
        extractor.train(True)
        try:
            for _ in range(config.epochs):
                order = train_idx[th.randperm(len(train_idx), generator=generator).numpy()]
                losses = []
                for k in range(0, len(order), config.batch_size):
                    batch = order[k : k + config.batch_size]
                    target = th.from_numpy(targets[batch])
                    if config.label_noise_std > 0:
                        target = target + config.label_noise_std * th.randn(target.shape, generator=generator)
                    prompts = None if data.prompts is None else data.prompts[batch]
                    pred = _predict(extractor, th.from_numpy(data.images[batch]), prompts)
                    loss = weighted_mse(pred, target, weights)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.max_grad_norm is not None:
                        th.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    losses.append(loss.item())
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                train_loss.append(float(np.mean(losses)))
                val_loss, pred = evaluate(extractor, val_images, val_targets, weights, config.batch_size, val_prompts)
                val_curve.append(val_loss)
                bar.set_postfix(loss=f"{train_loss[-1]:.4f}", val=f"{val_curve[-1]:.4f}")
        finally:
            extractor.train(False)
            bar.close()

    denorm = pred.astype(np.float64) * std + mean
    truth = data.labels[val_idx]
    extractor.param_mean, extractor.param_std = mean, std
    return SFTResult(
        val_mse_before=before,
        val_mse_after=val_curve[-1],
        val_mse_mean_baseline=baseline,
        val_mae=dict(zip(names, np.abs(denorm - truth).mean(axis=0).tolist(), strict=True)),
        val_mae_mean_baseline=dict(zip(names, np.abs(mean - truth).mean(axis=0).tolist(), strict=True)),
        train_loss=train_loss,
        val_mse=val_curve,
        n_train=len(train_idx),
        n_val=len(val_idx),
        steps=total,
        seconds=time.perf_counter() - start,
        param_mean=mean,
        param_std=std,
    )


def save_sft_checkpoint(
    extractor: VLMDPTExtractor, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> Path:
    """
    Write the extractor in the FTRL layout, atomically: PEFT adapter (if it has LoRA), ``regression_head/``,
    ``normalization/`` and ``sb3_vlm_config.json`` (``base_model`` + ``metadata`` under the key ``"sft"``).

    :param extractor: A trained extractor (:func:`train_sft` sets its normalisation statistics).
    :param path: Target directory (created or replaced).
    :param metadata: JSON-able facts about the run (metrics, data, hyper-parameters), or None.
    :return: ``path``.
    """
    if extractor.param_mean is None or extractor.param_std is None:
        raise ValueError("save_sft_checkpoint: the extractor has no param_mean/param_std; run train_sft first")
    parts = extractor.checkpoint_parts()
    if metadata is not None:
        parts.config["sft"] = dict(metadata)
    save_adapter = extractor.backbone.save_adapter if extractor.backbone.has_adapter else None
    return write_checkpoint(path, parts, save_adapter=save_adapter)
