"""Build a tiny supervised checkpoint in the FTRL layout, written the way FTRL writes it (PEFT + torch.save + np.save).

The pieces are real: a PEFT LoRA on the tiny Qwen2.5-VL (with non-zero ``lora_B`` so the adapter matters), a DPT
head, a history encoder and normalisation statistics. The returned modules are the reference for tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch as th
from peft import LoraConfig, PeftModel, get_peft_model

from sb3_vlm.model.backbone import build_tiny_model
from sb3_vlm.model.heads import DPTHead, HistoryEncoder

HISTORY_IMAGE_SIZE = 56  # FTRL uses 224; small keeps the tests fast


@dataclass
class TinyCheckpoint:
    """A checkpoint on disk and the modules it was written from (eval mode)."""

    path: Path
    peft_model: PeftModel
    head: DPTHead
    history: HistoryEncoder | None
    param_mean: np.ndarray
    param_std: np.ndarray


def build_tiny_checkpoint(
    path: str | Path, num_params: int = 9, use_history: bool = True, lora_r: int = 4, seed: int = 0
) -> TinyCheckpoint:
    """
    Write ``adapter_config.json`` + ``adapter_model.safetensors``, ``regression_head/pytorch_model.bin``,
    ``history_encoder/pytorch_model.bin`` + ``history_config.json`` (if ``use_history``) and ``normalization/``.

    :param path: Directory to create.
    :param num_params: ``P`` of the head.
    :param use_history: Include a history encoder.
    :param lora_r: LoRA rank.
    :param seed: Seed of the head, encoder, LoRA and statistics (the base model is the tiny one of seed 0).
    :return: The path and the reference modules.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    base = build_tiny_model(seed=0)
    config = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "v_proj", "qkv"], lora_dropout=0.0)
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        peft_model = get_peft_model(base, config)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                th.nn.init.normal_(param, std=0.05)
        head = DPTHead(base.config.text_config.hidden_size, num_params, use_history=use_history)
        history = HistoryEncoder() if use_history else None
    peft_model.save_pretrained(path, save_embedding_layers=False)

    (path / "regression_head").mkdir()
    th.save(head.state_dict(), path / "regression_head" / "pytorch_model.bin")
    if history is not None:
        (path / "history_encoder").mkdir()
        th.save(history.state_dict(), path / "history_encoder" / "pytorch_model.bin")
        history_config = dict(use_history=True, num_history_frames=2, history_dim=256, history_image_size=56)
        (path / "history_config.json").write_text(json.dumps(history_config))

    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.5, 2.0, num_params)
    std = rng.uniform(0.1, 1.0, num_params)
    (path / "normalization").mkdir()
    np.save(path / "normalization" / "param_mean.npy", mean)
    np.save(path / "normalization" / "param_std.npy", std)
    return TinyCheckpoint(path, peft_model.eval(), head.eval(), None if history is None else history.eval(), mean, std)


def build_tiny_model_dir(path: str | Path, seed: int = 0) -> Path:
    """
    A local "real checkpoint" directory: the tiny Qwen2.5-VL of :func:`sb3_vlm.serving.chat.tiny_chat_model` saved
    with ``save_pretrained`` next to its byte-level tokenizer that knows Qwen's special tokens (ids 256..262), so the
    FTRL prompt path runs offline.

    :param path: Directory to create.
    :param seed: Weight seed.
    :return: ``path``.
    """
    from sb3_vlm.serving.chat import tiny_chat_model

    path = Path(path)
    model, tokenizer = tiny_chat_model(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
