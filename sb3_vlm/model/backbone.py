"""Qwen2.5-VL backbone: load (tiny offline model or a local directory), dtype, nf4/int8, LoRA, inputs, hidden states.

The backbone turns a batch of images ``[B, 3, H, W]`` (+ optional robot velocity) into the last 4 hidden states of
the language model, ``[B, L, H]`` each, low -> high, as FTRL feeds its DPT head (ftrl_reference §2.1).

* ``"tiny"`` (default): the real Qwen2.5-VL architecture at 0.9 M parameters with random weights from a fixed seed.
  It has no tokenizer, so the input ids are built by hand: ``<vision_start> <image_pad>*n <vision_end>``; a velocity
  is not encoded (the tiny model only sees the image).
* A local model directory (``config.json`` + weights). If it brings a tokenizer, the text is FTRL's inference prompt
  (§2.2) in the Qwen2.5-VL chat layout (§2.3), velocity included.

Nothing here downloads: sources are ``"tiny"`` or existing directories.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch as th
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, BitsAndBytesConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from sb3_vlm._constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TINY
from sb3_vlm.formats.checkpoint import CheckpointError

__all__ = [
    "FTRL_SYSTEM_PROMPT",
    "FTRL_USER_PROMPT",
    "FTRL_USER_PROMPT_NO_VELOCITY",
    "BackboneOutput",
    "VLMBackbone",
    "build_tiny_model",
    "ftrl_lora_targets",
    "patchify",
    "tiny_config",
]

# OpenAI CLIP statistics, the Qwen2-VL image processor's defaults.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen2-VL image processor defaults: min 56*56 and max 28*28*1280 pixels.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
NUM_TAPS = 4

FTRL_SYSTEM_PROMPT = """You are a navigation scene analyzer for Clearpath Jackal robot motion planning.
Scene Representation (Costmap Visualization):
- Scale: Each grid cell represents approximately 1 meter.
- Robot: Yellow square (0.508 m x 0.430 m footprint)
- Green arrow: forward driving direction (x-axis)
- Blue line: lateral direction (y-axis)
- Obstacles: Red points from laser scanner measurements
- Global Path: Black curve showing a kinematic reference trajectory that guides direction but does not encode \
dynamics or feasibility.
- Background: Grey grid is for visualization only and has no obstacle or cost meaning.
Your Role:
Analyze the spatial layout to understand:
- Obstacle distribution and density around the robot
- Available free space and safe clearance margins
- Path geometry (straight corridor, sharp turn, narrow passage)
- Motion feasibility given the current velocity state

Your navigation reasoning will be used downstream to select parameters for the local motion planner."""

FTRL_USER_PROMPT = """Current robot state:
- Linear velocity: {linear_vel:.3f} m/s
- Angular velocity: {angular_vel:.3f} rad/s

Target local planner: {algorithm}

Use the scene image and robot state to perform navigation reasoning about obstacle proximity, path curvature, \
free-space structure, and motion constraints."""

FTRL_USER_PROMPT_NO_VELOCITY = """Target local planner: {algorithm}

