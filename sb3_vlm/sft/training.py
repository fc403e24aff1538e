"""Supervised stage (FTRL's SFT, docs/compat/ftrl.md §2.7, §3): regress planner parameters from scene images with
FTRL's normalised, weighted MSE and write the FTRL checkpoint layout (docs/guide/supervised.md "Training"). Imports no
simulator: data are arrays (:class:`~sb3_vlm.sft.data.SFTDataset`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from tqdm.auto import tqdm

from sb3_vlm._validation import check_int, check_positive
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.sft.data import SFTDataset, normalization_stats, normalize, split_train_val
from sb3_vlm.sft.regression import (
    LOSS_WEIGHTS,
    evaluate,
    make_sft_extractor,
    predict,
    save_sft_checkpoint,
    weighted_mse,
)

__all__ = [
    "LOSS_WEIGHTS",
    "SFTConfig",
    "SFTResult",
    "evaluate",
    "make_sft_extractor",
    "save_sft_checkpoint",
    "train_sft",
    "weighted_mse",
]


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
            check_int(getattr(self, name), name, owner="SFTConfig")
        check_positive(self.lr, "lr", owner="SFTConfig")
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


def _loss_weights(weights: Sequence[float] | None, num_params: int) -> th.Tensor | None:
    if weights is None:
        return None
    w = th.as_tensor(np.asarray(weights, dtype=np.float32))
    if w.shape != (num_params,) or not bool(th.all(w >= 0)):
        raise ValueError(f"loss_weights must be {num_params} non-negative numbers, got {list(np.asarray(weights))}")
    return w


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
    trainable = _trainable_parameters(extractor, data)
    weights = _loss_weights(loss_weights, data.num_params)
    names = data.names or tuple(f"param_{j}" for j in range(data.num_params))

    start = time.perf_counter()
    train_idx, val_idx = split_train_val(len(data), config.val_fraction, data.groups, config.seed)
    mean, std = normalization_stats(data.labels[train_idx])
    targets = normalize(data.labels, mean, std)
    val_prompts = None if data.prompts is None else data.prompts[val_idx]
    val = _Validation(data.images[val_idx], targets[val_idx], weights, config.batch_size, val_prompts)
    baseline = float(weighted_mse(th.zeros(len(val_idx), data.num_params), th.from_numpy(val.targets), weights))
    before, _ = val.evaluate(extractor)
    trainer = _Trainer(extractor, data, targets, weights, trainable, len(train_idx), config)
    train_loss, val_curve, pred = trainer.run(train_idx, val)
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
        steps=trainer.total_steps,
        seconds=time.perf_counter() - start,
        param_mean=mean,
        param_std=std,
    )


def _trainable_parameters(extractor: VLMDPTExtractor, data: SFTDataset) -> list[th.nn.Parameter]:
    """The parameters :func:`train_sft` updates, once the extractor is checked against the data."""
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
    trainable = [p for p in extractor.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("train_sft: the extractor has no trainable parameter (freeze_dpt=True and no LoRA)")
    return trainable


@dataclass
class _Validation:
    """The validation split of :func:`train_sft` (normalised targets)."""

    images: np.ndarray
    targets: np.ndarray
    weights: th.Tensor | None
    batch_size: int
    prompts: np.ndarray | None

    def evaluate(self, extractor: VLMDPTExtractor) -> tuple[float, np.ndarray]:
        """The loss on the split and the predictions (see :func:`evaluate`)."""
        return evaluate(extractor, self.images, self.targets, self.weights, self.batch_size, self.prompts)


class _Trainer:
    """The optimiser side of :func:`train_sft`: AdamW with linear warm-up and cosine decay over every step, label
    noise, gradient clipping."""

    def __init__(
        self,
        extractor: VLMDPTExtractor,
        data: SFTDataset,
        targets: np.ndarray,
        weights: th.Tensor | None,
        trainable: list[th.nn.Parameter],
        n_train: int,
        config: SFTConfig,
    ):
        self.extractor, self.data, self.targets, self.weights = extractor, data, targets, weights
        self.trainable, self.config = trainable, config
        self.total_steps = math.ceil(n_train / config.batch_size) * config.epochs
        self.optimizer = th.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
        # Imported here: transformers.optimization pulls in peft and bitsandbytes, which `sb3-vlm pretrain --help`
        # avoids.
        from transformers import get_cosine_schedule_with_warmup

        warmup = math.ceil(self.total_steps * config.warmup_ratio)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        self.generator = th.Generator().manual_seed(config.seed)

    def run(self, train_idx: np.ndarray, val: _Validation) -> tuple[list[float], list[float], np.ndarray]:
        """``config.epochs`` epochs on ``train_idx``, each followed by a validation; the mean training loss and the
        validation loss of every epoch, and the last validation predictions. The extractor ends in eval mode."""
        config, extractor = self.config, self.extractor
        train_loss, val_curve = [], []
        bar = tqdm(total=self.total_steps, desc="sft", unit="step", disable=not config.progress_bar)
        # Dropout draws from the global torch RNG: seed it for this run without leaving a trace outside.
        with th.random.fork_rng(devices=[]):
            th.manual_seed(config.seed)
            extractor.train(True)
            try:
                for _ in range(config.epochs):
                    train_loss.append(self.epoch(train_idx, bar))
                    val_loss, pred = val.evaluate(extractor)
                    val_curve.append(val_loss)
                    bar.set_postfix(loss=f"{train_loss[-1]:.4f}", val=f"{val_curve[-1]:.4f}")
            finally:
                extractor.train(False)
                bar.close()
        return train_loss, val_curve, pred

    def epoch(self, train_idx: np.ndarray, bar: Any) -> float:
        """One pass over ``train_idx`` in a fresh order; the mean training loss."""
        order = train_idx[th.randperm(len(train_idx), generator=self.generator).numpy()]
        losses = []
        for k in range(0, len(order), self.config.batch_size):
            losses.append(self.step(order[k : k + self.config.batch_size]))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        return float(np.mean(losses))

    def step(self, batch: np.ndarray) -> float:
        """One optimiser step on the pairs ``batch``; its loss."""
        config, data = self.config, self.data
        target = th.from_numpy(self.targets[batch])
        if config.label_noise_std > 0:
            target = target + config.label_noise_std * th.randn(target.shape, generator=self.generator)
        prompts = None if data.prompts is None else data.prompts[batch]
        loss = weighted_mse(predict(self.extractor, th.from_numpy(data.images[batch]), prompts), target, self.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()
