"""Rewards from models: a VLM judge over an OpenAI-compatible API and the wrappers that add its score; a learned
reward network and the prompt-selection env it rewards.

``from sb3_vlm.rewards import JudgeSettings, VLMJudge, VLMJudgeReward, VecVLMJudgeReward, RewardNet``. The
``openai`` package (extra ``judge``) is needed only to make a :class:`VLMJudge`. Importing this package registers
``BarnNavPromptSelection-v0`` (:func:`sb3_vlm.rewards.prompt_env.make_prompt_selection_env`; built on use).
"""

from gymnasium.envs.registration import register

from sb3_vlm._deprecation import module_getattr
from sb3_vlm.rewards.judge import FAILURE_KINDS, JudgeResult, JudgeSettings, JudgeStats, VLMJudge
from sb3_vlm.rewards.records import judge_ftrl_episode
from sb3_vlm.rewards.reward_net import RewardNet, RewardNetConfig
from sb3_vlm.rewards.scoring import DEFAULT_PROMPT, DEFAULT_TASK, parse_score, sample_frames
from sb3_vlm.rewards.wrappers import JudgeRewardConfig, VecVLMJudgeReward, VLMJudgeReward

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TASK",
    "FAILURE_KINDS",
    "JudgeResult",
    "JudgeRewardConfig",
    "JudgeSettings",
    "JudgeStats",
    "RewardNet",
    "RewardNetConfig",
    "VLMJudge",
    "VLMJudgeReward",
    "VecVLMJudgeReward",
    "judge_ftrl_episode",
    "parse_score",
    "sample_frames",
]

register(id="BarnNavPromptSelection-v0", entry_point="sb3_vlm.rewards.prompt_env:make_prompt_selection_env")

__getattr__ = module_getattr(__name__, moved={"JudgeLogCallback": "sb3_vlm.callbacks.JudgeLogCallback"})
