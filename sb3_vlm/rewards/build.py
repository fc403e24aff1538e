"""A judge and its reward wrapper from plain settings (what ``--judge-*`` options and ``run_config.json`` hold)."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_vlm.callbacks.judge_log import JudgeLogCallback
from sb3_vlm.rewards.judge import JudgeSettings, VLMJudge
from sb3_vlm.rewards.wrappers import VecVLMJudgeReward

__all__ = ["make_judge", "judge_reward"]


def make_judge(settings: dict[str, Any]) -> VLMJudge:
    """The :class:`VLMJudge` of ``settings["judge"]`` (the fields of :class:`JudgeSettings`)."""
    return VLMJudge(JudgeSettings(**settings["judge"]))


def judge_reward(venv: VecEnv, settings: dict[str, Any] | None) -> tuple[VecEnv, list[BaseCallback]]:
    """``venv`` behind :class:`VecVLMJudgeReward` (``settings["reward"]``: its keyword arguments) and the judge's
    :class:`JudgeLogCallback`; ``venv`` and no callback for ``settings=None``. Closing the wrapper closes the judge."""
    if settings is None:
        return venv, []
    judge = make_judge(settings)
    wrapped = VecVLMJudgeReward(venv, judge, **settings.get("reward", {}), close_judge=True)
    return wrapped, [JudgeLogCallback(judge)]
