"""The flow policy on a supervised checkpoint: one VLM+DPT extractor, a flow-matching expert on its 256-d feature.

A checkpoint in the FTRL layout (``sb3-vlm pretrain``) gains a ``flow_head/`` subfolder (safetensors + JSON). The
expert models the same normalised parameters as the SFT regression head; actions are de-normalised with the
checkpoint's statistics (``a * std + mean``), as FTRL's server de-normalises the SFT head.

:func:`distill` loads the checkpoint's extractor *once*: the teacher and the student are two expert heads on that
one backbone (features computed once, vision encoder frozen), and only the student's expert trains.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_vlm.flow.head import FlowHeadConfig, FlowMatchingHead
from sb3_vlm.flow.reflow import REFLOW_FIT, FitConfig, fit, reflow
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.sft.data import SFTDataset, normalize

FLOW_DIR = "flow_head"
"""Subfolder of a supervised checkpoint holding its flow-matching expert."""
logger = logging.getLogger(__name__)


class FlowPolicy(nn.Module):
    """Extractor + flow expert: images ``[B, 3, H, W]`` uint8 -> planner parameters ``[B, P]`` (physical units).

    :param extractor: The VLM+DPT extractor of a supervised checkpoint (with its ``param_mean``/``param_std``).
    :param head: The expert; ``head.config.action_dim`` must equal the checkpoint's ``P``.
    """

    def __init__(self, extractor: VLMDPTExtractor, head: FlowMatchingHead) -> None:
        super().__init__()
        if extractor.param_mean is not None and len(extractor.param_mean) != head.config.action_dim:
            raise ValueError(
                f"flow head predicts {head.config.action_dim} parameters, the checkpoint's statistics have "
                f"{len(extractor.param_mean)}"
            )
        self.extractor, self.head = extractor, head

    @th.no_grad()
    def features(self, images: np.ndarray | th.Tensor, batch_size: int = 32) -> th.Tensor:
        """The extractor's pooled features ``[N, 256]`` of ``images [N, 3, H, W]`` uint8, in batches."""
        images = th.as_tensor(images)
        return th.cat([self.extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    @th.no_grad()
    def predict(self, images: np.ndarray | th.Tensor, num_steps: int | None = None, deterministic: bool = True):
        """Planner parameters ``[B, P]`` (physical): the flow from the fixed noise, or from fresh noise."""
        features = self.features(images)
        actions = self.head.act(features, num_steps) if deterministic else self.head.sample(features, None, num_steps)
        return self.extractor.denormalize(actions)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, image_shape: tuple[int, int, int]) -> FlowPolicy:
        """The checkpoint at ``path`` (FTRL layout + ``flow_head/``) for ``[3, H, W]`` images."""
        path = Path(path)
        if not (path / FLOW_DIR).is_dir():
            raise FileNotFoundError(f"{path}: no {FLOW_DIR}/ (train one with `sb3-vlm pretrain --head flow`)")
        space = spaces.Box(0, 255, shape=tuple(image_shape), dtype=np.uint8)
        extractor = VLMDPTExtractor(space, backbone=str(path)).eval()
        return cls(extractor, FlowMatchingHead.from_pretrained(path / FLOW_DIR))


def _targets(extractor: VLMDPTExtractor, dataset: SFTDataset) -> th.Tensor:
    """The dataset's labels normalised with the checkpoint's statistics ``[N, P]`` (float32)."""
    if extractor.param_mean is None:
        raise ValueError("the extractor has no normalisation statistics: train or load a supervised checkpoint first")
    if dataset.num_params != len(extractor.param_mean):
        raise ValueError(f"dataset has {dataset.num_params} label columns, the checkpoint {len(extractor.param_mean)}")
    return th.as_tensor(normalize(dataset.labels, extractor.param_mean, extractor.param_std), dtype=th.float32)


def train_flow_head(
    extractor: VLMDPTExtractor,
    dataset: SFTDataset,
    head_config: FlowHeadConfig | None = None,
    fit_config: FitConfig | None = None,
    out: str | os.PathLike | None = None,
) -> FlowPolicy:
    """Flow matching of a fresh expert on ``dataset`` over the extractor's (frozen) features.

    :param out: A supervised checkpoint directory: the expert goes to ``out/flow_head/``.
    """
    head_config = head_config or FlowHeadConfig(action_dim=dataset.num_params, feature_dim=extractor.features_dim)
    policy = FlowPolicy(extractor.eval(), FlowMatchingHead(head_config))
    features = policy.features(dataset.images)
    losses = fit(policy.head, features, _targets(extractor, dataset), fit_config)
    logger.info("flow head: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], len(losses))
    if out is not None:
        policy.head.save_pretrained(Path(out) / FLOW_DIR)
    return policy


def distill(
    teacher: FlowPolicy,
    dataset: SFTDataset,
    out: str | os.PathLike,
    fit_config: FitConfig | None = None,
    rounds: int = 1,
    teacher_path: str | os.PathLike | None = None,
    use_reflow: bool = True,
) -> FlowPolicy:
    """Reflow ``teacher``'s expert into a one-step student on the same extractor; write it as a checkpoint.

    :param teacher_path: The teacher's checkpoint directory, copied to ``out`` (its adapter, DPT head and
        statistics) before the student's ``flow_head/`` replaces the teacher's.
    :param fit_config: Optimisation of the student; default :data:`~sb3_vlm.flow.reflow.REFLOW_FIT`.
    :param use_reflow: False trains the student (still a copy of the teacher) by plain flow matching on the data
        instead of on the teacher's couplings: the baseline that shows what reflow adds.
    """
    total = sum(p.numel() for p in teacher.parameters())
    expert = sum(p.numel() for p in teacher.head.parameters())
    out = Path(out)
    if teacher_path is not None:
        shutil.copytree(teacher_path, out, dirs_exist_ok=True)
    features = teacher.features(dataset.images)
    fit_config = fit_config or REFLOW_FIT
    if use_reflow:
        head = reflow(teacher.head, features, fit_config, rounds, out=out / FLOW_DIR)
    else:
        head = copy.deepcopy(teacher.head).requires_grad_(True)
        fit(head, features, _targets(teacher.extractor, dataset), fit_config, out=out / FLOW_DIR)
    logger.info(
        "student: %d parameters in total, %d trainable (the expert, %.1f %%); one backbone shared with the teacher",
        total, expert, 100 * expert / total,
    )  # fmt: skip
    student = FlowPolicy(teacher.extractor, head)
    return student