Analyze the costmap to understand obstacle distribution and path geometry."""

_DTYPES = {"float32": th.float32, "fp32": th.float32, "bfloat16": th.bfloat16, "bf16": th.bfloat16}
# FTRL's LoRA (ftrl_reference §2.6); target_modules defaults to ftrl_lora_targets(model).
_LORA_DEFAULTS: dict[str, Any] = dict(r=128, lora_alpha=64, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")


class BackboneOutput(NamedTuple):
    """
    :param hidden_states: ``NUM_TAPS`` float32 tensors ``[B, L, H]``, low -> high (``hidden_states[-4:]``); the last
        one is the post-final-norm output.
    :param attention_mask: ``[B, L]`` long (1 real token, 0 right padding) when prompts of a batch have different
        lengths, else None.
    """

    hidden_states: list[th.Tensor]
    attention_mask: th.Tensor | None


def tiny_config() -> Qwen2_5_VLConfig:
    """The tiny real-architecture Qwen2.5-VL configuration (stack_notes): text hidden 128, 4 layers, vocab 256."""
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=256,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[4, 6, 6]),
            bos_token_id=None,
            eos_token_id=254,
            pad_token_id=255,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=2,
            patch_size=14,
            temporal_patch_size=2,
            spatial_merge_size=2,
            in_channels=3,
            window_size=112,
            fullatt_block_indexes=[1],
            out_hidden_size=128,
            tokens_per_second=2,
        ),
        image_token_id=250,
        video_token_id=251,
        vision_start_token_id=252,
        vision_end_token_id=253,
        tie_word_embeddings=False,
    )


def build_tiny_model(seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    """
    The tiny Qwen2.5-VL with random weights drawn from ``seed`` (the global torch RNG is left untouched).

    :param seed: Weight seed; the same seed gives bit-identical weights.
    :return: The model in eval mode, float32.
    """
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(tiny_config())
    model.name_or_path = TINY
    return model.eval()


def ftrl_lora_targets(model: nn.Module) -> list[str]:
    """FTRL's LoRA targets: names of every ``nn.Linear`` whose name contains ``"model"``, except ``lm_head``."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and "model" in n and "lm_head" not in n]


