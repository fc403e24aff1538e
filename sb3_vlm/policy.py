"""Old location of :mod:`sb3_vlm.td3.policies`, kept so SB3 zips saved before the move still load (SB3 records the
policy class by its module path)."""

from sb3_vlm.td3.policies import VLMActor, VLMCritic, VLMPolicy, VLMTD3Policy

__all__ = ["VLMActor", "VLMCritic", "VLMPolicy", "VLMTD3Policy"]
