"""sb3-vlm: a vision-language model with a DPT head as a Stable-Baselines3 TD3 policy.

The public names are imported on first use (PEP 562), so ``import sb3_vlm`` and the ``sb3-vlm`` command line stay
fast and import torch, transformers or peft only when something needs them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("sb3-vlm")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from sb3_vlm.flow.head import FlowMatchingHead
    from sb3_vlm.formats.trajectories import load_trajectories
    from sb3_vlm.model.config import VLMConfig
    from sb3_vlm.model.extractor import VLMDPTExtractor
    from sb3_vlm.model.heads import DPTHead, HistoryEncoder
    from sb3_vlm.policies import load_policy
    from sb3_vlm.td3.fast import FastTD3
    from sb3_vlm.td3.policies import VLMPolicy, VLMTD3Policy
    from sb3_vlm.td3.replay import fill_replay_buffer
    from sb3_vlm.td3.td3 import VLMTD3

# public name -> module that defines it
_EXPORTS = {
    "DPTHead": "sb3_vlm.model.heads",
    "FastTD3": "sb3_vlm.td3.fast",
    "FlowMatchingHead": "sb3_vlm.flow.head",
    "HistoryEncoder": "sb3_vlm.model.heads",
    "VLMDPTExtractor": "sb3_vlm.model.extractor",
    "VLMPolicy": "sb3_vlm.td3.policies",
    "VLMTD3": "sb3_vlm.td3.td3",
    "VLMTD3Policy": "sb3_vlm.td3.policies",
    "VLMConfig": "sb3_vlm.model.config",
    "fill_replay_buffer": "sb3_vlm.td3.replay",
    "load_policy": "sb3_vlm.policies",
    "load_trajectories": "sb3_vlm.formats.trajectories",
}

__all__ = [
    "DPTHead",
    "FastTD3",
    "FlowMatchingHead",
    "HistoryEncoder",
    "VLMConfig",
    "VLMDPTExtractor",
    "VLMPolicy",
    "VLMTD3",
    "VLMTD3Policy",
    "fill_replay_buffer",
    "load_policy",
    "load_trajectories",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sb3_vlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
