"""Hot reload of a served checkpoint directory: load new weights into the live modules when the architecture is
unchanged (LoRA configs compared with peft's own ``to_dict()``), else report that a rebuild is needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch as th

from sb3_vlm._constants import ACTOR_HEAD_DIR, ADAPTER_WEIGHTS
from sb3_vlm.formats.checkpoint import CheckpointError, FTRLCheckpoint, check_state
from sb3_vlm.policies import VLMDirectoryPolicy

__all__ = ["ArchitectureChanged", "dir_identity", "lora_signature", "prepare_in_place"]

_NOT_STRUCTURAL = frozenset(
    {
        # where the config came from and how the weights were initialised or trained: not which modules exist
        "base_model_name_or_path",
        "revision",
        "peft_version",
        "inference_mode",
        "task_type",
        "auto_mapping",
        "init_lora_weights",
        "lora_dropout",
        "loftq_config",
        "eva_config",
        "corda_config",
        "lora_ga_config",
    }
)


def lora_signature(config: Any) -> dict[str, Any]:
    """peft's own ``LoraConfig.to_dict()`` without the fields that do not change the adapter's modules or scaling
    (collections sorted, so ``["q_proj", "v_proj"]`` equals ``{"v_proj", "q_proj"}``)."""
    signature = {}
    for name, value in config.to_dict().items():
        if name in _NOT_STRUCTURAL:
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            value = sorted(map(str, value))
        signature[name] = value
    return signature


class ArchitectureChanged(Exception):
    """The new checkpoint does not fit the live modules: rebuild instead of loading in place."""


def prepare_in_place(model: VLMDirectoryPolicy, ckpt: FTRLCheckpoint) -> Callable[[], None]:
    """
    Check that ``ckpt`` fits the live modules and read everything it needs; return the function that loads it.

    :raises ArchitectureChanged: When only a rebuild can load ``ckpt``.
    """
    from peft import PeftModel, set_peft_model_state_dict

    ext = model.extractor
    peft_model = ext.backbone.model if isinstance(ext.backbone.model, PeftModel) else None
    adapter = _adapter_state(peft_model, ckpt, model.checkpoint)
    try:
        actor_state = _check_heads(model, ckpt)
    except CheckpointError as e:
        raise ArchitectureChanged(str(e)) from e
    history_size = int(ckpt.history_config.get("history_image_size", 224))

    def apply() -> None:
        if peft_model is not None:
            result = set_peft_model_state_dict(peft_model, adapter)
            assert not result.unexpected_keys, result.unexpected_keys
        ext.dpt.load_state_dict(ckpt.head_state, strict=True)
        if ext.history is not None:
            ext.history.load_state_dict(ckpt.history_state, strict=True)
            ext.history_image_size = history_size
        ext.param_mean, ext.param_std = ckpt.param_mean, ckpt.param_std
        if actor_state is not None:
            assert model.policy is not None
            model.policy.actor.load_state_dict(actor_state, strict=False)

    return apply


def _adapter_state(peft_model: Any, ckpt: FTRLCheckpoint, path: Path) -> dict[str, th.Tensor] | None:
    """The checkpoint's LoRA weights, once checked against the live adapter (None without one)."""
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import load_file

    if (ckpt.adapter_dir is not None) != (peft_model is not None):
        raise ArchitectureChanged("adapter added or removed")
    if peft_model is None:
        return None
    live = peft_model.peft_config["default"]
    if lora_signature(LoraConfig.from_pretrained(path)) != lora_signature(live):
        raise ArchitectureChanged("LoRA configuration changed")
    adapter = {k: v for k, v in load_file(path / ADAPTER_WEIGHTS).items() if v.numel() > 0}
    expected = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    try:
        check_state(expected, adapter, str(path / ADAPTER_WEIGHTS), "the live LoRA adapter")
    except CheckpointError as e:
        raise ArchitectureChanged(str(e)) from e
    return adapter


def _check_heads(model: VLMDirectoryPolicy, ckpt: FTRLCheckpoint) -> dict[str, th.Tensor] | None:
    """Check the DPT head, history encoder and (actor mode) actor head of ``ckpt`` against the live ones; the actor
    head's state, or None."""
    ext, path = model.extractor, model.checkpoint
    check_state(ext.dpt.state_dict(), ckpt.head_state, f"{path}/regression_head", "DPTHead")
    if (ckpt.history_state is None) != (ext.history is None):
        raise ArchitectureChanged("history encoder added or removed")
    if ext.history is not None:
        assert ckpt.history_state is not None
        check_state(ext.history.state_dict(), ckpt.history_state, f"{path}/history_encoder", "HistoryEncoder")
    if model.policy is None:
        return None
    if ACTOR_HEAD_DIR not in ckpt.extras:
        raise CheckpointError(f"{path}: no {ACTOR_HEAD_DIR}/ (mode='actor')")
    actor_state = ckpt.extras[ACTOR_HEAD_DIR]
    live_actor = {k: v for k, v in model.policy.actor.state_dict().items() if not k.startswith("features_")}
    check_state(live_actor, actor_state, f"{path}/{ACTOR_HEAD_DIR}", "the actor head")
    return actor_state


def dir_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a directory: changes when an atomic writer swaps a new directory in."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
