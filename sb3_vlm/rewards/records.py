"""A judge's score in FTRL trajectory records (what ``sb3-vlm collect`` writes, docs/compat/ftrl.md §5.5)."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Sequence
from typing import Any

import numpy as np

from sb3_vlm.rewards.judge import JudgeResult, VLMJudge

__all__ = ["judge_ftrl_episode"]


def judge_ftrl_episode(
    records: list[list[Any]],
    frames: Sequence[np.ndarray],
    judge: VLMJudge,
    judge_weight: float = 1.0,
    max_wait: float | None = None,
) -> JudgeResult:
    """Judge one collected episode and write the outcome into its last record, in place.

    Records are ``[obs, act, rew, done, info, opt_time, nav_metric]``. On success the last record's ``info`` gets
    ``"judge_score"`` and its reward ``+ judge_weight * score``; on failure ``info`` gets ``"judge_failure"`` (a kind
    of :data:`~sb3_vlm.rewards.judge.FAILURE_KINDS`) and the reward stays the env's.

    :param records: The episode's records (at least one).
    :param frames: Its frames in time order (uint8 ``[H, W, 3]``), e.g. the rendered scene at reset and after each
        step; the judge samples ``num_frames`` of them.
    :param judge: The judge.
    :param judge_weight: Weight of the score added to the last reward.
    :param max_wait: Seconds to wait for the answer (default: the judge's ``timeout``).
    :return: The judgement.
    """
    if not records:
        raise ValueError("judge_ftrl_episode needs an episode with at least one record, got none")
    future = judge.submit(frames)
    try:
        result = future.result(timeout=judge.timeout if max_wait is None else max_wait)
    except cf.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        judge.count_failure("deadline")
        result = JudgeResult(None, failure="deadline")
    last = records[-1]
    if result.ok:
        assert result.score is not None
        last[4]["judge_score"] = float(result.score)
        last[2] = float(last[2]) + float(judge_weight) * float(result.score)
    else:
        last[4]["judge_failure"] = result.failure
    return result
