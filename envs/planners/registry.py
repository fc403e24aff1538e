"""Local planners by name: what ``gym.make("BarnNav-v0", planner=...)`` and ``BatchSim(planner=...)`` build."""

from __future__ import annotations

from envs.planners.base import LocalPlanner
from envs.planners.ddp import DDPPlanner
from envs.planners.dwa import DWAPlanner
from envs.planners.mppi import MPPIPlanner
from envs.planners.params import PARAMS
from envs.planners.teb import TEBPlanner

PLANNERS: dict[str, type[LocalPlanner]] = {
    "dwa": DWAPlanner,
    "teb": TEBPlanner,
    "mppi": MPPIPlanner,
    "ddp": DDPPlanner,
}
"""Planner class per name (lower case, the keys of ``envs.planners.PARAMS``)."""
assert PLANNERS.keys() == PARAMS.keys() and all(PLANNERS[k].params is PARAMS[k] for k in PARAMS)


def make_planner(name: str) -> LocalPlanner:
    """A new planner ``name`` (any case: ``"mppi"``, ``"MPPI"``) with its default settings.

    :raises ValueError: naming the known planners.
    """
    cls = PLANNERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"planner must be one of {sorted(PLANNERS)} (any case), got {name!r}")
    return cls()
