"""``VLMConfig``: the one description of a VLM + DPT feature extractor (peft's ``config.py`` convention).

The extractor, the TD3 policy (``policy_kwargs``), saved checkpoints (``sb3_vlm_config.json``), the hand-off to
inference servers and the servers themselves all carry this dataclass, so a policy can be rebuilt from its saved JSON
alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["VLMConfig"]

DTYPES = ("float32", "bfloat16")
QUANTIZATIONS = ("nf4", "int8")
CACHE_DTYPES = ("float32", "float16", "bfloat16")
TINY = "tiny"


@dataclass
class VLMConfig:
    """
    How to build a :class:`~sb3_vlm.model.extractor.VLMDPTExtractor`. Every field has a ``help`` in its metadata;
    ``__post_init__`` checks types and values; :meth:`to_dict` / :meth:`from_dict` round-trip through JSON.
    """

    backbone: str = field(
        default=TINY,
        metadata={
            "help": "'tiny' (offline random-weight Qwen2.5-VL), a local Qwen2.5-VL directory, or a checkpoint "
            "directory (FTRL layout or VLMTD3Policy.save_pretrained)"
        },
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "base model ('tiny' or a directory) of a checkpoint backbone; None: recorded in the "
            "checkpoint (sb3_vlm_config.json or the adapter's base_model_name_or_path)"
        },
    )
    freeze_vlm: bool = field(
        default=True, metadata={"help": "freeze the VLM (a loaded adapter is merged); False: LoRA trains"}
    )
    freeze_dpt: bool = field(default=False, metadata={"help": "freeze the DPT head"})
    freeze_history: bool | None = field(
        default=None, metadata={"help": "freeze the history encoder; None: as freeze_dpt (FTRL)"}
    )
    lora: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "peft LoraConfig kwargs of a fresh LoRA (missing keys: FTRL's r=128, alpha=64, dropout "
            "0.05, every Linear but lm_head); ignored with freeze_vlm=True"
        },
    )
    quantization: str | None = field(default=None, metadata={"help": "'nf4', 'int8' (extra 'quant') or None"})
    dtype: str = field(default="float32", metadata={"help": "backbone dtype: 'float32' or 'bfloat16'"})
    image_size: tuple[int, int] | None = field(
        default=None,
        metadata={
            "help": "(height, width) images are resized to before the VLM, multiples of 28; None: the "
            "processor's size rule"
        },
    )
    planner: str = field(default="DWA", metadata={"help": "planner name in the prompt (tokenizer backbones)"})
    num_params: int = field(default=9, metadata={"help": "outputs P of a fresh DPT head's SFT mlp"})
    seed: int = field(default=0, metadata={"help": "weight seed of the tiny backbone"})
    feature_cache_bytes: int = field(
        default=0, metadata={"help": "byte budget of the feature cache (frozen VLM only); 0: no cache"}
    )
    feature_cache_dtype: str = field(
        default="float32",
        metadata={"help": "storage dtype of cached hidden states: 'float32' (exact), 'float16' or 'bfloat16'"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.backbone, os.PathLike):
            self.backbone = os.fspath(self.backbone)
        if isinstance(self.base_model, os.PathLike):
            self.base_model = os.fspath(self.base_model)
        _check_type("backbone", self.backbone, str)
        _check_type("base_model", self.base_model, str, optional=True)
        for name in ("freeze_vlm", "freeze_dpt"):
            _check_type(name, getattr(self, name), bool)
        _check_type("freeze_history", self.freeze_history, bool, optional=True)
        if self.lora is not None:
            if not isinstance(self.lora, Mapping):
                raise TypeError(f"VLMConfig: lora must be a dict of LoraConfig kwargs or None, got {self.lora!r}")
            self.lora = dict(self.lora)
        _check_choice("quantization", self.quantization, QUANTIZATIONS, optional=True)
        _check_choice("dtype", self.dtype, DTYPES)
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
                raise ValueError(f"VLMConfig: image_size must be (height, width) positive ints or None, got {size}")
            self.image_size = (int(size[0]), int(size[1]))
        _check_type("planner", self.planner, str)
        for name, low in (("num_params", 1), ("seed", 0), ("feature_cache_bytes", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
                raise TypeError(f"VLMConfig: {name} must be an int, got {type(value).__name__}")
            if int(value) < low:
                raise ValueError(f"VLMConfig: {name} must be >= {low}, got {value}")
            setattr(self, name, int(value))
        _check_choice("feature_cache_dtype", self.feature_cache_dtype, CACHE_DTYPES)

    @classmethod
    def build(cls, config: VLMConfig | Mapping[str, Any] | None = None, **overrides: Any) -> VLMConfig:
        """
        A config from ``config`` (a ``VLMConfig``, a dict of its fields, or None for the defaults) with ``overrides``.

        :raises TypeError: naming any key that is not a field.
        """
        base = {} if config is None else (config.to_dict() if isinstance(config, VLMConfig) else dict(config))
        return cls.from_dict({**base, **overrides})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> VLMConfig:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (``image_size`` as a list)."""
        data = dataclasses.asdict(self)
        if data["image_size"] is not None:
            data["image_size"] = list(data["image_size"])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLMConfig:
        """Inverse of :meth:`to_dict`.

        :raises TypeError: naming the keys that are not fields.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TypeError(f"VLMConfig: unknown field(s) {unknown}; the fields are {sorted(names)}")
        values = dict(data)
        if values.get("image_size") is not None:
            values["image_size"] = tuple(values["image_size"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> VLMConfig:
        return cls.from_dict(json.loads(text))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (a ``.json`` file)."""
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> VLMConfig:
        """Read a file written by :meth:`save_pretrained`."""
        return cls.from_json(Path(path).read_text())

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike, **overrides: Any) -> VLMConfig:
        """
        The config a checkpoint directory was saved with (``sb3_vlm_config.json``, key ``"vlm"``; defaults for an
        FTRL checkpoint without one), pointed at that directory: ``backbone`` is the directory, ``base_model`` the
        one it records, ``lora`` None (its adapter is loaded instead); then ``overrides``.
        """
        from sb3_vlm._constants import SB3_VLM_CONFIG

        file = Path(directory) / SB3_VLM_CONFIG
        saved = dict(json.loads(file.read_text()).get("vlm") or {}) if file.is_file() else {}
        saved.update(backbone=os.fspath(directory), base_model=None, lora=None)
        return cls.build(saved, **overrides)


def _check_type(name: str, value: Any, kind: type, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, kind):
        need = f"a {kind.__name__}" + (" or None" if optional else "")
        raise TypeError(f"VLMConfig: {name} must be {need}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in choices:
        extra = " or None" if optional else ""
        raise ValueError(f"VLMConfig: {name} must be one of {choices}{extra}, got {value!r}")
