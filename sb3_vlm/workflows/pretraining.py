"""FTRL's supervised stage on the embedded simulator (what ``sb3-vlm pretrain`` runs).

1. :func:`sb3_vlm.sft.labels.generate_pairs`: pairs (scene image, good DWA parameters) by receding-horizon search
   over ``candidates`` parameter vectors every ``horizon`` steps of ``n_envs`` episodes that follow the search
   (or ``data``: pairs from a file).
2. :func:`sb3_vlm.sft.training.train_sft`: DPT head (+ LoRA with ``lora``) with FTRL's weighted MSE on normalised
   labels.
3. A checkpoint in the FTRL layout (``out``) that ``sb3-vlm train --vlm <out>`` starts from; its
   ``sb3_vlm_config.json`` records the base model and, under ``"sft"``, the data, settings and validation metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch as th

from sb3_vlm._constants import TINY
from sb3_vlm.sft.data import SFTDataset
from sb3_vlm.sft.labels import LabelSettings, generate_pairs
from sb3_vlm.sft.prompts import generate_prompt_pairs, load_prompts, report_prompts
from sb3_vlm.sft.training import (
    LOSS_WEIGHTS,
    SFTConfig,
    SFTResult,
    make_sft_extractor,
    save_sft_checkpoint,
    train_sft,
)

__all__ = ["PretrainSettings", "pretrain"]


@dataclass
class PretrainSettings:
    """
    One supervised run (the ``sb3-vlm pretrain`` options; the defaults are the ones chosen on held-out training
    worlds, see the README).

    :param out: Checkpoint directory to write (FTRL layout).
    :param samples: (image, parameters) pairs to generate (per prompt with ``prompts``).
    :param epochs: Training epochs. :param batch_size: Pairs per step. :param lr: Peak AdamW learning rate (cosine).
    :param lora: Train LoRA adapters too (rank ``lora_r``, alpha = rank). :param lora_r: LoRA rank.
    :param backbone: ``"tiny"``, a local Qwen2.5-VL directory or an FTRL checkpoint.
    :param barn_dir: Real BARN worlds directory, or None (generated worlds).
    :param worlds: ``"train"``/``"test"``/``"all"``, world ids, or None (the training worlds).
    :param seed: Seed of the rollouts, the candidates and training.
    :param image_size: ``(H, W)`` of the scene images (as ``sb3-vlm train``).
    :param library: ``"lhs"`` (``candidates`` Latin-hypercube vectors) or ``"grid"`` (speed x turning x inflation).
    :param candidates: Vectors of the ``lhs`` library (>= 2).
    :param horizon: 0.5 s steps of a search window (12: 6 s).
    :param n_envs: Episodes rolled out side by side.
    :param velocity_labels: Add FTRL's two velocity outputs to the labels.
    :param noise_replicas: Copies of each candidate under fresh noise (their mean return scores it).
    :param common_random_numbers: Every candidate of a replica draws the same fresh noise.
    :param temperature: Soft labels: the softmax(return / T)-weighted mean of the candidates; None: the best one.
    :param val_fraction: Episodes held out for validation.
    :param cache_mb: Hidden-state cache of a frozen VLM (MiB): each image passes the backbone once.
    :param data: Train on these pairs instead of generating them: a ``.npz`` (``save_data``), FTRL's SFT ``.json``, a
        ``data.csv`` or a directory of ``actor_*/data.csv`` (images resized to ``image_size``).
    :param save_data: Also write the generated pairs to this ``.npz``.
    :param head: ``"mse"``, or ``"flow"``: also a flow-matching expert in ``flow_head/``.
    :param flow_steps: Euler steps of the flow expert's sampler. :param flow_train_steps: Its gradient steps.
    :param prompts: Prompt file (:mod:`sb3_vlm.sft.prompts`): one checkpoint on several prompts, each pair labelled
        under its prompt's objective.
    :param progress_bar: Show progress bars.
    """

    out: Path
    samples: int = 6000
    epochs: int = SFTConfig.epochs
    batch_size: int = SFTConfig.batch_size
    lr: float = SFTConfig.lr
    lora: bool = False
    lora_r: int = 8
    backbone: str = TINY
    barn_dir: Path | None = None
    worlds: str | list[int] | None = None
    seed: int = 0
    image_size: tuple[int, int] = LabelSettings.image_size
    library: str = LabelSettings.library
    candidates: int = LabelSettings.candidates
    horizon: int = LabelSettings.horizon
    n_envs: int = LabelSettings.n_envs
    velocity_labels: bool = LabelSettings.velocity_labels
    noise_replicas: int = LabelSettings.noise_replicas
    common_random_numbers: bool = LabelSettings.common_random_numbers
    temperature: float | None = LabelSettings.temperature
    val_fraction: float = SFTConfig.val_fraction
    cache_mb: float = 1024
    data: Path | None = None
    save_data: Path | None = None
    head: str = "mse"
    flow_steps: int = 10
    flow_train_steps: int = 2000
    prompts: Path | None = None
    progress_bar: bool = True

    def label_settings(self) -> LabelSettings:
        """The label search of these settings: ``samples`` pairs (per prompt with ``prompts``)."""
        names = [f.name for f in fields(LabelSettings) if f.name not in ("n_samples", "reward")]
        return LabelSettings(self.samples, **{name: getattr(self, name) for name in names})


def pretrain(settings: PretrainSettings) -> Path:
    """Generate pairs (or load ``settings.data``), train, write the checkpoint; returns ``settings.out``."""
    th.manual_seed(settings.seed)  # fresh head weights
    data, data_stats = _pairs(settings)
    planner = "DWA"
    weights = LOSS_WEIGHTS[planner][: data.num_params]
    lora = dict(r=settings.lora_r, lora_alpha=settings.lora_r, lora_dropout=0.05) if settings.lora else None
    extractor = make_sft_extractor(
        data.images.shape[1:],
        data.num_params,
        backbone=settings.backbone,
        lora=lora,
        feature_cache_bytes=int(settings.cache_mb * 2**20),  # each image passes a frozen VLM once
        planner=planner,
    )
    training = {k: getattr(settings, k) for k in ("epochs", "batch_size", "lr", "val_fraction", "seed")}
    config = SFTConfig(progress_bar=settings.progress_bar, **training)
    result = train_sft(extractor, data, weights, config)
    _print_validation(result)
    metadata = {
        "planner": planner,
        "parameter_names": list(data.names or ()),
        "image_shape": list(data.images.shape[1:]),
        "loss_weights": list(weights),
        "lora": lora,
        "data": data_stats,
        "config": asdict(config),
        "metrics": result.to_dict(),
    }
    out = save_sft_checkpoint(extractor, settings.out, metadata)
    if data.prompts is not None:  # prompt-conditioned policy (issue 15)
        report_prompts(extractor, data, settings.prompts, out)
    print(f"checkpoint -> {out} (start TD3 from it: sb3-vlm train --vlm {out})")
    if settings.head == "flow":
        from sb3_vlm.flow import FitConfig, FlowHeadConfig
        from sb3_vlm.flow.policy import FLOW_DIR, train_flow_head

        head_config = FlowHeadConfig(action_dim=data.num_params, num_steps=settings.flow_steps)
        fit_config = FitConfig(steps=settings.flow_train_steps, seed=settings.seed)
        train_flow_head(extractor, data, head_config, fit_config, out=out)
        print(f"flow expert -> {out / FLOW_DIR} ({settings.flow_steps} Euler steps; distil it: sb3-vlm distill)")
    return out


def _pairs(settings: PretrainSettings) -> tuple[SFTDataset, dict[str, Any]]:
    """The pairs of the run (``settings.data``, or generated, per prompt with ``settings.prompts``, and saved to
    ``settings.save_data``) and what is recorded about them."""
    if settings.data is not None:
        return SFTDataset.load(settings.data, settings.image_size), {"source": str(settings.data)}
    if settings.prompts is not None:  # prompt-conditioned policy (issue 15)
        data, data_stats = generate_prompt_pairs(load_prompts(settings.prompts), settings.label_settings())
    else:
        data, data_stats = generate_pairs(settings.label_settings())
    barn_dir = None if settings.barn_dir is None else str(settings.barn_dir)
    data_stats.update(worlds=settings.worlds, barn_dir=barn_dir)
    print(
        f"generated {len(data)} pairs from {data_stats['episodes']} episodes in {data_stats['seconds']:.1f} s "
        f"(library choices {data_stats['chosen']}, defaults first; "
        f"{data_stats['skipped_ties']} states where all candidates tie skipped)"
    )
    if settings.save_data is not None:
        print(f"pairs -> {data.save(settings.save_data)}")
    return data, data_stats


def _print_validation(result: SFTResult) -> None:
    """The validation losses and errors of a supervised run, and a note when the head does not beat the mean."""
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
