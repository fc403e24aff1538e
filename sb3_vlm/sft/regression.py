"""The SFT regression (FTRL's supervised head): its loss weights and weighted MSE, the extractor set up for it, its
predictions and its checkpoint in the FTRL layout."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vlm._constants import TINY
from sb3_vlm.formats.checkpoint import write_checkpoint
from sb3_vlm.model.extractor import VLMDPTExtractor

__all__ = ["LOSS_WEIGHTS", "evaluate", "make_sft_extractor", "predict", "save_sft_checkpoint", "weighted_mse"]

LOSS_WEIGHTS: dict[str, tuple[float, ...]] = {
    "DWA": (1.0, 1.0, 0.75, 0.75, 0.75, 0.75, 1.25, 1.0, 1.0),
    "TEB": (1.25, 1.0, 0.75, 0.75, 1.0, 1.25, 1.25, 1.0, 1.0),
    "MPPI": (1.0, 1.0, 0.75, 0.75, 1.0, 1.0, 0.75, 1.25, 1.0, 1.0),
    "DDP": (1.0, 1.0, 0.75, 0.75, 1.25, 1.25, 1.0, 1.0),
}
"""Per-parameter loss weights of FTRL's ``planner_configs`` (docs/compat/ftrl.md §2.7): the planner's parameters
followed by ``next_linear_vel`` and ``next_angular_vel``. A head without the two velocities uses the leading entries."""


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


def predict(extractor: VLMDPTExtractor, images: th.Tensor, prompts: np.ndarray | None = None) -> th.Tensor:
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
            predict(extractor, th.from_numpy(images[i : i + batch_size]), _rows(prompts, i, batch_size)).numpy()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        extractor.train(was_training)
    pred = np.concatenate(preds).astype(np.float32)
    loss = weighted_mse(th.from_numpy(pred), th.from_numpy(np.asarray(targets, dtype=np.float32)), weights)
    return float(loss), pred


def _rows(prompts: np.ndarray | None, start: int, size: int) -> np.ndarray | None:
    return None if prompts is None else prompts[start : start + size]


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
