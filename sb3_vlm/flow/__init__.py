"""Flow-matching action expert and reflow distillation (teacher -> one-step student on one shared backbone)."""

from sb3_vlm.flow.head import FlowHeadConfig, FlowMatchingHead
from sb3_vlm.flow.reflow import REFLOW_FIT, FitConfig, couplings, fit, reflow, straightness

__all__ = [
    "REFLOW_FIT",
    "FitConfig",
    "FlowHeadConfig",
    "FlowMatchingHead",
    "couplings",
    "fit",
    "reflow",
    "straightness",
]
