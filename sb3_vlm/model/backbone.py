"""Qwen2.5-VL backbone: images (+ velocity, + an optional text prompt) -> the last 4 hidden states, as FTRL feeds its
DPT head (docs/compat/ftrl.md §2.1); ``"tiny"`` (random weights, offline) or a local model directory
(docs/guide/training.md "On a GPU with a real Qwen2.5-VL"). Loading lives in :mod:`sb3_vlm.model.loading`, the input
pieces in :mod:`sb3_vlm.model.inputs` (their public names re-exported here). Nothing downloads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch as th
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from sb3_vlm._constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TINY
from sb3_vlm.model.inputs import (
    FTRL_SYSTEM_PROMPT,
    FTRL_USER_PROMPT,
    FTRL_USER_PROMPT_NO_VELOCITY,
    patchify,
    right_pad,
)
from sb3_vlm.model.loading import (
    LORA_DEFAULTS,
    build_tiny_model,
    ftrl_lora_targets,
    is_peft,
    load_adapter,
    load_base,
    load_tokenizer,
    resolve_dtype,
    tiny_config,
)

__all__ = [
    "FTRL_SYSTEM_PROMPT",
    "FTRL_USER_PROMPT",
    "FTRL_USER_PROMPT_NO_VELOCITY",
    "BackboneOutput",
    "VLMBackbone",
    "build_tiny_model",
    "check_prompts",
    "ftrl_lora_targets",
    "patchify",
    "tiny_config",
]

NUM_TAPS = 4


def check_prompts(prompts: Sequence[str], batch: int) -> None:
    """Raise ``ValueError`` unless ``prompts`` is a sequence of ``batch`` strings."""
    if isinstance(prompts, str) or len(prompts) != batch or not all(isinstance(p, str) for p in prompts):
        got = "a str" if isinstance(prompts, str) else f"{len(prompts)} items"
        raise ValueError(f"VLMBackbone: prompts must be a sequence of {batch} texts (one per image), got {got}")


class BackboneOutput(NamedTuple):
    """
    :param hidden_states: ``NUM_TAPS`` float32 tensors ``[B, L, H]``, low -> high (``hidden_states[-4:]``); the last
        one is the post-final-norm output.
    :param attention_mask: ``[B, L]`` long (1 real token, 0 right padding) when prompts of a batch have different
        lengths, else None.
    """

    hidden_states: list[th.Tensor]
    attention_mask: th.Tensor | None


class VLMBackbone(nn.Module):
    """
    A Qwen2.5-VL (optionally quantized, optionally with LoRA) that maps images to its last 4 hidden states.

    Build it with :meth:`from_pretrained`. One instance is shared by every network of a policy.

    :param model: ``Qwen2_5_VLForConditionalGeneration`` or a ``PeftModel`` around one.
    :param source: ``"tiny"`` or the local directory the base model came from (recorded for reloading).
    :param tokenizer: Tokenizer of a real checkpoint, or None (hand-built vision-only input ids).
    :param planner: Planner name in the prompt (``Target local planner: DWA``).
    :param image_size: ``(height, width)`` every image is resized to (multiples of 28), or None.
    :param adapter_source: Directory of an adapter that was merged into the weights (copied on save), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        source: str,
        tokenizer: Any = None,
        planner: str = "DWA",
        image_size: tuple[int, int] | None = None,
        adapter_source: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.model = model
        self.source = source
        self.tokenizer = tokenizer
        self.planner = planner.upper()
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.adapter_source = None if adapter_source is None else Path(adapter_source)
        self.config: Qwen2_5_VLConfig = self._base_model().config
        self._prompt_prefix: list[int] | None = None

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike = TINY,
        *,
        dtype: str | th.dtype = "float32",
        quantization: str | None = None,
        lora: Mapping[str, Any] | None = None,
        adapter: str | os.PathLike | None = None,
        adapter_trainable: bool = False,
        planner: str = "DWA",
        image_size: tuple[int, int] | None = None,
        seed: int = 0,
    ) -> VLMBackbone:
        """
        Load the base model and attach LoRA. Base weights are always frozen.

        :param source: ``"tiny"`` or a local directory with ``config.json`` and weights (optionally a tokenizer).
        :param dtype: ``"float32"`` or ``"bfloat16"`` (compute dtype under quantization).
        :param quantization: ``"nf4"``, ``"int8"`` or None (bitsandbytes; the vision tower stays unquantized).
        :param lora: ``LoraConfig`` keyword arguments for a fresh, trainable LoRA; missing keys take FTRL's values
            (r=128, alpha=64, dropout 0.05, every Linear of the model except ``lm_head``). None: no fresh LoRA.
        :param adapter: Directory with ``adapter_config.json`` + ``adapter_model.safetensors`` to load, or None.
        :param adapter_trainable: Keep a loaded adapter as trainable LoRA (True) or merge it into the weights (False).
        :param planner: Planner name used in the prompt of tokenizer-equipped models.
        :param image_size: ``(height, width)`` to resize images to, multiples of 28; None: processor size rule.
        :param seed: Weight seed of the tiny model.
        :return: The backbone, in eval mode.
        """
        if lora is not None and adapter is not None:
            raise ValueError("VLMBackbone: pass either a fresh `lora` config or an `adapter` directory, got both")
        torch_dtype = resolve_dtype(dtype)
        source = str(source)
        model = load_base(source, torch_dtype, quantization, seed)
        tokenizer = load_tokenizer(source)
        model.requires_grad_(False)
        adapter_source = None
        if adapter is not None:
            model = load_adapter(model, Path(adapter), source, trainable=adapter_trainable)
            adapter_source = None if adapter_trainable else adapter
        elif lora is not None:
            kwargs = {**LORA_DEFAULTS, **dict(lora)}
            kwargs.setdefault("target_modules", ftrl_lora_targets(model))
            from peft import LoraConfig, get_peft_model  # imported on use: peft imports bitsandbytes (slow, noisy)

            model = get_peft_model(model, LoraConfig(**kwargs))
        backbone = cls(model, source, tokenizer, planner=planner, image_size=image_size, adapter_source=adapter_source)
        return backbone.eval()

    def _base_model(self) -> Qwen2_5_VLForConditionalGeneration:
        return self.model.get_base_model() if is_peft(self.model) else self.model

    @property
    def hidden_size(self) -> int:
        """Hidden size ``H`` of the language model."""
        return int(self.config.text_config.hidden_size)

    @property
    def dtype(self) -> th.dtype:
        """Compute dtype of the vision tower (the dtype pixel values are cast to)."""
        return self._base_model().model.visual.dtype

    @property
    def has_lora(self) -> bool:
        """Whether LoRA weights are separate (unmerged) modules, i.e. savable as an adapter."""
        return is_peft(self.model)

    @property
    def has_adapter(self) -> bool:
        """Whether :meth:`save_adapter` writes anything (unmerged LoRA, or a merged adapter's source files)."""
        return self.has_lora or self.adapter_source is not None

    def lora_parameter_names(self) -> set[str]:
        """Names (relative to this module) of the LoRA parameters; empty without unmerged LoRA."""
        return {n for n, _ in self.named_parameters() if "lora_" in n} if self.has_lora else set()

    def save_adapter(self, directory: str | os.PathLike) -> None:
        """
        Write ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT format, FTRL-loadable) into ``directory``.

        :param directory: Existing directory.
        """
        directory = Path(directory)
        if self.has_lora:
            # save_embedding_layers=False: PEFT's "auto" would look the base model up on the Hub.
            self.model.save_pretrained(directory, save_embedding_layers=False)
        elif self.adapter_source is not None:
            for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                shutil.copy2(self.adapter_source / name, directory / name)
        else:
            raise ValueError("VLMBackbone.save_adapter: this backbone has no LoRA adapter, got a plain base model")

    def build_inputs(
        self, images: th.Tensor, velocity: th.Tensor | None = None, prompts: Sequence[str] | None = None
    ) -> dict[str, th.Tensor | None]:
        """
        Model inputs for a batch of images.

        :param images: ``[B, 3, H, W]``, uint8 or float in [0, 1].
        :param velocity: ``[B, 2]`` robot ``[v (m/s), w (rad/s)]`` or None; only used with a tokenizer.
        :param prompts: ``B`` instruction texts (one per image) or None. With a tokenizer each is appended to FTRL's
            user turn; the tiny model reads its UTF-8 bytes as token ids after the image.
        :return: ``input_ids [B, L]``, ``attention_mask [B, L]`` or None, ``pixel_values``, ``image_grid_thw``,
            ``mm_token_type_ids [B, L]`` (required by transformers 5 for 3-D mRoPE positions).
        """
        batch = images.shape[0]
        if prompts is not None:
            check_prompts(prompts, batch)
        vision = self.config.vision_config
        pixel_values, grid = patchify(
            images,
            size=self.image_size,
            patch_size=vision.patch_size,
            merge_size=vision.spatial_merge_size,
            temporal_patch_size=vision.temporal_patch_size,
        )
        n_tokens = int(grid[0].prod()) // vision.spatial_merge_size**2
        image_ids = [self.config.vision_start_token_id, *[self.config.image_token_id] * n_tokens]
        image_ids.append(self.config.vision_end_token_id)
        if self.tokenizer is None:
            tails = [[]] * batch if prompts is None else [self._byte_ids(p) for p in prompts]
            rows, pad_id = [image_ids + tail for tail in tails], 0  # padding (if any) is masked
        else:
            tails = self._user_ids(batch, velocity, prompts)
            rows = [self._prompt_ids() + image_ids + tail for tail in tails]
            pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, attention_mask = right_pad(rows, pad_id, images.device)
        return dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values.to(self.dtype),
            image_grid_thw=grid,
            mm_token_type_ids=(input_ids == self.config.image_token_id).int(),
        )

    def _byte_ids(self, prompt: str) -> list[int]:
        """The tiny model's "tokenizer": UTF-8 bytes, folded below the lowest special token id."""
        cfg = self.config
        limit = min(cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id)
        return [b % limit for b in prompt.encode("utf-8")]

    def _prompt_ids(self) -> list[int]:
        """Token ids before the image: ``<|im_start|>system\\n{SYSTEM}<|im_end|>\\n<|im_start|>user\\n``."""
        if self._prompt_prefix is None:
            text = f"<|im_start|>system\n{FTRL_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
            self._prompt_prefix = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._prompt_prefix

    def _user_ids(
        self, batch: int, velocity: th.Tensor | None, prompts: Sequence[str] | None = None
    ) -> list[list[int]]:
        """Token ids after the image: the user text (with the velocity when given, then the prompt) and
        ``<|im_end|>\n``."""
        if velocity is None:
            texts = [FTRL_USER_PROMPT_NO_VELOCITY.format(algorithm=self.planner)] * batch
        else:
            if velocity.shape != (batch, 2):
                raise ValueError(f"velocity must be [B, 2] = [v, w] with B={batch}, got {tuple(velocity.shape)}")
            texts = [
                FTRL_USER_PROMPT.format(linear_vel=v, angular_vel=w, algorithm=self.planner)
                for v, w in velocity.double().tolist()
            ]
        if prompts is not None:
            texts = [f"{text}\n\nInstruction: {prompt}" for text, prompt in zip(texts, prompts, strict=True)]
        return self.tokenizer([t + "<|im_end|>\n" for t in texts], add_special_tokens=False)["input_ids"]

    def forward(
        self, images: th.Tensor, velocity: th.Tensor | None = None, prompts: Sequence[str] | None = None
    ) -> BackboneOutput:
        """
        :param images: ``[B, 3, H, W]``, uint8 or float in [0, 1].
        :param velocity: ``[B, 2]`` ``[v, w]`` or None (ignored without a tokenizer).
        :param prompts: ``B`` instruction texts or None (see :meth:`build_inputs`).
        :return: The last 4 hidden states (float32) and the padding mask.
        """
        inputs = self.build_inputs(images, velocity, prompts)
        # The inner Qwen2_5_VLModel (no lm_head); LoRA layers are injected in place, so they run here too.
        outputs = self._base_model().model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        hidden = [h.float() for h in outputs.hidden_states[-NUM_TAPS:]]
        return BackboneOutput(hidden, inputs["attention_mask"])
