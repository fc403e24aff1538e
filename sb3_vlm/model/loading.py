"""Loading Qwen2.5-VL for the backbone: the tiny offline model, local directories, dtype, nf4/int8, PEFT adapters.

Nothing here downloads: sources are ``"tiny"`` or existing directories (``config.json`` + weights, optionally a
tokenizer).
"""

from __future__ import annotations

import json
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch as th
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, BitsAndBytesConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from sb3_vlm._constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS, TINY
from sb3_vlm.formats.checkpoint import CheckpointError

__all__ = [
    "LORA_DEFAULTS",
    "build_tiny_model",
    "ftrl_lora_targets",
    "is_peft",
    "load_adapter",
    "load_base",
    "load_tokenizer",
    "resolve_dtype",
    "tiny_config",
]

_DTYPES = {"float32": th.float32, "fp32": th.float32, "bfloat16": th.bfloat16, "bf16": th.bfloat16}
# FTRL's LoRA (docs/compat/ftrl.md §2.6); target_modules defaults to ftrl_lora_targets(model).
TINY_CONFIG_FILE = "tiny_qwen2_5_vl.json"  # shipped beside this module
LORA_DEFAULTS: dict[str, Any] = dict(r=128, lora_alpha=64, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")


def tiny_config() -> Qwen2_5_VLConfig:
    """The tiny real-architecture Qwen2.5-VL configuration (stack_notes; ``tiny_qwen2_5_vl.json``): text hidden 128,
    4 layers, vocab 256; vision depth 2, hidden 64."""
    return Qwen2_5_VLConfig(**json.loads(files(__package__).joinpath(TINY_CONFIG_FILE).read_text()))


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


def resolve_dtype(dtype: str | th.dtype) -> th.dtype:
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


def load_base(source: str, dtype: th.dtype, quantization: str | None, seed: int) -> Qwen2_5_VLForConditionalGeneration:
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
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise ImportError('quantization "nf4"/"int8" needs bitsandbytes: pip install "sb3-vlm[quant]"') from e

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=dtype, quantization_config=qconfig, device_map="cpu"
    )
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            # bitsandbytes 0.50 CPU bug: after a no-grad forward the weights are repacked for avx512-bf16 and every
            # later forward with grad fails (stack_notes). SB3 collects under no_grad, then trains.
            module.support_avx512bf16_for_cpu = False
    return model


def is_peft(model: nn.Module) -> bool:
    """Whether ``model`` is a ``PeftModel`` (without importing peft: a model can only be one once peft is loaded)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def load_tokenizer(source: str) -> Any:
    if source == TINY or not any((Path(source) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(source)


def load_adapter(model: Qwen2_5_VLForConditionalGeneration, directory: Path, source: str, trainable: bool) -> nn.Module:
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
