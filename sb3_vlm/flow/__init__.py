"""Flow-matching action expert and reflow distillation (teacher -> one-step student on one shared backbone)."""

from sb3_vlm.flow.head import FlowHeadConfig, FlowMatchingHead
from sb3_vlm.flow.reflow import FitConfig, couplings, fit, reflow, straightness

__all__ = ["FitConfig", "FlowHeadConfig", "FlowMatchingHead", "couplings", "fit", "reflow", "straightness"]
