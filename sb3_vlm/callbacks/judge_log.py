"""A VLM judge's counters in SB3's logger (TensorBoard, stdout, CSV): :class:`JudgeLogCallback`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stable_baselines3.common.callbacks import BaseCallback

from sb3_vlm.rewards.judge import FAILURE_KINDS, JudgeStats

if TYPE_CHECKING:
    from sb3_vlm.rewards.judge import VLMJudge

__all__ = ["JudgeLogCallback"]


class JudgeLogCallback(BaseCallback):
    """
    Record a :class:`~sb3_vlm.rewards.judge.VLMJudge`'s counters under ``judge/`` every step (SB3 writes them at its
    next dump): ``judge/requests``, ``judge/failures``, ``judge/cache_hits`` (totals since the judge was made),
    ``judge/failures_<kind>`` for each kind seen, ``judge/latency_ms`` (mean request wall time since the previous
    record with new requests) and ``judge/score_mean`` (mean score over the same span).

    :param judge: The judge of the reward wrapper(s).
    :param verbose: SB3 verbosity.
    """

    def __init__(self, judge: VLMJudge, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.judge = judge
        self._last = JudgeStats()

    def _on_step(self) -> bool:
        self.record()
        return True

    def record(self) -> None:
        """Write the counters into the logger now."""
        now, last = self.judge.stats(), self._last
        self.logger.record("judge/requests", now.requests)
        self.logger.record("judge/failures", now.failures)
        self.logger.record("judge/cache_hits", now.cache_hits)
        for kind in FAILURE_KINDS:
            if now.failures_by_kind[kind]:
                self.logger.record(f"judge/failures_{kind}", now.failures_by_kind[kind])
        if now.requests > last.requests:
            self.logger.record(
                "judge/latency_ms", (now.latency_ms_sum - last.latency_ms_sum) / (now.requests - last.requests)
            )
        if now.scored > last.scored:
            self.logger.record("judge/score_mean", (now.score_sum - last.score_sum) / (now.scored - last.scored))
        self._last = now
