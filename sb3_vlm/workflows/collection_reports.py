"""What a collection run reports: one :class:`EpisodeReport` per episode, gathered in a :class:`CollectSummary`
(returned by :func:`sb3_vlm.workflows.collector.collect`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CollectSummary", "EpisodeReport"]


@dataclass
class EpisodeReport:
    """One collected episode.

    :param world: World file name, e.g. ``world_12.world``.
    :param steps: Steps run.
    :param status: Final status (``success``, ``collision``, ``timeout``).
    :param time: Episode time (s).
    :param reward: Sum of the recorded rewards (after tail spreading).
    :param nav_metric: BARN navigation metric.
    :param source_steps: Steps whose parameters came from the source.
    :param fallback_steps: Steps that fell back to the default parameters because the source failed.
    :param path: The pickle written, or None if the episode was not saved.
    :param skipped: Why it was not saved, or None.
    """

    world: str
    steps: int
    status: str
    time: float
    reward: float
    nav_metric: float
    source_steps: int
    fallback_steps: int
    path: Path | None = None
    skipped: str | None = None


@dataclass
class CollectSummary:
    """What :func:`collect` did: one report per episode, in order."""

    episodes: list[EpisodeReport] = field(default_factory=list)

    @property
    def saved(self) -> list[Path]:
        """Pickles written."""
        return [e.path for e in self.episodes if e.path is not None]

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.episodes)

    @property
    def fallback_steps(self) -> int:
        return sum(e.fallback_steps for e in self.episodes)
