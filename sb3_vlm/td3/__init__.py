"""TD3 for the VLM policy, in SB3's layout: ``policies.py`` (the shared-backbone actor/critic) and ``td3.py``."""

from sb3_vlm.td3.fast import FastTD3
from sb3_vlm.td3.policies import VLMPolicy, VLMTD3Policy
from sb3_vlm.td3.td3 import VLMTD3

__all__ = ["FastTD3", "VLMPolicy", "VLMTD3", "VLMTD3Policy"]
