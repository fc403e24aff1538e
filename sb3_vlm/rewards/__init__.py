"""Rewards from models: a VLM judge over an OpenAI-compatible API and the wrappers that add its score.

``from sb3_vlm.rewards import VLMJudge, VLMJudgeReward, VecVLMJudgeReward``. The ``openai`` package (extra
``judge``) is needed only to make a :class:`VLMJudge`.
"""

from sb3_vlm.rewards.callbacks import JudgeLogCallback
from sb3_vlm.rewards.judge import FAILURE_KINDS, JudgeResult, JudgeStats, VLMJudge
from sb3_vlm.rewards.records import judge_ftrl_episode
from sb3_vlm.rewards.scoring import DEFAULT_PROMPT, DEFAULT_TASK, parse_score, sample_frames
from sb3_vlm.rewards.wrappers import VecVLMJudgeReward, VLMJudgeReward

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TASK",
    "FAILURE_KINDS",
    "JudgeLogCallback",
    "JudgeResult",
    "JudgeStats",
    "VLMJudge",
    "VLMJudgeReward",
    "VecVLMJudgeReward",
    "judge_ftrl_episode",
    "parse_score",
    "sample_frames",
]
