"""sb3-vlm: a vision-language model with a DPT head as a Stable-Baselines3 TD3 policy."""

from sb3_vlm.extractor import VLMDPTExtractor
from sb3_vlm.heads import DPTHead, HistoryEncoder
from sb3_vlm.policy import VLMPolicy, VLMTD3Policy
from sb3_vlm.td3 import VLMTD3

__all__ = ["DPTHead", "HistoryEncoder", "VLMDPTExtractor", "VLMPolicy", "VLMTD3", "VLMTD3Policy"]