def patchify(
    images: th.Tensor,
    size: tuple[int, int] | None = None,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Batched tensor version of the Qwen2-VL image processor (rescale, CLIP normalisation, patch flattening).

    Matches ``Qwen2VLImageProcessorPil`` exactly when both sides are multiples of ``patch_size * merge_size`` (28);
    other sizes are resized (bicubic, antialiased) to ``size`` or to the processor's ``smart_resize`` size, which is
    close to, not identical with, PIL's resampling.

    :param images: ``[B, 3, H, W]``, uint8 in [0, 255] or float in [0, 1].
    :param size: Target ``(height, width)``, multiples of 28; None keeps the processor's size rule.
    :return: ``pixel_values [B * gh * gw, 3 * temporal_patch_size * patch_size**2]`` float32 and
        ``image_grid_thw [B, 3]`` long (``[1, gh, gw]`` per image).
    """
    if not isinstance(images, th.Tensor):
        raise TypeError(f"patchify expects a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"patchify expects images [B, 3, H, W], got shape {tuple(images.shape)}")
    factor = patch_size * merge_size
    b, c, h, w = images.shape
    if size is None:
        size = smart_resize(h, w, factor=factor, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    elif size[0] % factor or size[1] % factor:
        raise ValueError(f"patchify: size must be multiples of {factor}, got {size}")
    x = images.float() / 255.0 if images.dtype == th.uint8 else images.float()
    if tuple(size) != (h, w):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    x = (x - x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)) / x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    gh, gw = size[0] // patch_size, size[1] // patch_size
    m, p = merge_size, patch_size
    x = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # B gh/m gw/m m m C p p
    x = x.unsqueeze(6).expand(*x.shape[:6], temporal_patch_size, p, p)  # a still image repeats over time
    pixel_values = x.reshape(b * gh * gw, c * temporal_patch_size * p * p)
    grid = th.tensor([[1, gh, gw]], dtype=th.long, device=images.device).expand(b, 3)
    return pixel_values, grid


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
        torch_dtype = _resolve_dtype(dtype)
        source = str(source)
        model = _load_base(source, torch_dtype, quantization, seed)
        tokenizer = _load_tokenizer(source)
        model.requires_grad_(False)
        adapter_source = None
        if adapter is not None:
            model = _load_adapter(model, Path(adapter), source, trainable=adapter_trainable)
            adapter_source = None if adapter_trainable else adapter
        elif lora is not None:
            kwargs = {**_LORA_DEFAULTS, **dict(lora)}
            kwargs.setdefault("target_modules", ftrl_lora_targets(model))
            from peft import LoraConfig, get_peft_model  # imported on use: peft imports bitsandbytes (slow, noisy)

            model = get_peft_model(model, LoraConfig(**kwargs))
        backbone = cls(model, source, tokenizer, planner=planner, image_size=image_size, adapter_source=adapter_source)
        return backbone.eval()

    def _base_model(self) -> Qwen2_5_VLForConditionalGeneration:
        return self.model.get_base_model() if _is_peft(self.model) else self.model

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
        return _is_peft(self.model)

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

    def build_inputs(self, images: th.Tensor, velocity: th.Tensor | None = None) -> dict[str, th.Tensor | None]:
        """
        Model inputs for a batch of images.

        :param images: ``[B, 3, H, W]``, uint8 or float in [0, 1].
        :param velocity: ``[B, 2]`` robot ``[v (m/s), w (rad/s)]`` or None; only used with a tokenizer.
        :return: ``input_ids [B, L]``, ``attention_mask [B, L]`` or None, ``pixel_values``, ``image_grid_thw``,
            ``mm_token_type_ids [B, L]`` (required by transformers 5 for 3-D mRoPE positions).
        """
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
            rows, pad_id = [image_ids] * images.shape[0], 0  # equal lengths: never padded
        else:
            rows = [self._prompt_ids() + image_ids + tail for tail in self._user_ids(images.shape[0], velocity)]
            pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, attention_mask = _right_pad(rows, pad_id, images.device)
        return dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values.to(self.dtype),
            image_grid_thw=grid,
            mm_token_type_ids=(input_ids == self.config.image_token_id).int(),
        )

    def _prompt_ids(self) -> list[int]:
        """Token ids before the image: ``<|im_start|>system\\n{SYSTEM}<|im_end|>\\n<|im_start|>user\\n``."""
        if self._prompt_prefix is None:
            text = f"<|im_start|>system\n{FTRL_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
            self._prompt_prefix = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._prompt_prefix

    def _user_ids(self, batch: int, velocity: th.Tensor | None) -> list[list[int]]:
        """Token ids after the image: the user text (with the velocity when given) and ``<|im_end|>\\n``."""
        if velocity is None:
            texts = [FTRL_USER_PROMPT_NO_VELOCITY.format(algorithm=self.planner)] * batch
        else:
            if velocity.shape != (batch, 2):
                raise ValueError(f"velocity must be [B, 2] = [v, w] with B={batch}, got {tuple(velocity.shape)}")
            texts = [
                FTRL_USER_PROMPT.format(linear_vel=v, angular_vel=w, algorithm=self.planner)
                for v, w in velocity.double().tolist()
            ]
        return self.tokenizer([t + "<|im_end|>\n" for t in texts], add_special_tokens=False)["input_ids"]

    def forward(self, images: th.Tensor, velocity: th.Tensor | None = None) -> BackboneOutput:
        """
        :param images: ``[B, 3, H, W]``, uint8 or float in [0, 1].
        :param velocity: ``[B, 2]`` ``[v, w]`` or None (ignored without a tokenizer).
        :return: The last 4 hidden states (float32) and the padding mask.
        """
        inputs = self.build_inputs(images, velocity)
        # The inner Qwen2_5_VLModel (no lm_head); LoRA layers are injected in place, so they run here too.
        outputs = self._base_model().model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
        hidden = [h.float() for h in outputs.hidden_states[-NUM_TAPS:]]
        return BackboneOutput(hidden, inputs["attention_mask"])


def _resolve_dtype(dtype: str | th.dtype) -> th.dtype:
    if isinstance(dtype, th.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
        return dtype
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a str or torch.dtype, got {type(dtype).__name__}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _quantization_config(quantization: str, dtype: th.dtype) -> BitsAndBytesConfig:
    # The vision tower stays unquantized: on CPU its MLP widths break the 4-bit repack path (stack_notes).
    skip = ["model.visual", "lm_head"]
    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=skip,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    raise ValueError(f"quantization must be 'nf4', 'int8' or None, got {quantization!r}")


def _load_base(source: str, dtype: th.dtype, quantization: str | None, seed: int) -> Qwen2_5_VLForConditionalGeneration:
    if source != TINY and not (Path(source) / "config.json").is_file():
        raise ValueError(
            f"backbone source must be 'tiny' or a local model directory with config.json, got {source!r} "
            "(nothing is downloaded)"
        )
    if quantization is None:
        model = build_tiny_model(seed) if source == TINY else Qwen2_5_VLForConditionalGeneration.from_pretrained(source)
        return model.to(dtype).eval()
    qconfig = _quantization_config(quantization, dtype)
    if source == TINY:
        # bitsandbytes quantizes while loading: round-trip the seeded tiny weights through a temporary directory.
        with tempfile.TemporaryDirectory() as tmp:
            build_tiny_model(seed).save_pretrained(tmp)
            model = _load_quantized(tmp, dtype, qconfig)
        model.name_or_path = TINY
    else:
        model = _load_quantized(source, dtype, qconfig)
    return model.eval()


def _load_quantized(path: str, dtype: th.dtype, qconfig: BitsAndBytesConfig) -> Qwen2_5_VLForConditionalGeneration:
    import bitsandbytes as bnb

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=dtype, quantization_config=qconfig, device_map="cpu"
    )
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            # bitsandbytes 0.50 CPU bug: after a no-grad forward the weights are repacked for avx512-bf16 and every
            # later forward with grad fails (stack_notes). SB3 collects under no_grad, then trains.
            module.support_avx512bf16_for_cpu = False
    return model


def _is_peft(model: nn.Module) -> bool:
    """Whether ``model`` is a ``PeftModel`` (without importing peft: a model can only be one once peft is loaded)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _load_tokenizer(source: str) -> Any:
    if source == TINY or not any((Path(source) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(source)


def _load_adapter(
    model: Qwen2_5_VLForConditionalGeneration, directory: Path, source: str, trainable: bool
) -> nn.Module:
    """Attach a saved LoRA adapter; zero-numel tensors (ZeRO-3 placeholders) are dropped, missing ones are errors."""
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: file not found")
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    config = LoraConfig.from_pretrained(directory)
    config.inference_mode = not trainable
    config.base_model_name_or_path = source
    weights = {k: v for k, v in load_file(directory / ADAPTER_WEIGHTS).items() if v.numel() > 0}
    if not weights:
        raise CheckpointError(
            f"{directory / ADAPTER_WEIGHTS}: no non-empty tensor (a DeepSpeed ZeRO-3 placeholder?); "
            "the LoRA weights must be consolidated first"
        )
    peft_model = get_peft_model(model, config)
    result = set_peft_model_state_dict(peft_model, weights)
    lora_names = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    missing = sorted(lora_names & set(result.missing_keys))
    if result.unexpected_keys or missing:
        raise CheckpointError(
            f"{directory / ADAPTER_WEIGHTS}: adapter does not match the base model {source!r}: "
            f"missing keys {missing[:5]}, unexpected keys {sorted(result.unexpected_keys)[:5]}"
        )
    if trainable:
        return peft_model
    return peft_model.merge_and_unload()


def _right_pad(rows: list[list[int]], pad_id: int, device: th.device) -> tuple[th.Tensor, th.Tensor | None]:
    """Stack token rows, right-padding with ``pad_id``; the mask is None when no row needed padding."""
    length = max(len(r) for r in rows)
    ids = th.full((len(rows), length), pad_id, dtype=th.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = th.tensor(row, dtype=th.long)
    if all(len(r) == length for r in rows):
        return ids.to(device), None
    mask = th.zeros_like(ids)
    for i, row in enumerate(rows):
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
