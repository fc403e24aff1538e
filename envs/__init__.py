"""Embedded BARN-style navigation simulator. ``import envs`` registers the Gymnasium ids.

* ``BarnNav-v0``: APPLR's laser observation, the local planner's parameters as the action (``planner="dwa"``,
  ``"teb"``, ``"mppi"`` or ``"ddp"``; :class:`envs.nav_env.BarnNav`).
* ``BarnNavCostmap-v0``: the same env behind :class:`envs.wrappers.CostmapObservation` (FTRL scene image).

The names below are imported on first use (PEP 562): ``import envs`` and ``from envs.planners import PARAMS`` load
no simulator module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gymnasium.envs.registration import register

from envs._lazy import lazy_getattr

if TYPE_CHECKING:
    from envs.nav_env import BarnNav, NavBatch
    from envs.rewards import RewardConfig
    from envs.subproc_vec_env import BarnNavSubprocVecEnv
    from envs.vec_env import BarnNavVecEnv
    from envs.wrappers import CostmapObservation, NormalizedParams

__all__ = [
    "BarnNav",
    "BarnNavSubprocVecEnv",
    "BarnNavVecEnv",
    "CostmapObservation",
    "NavBatch",
    "NormalizedParams",
    "RewardConfig",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "BarnNav": "nav_env",
        "BarnNavSubprocVecEnv": "subproc_vec_env",
        "BarnNavVecEnv": "vec_env",
        "CostmapObservation": "wrappers",
        "NavBatch": "nav_env",
        "NormalizedParams": "wrappers",
        "RewardConfig": "rewards",
    },
)

register(id="BarnNav-v0", entry_point="envs.nav_env:BarnNav")
register(id="BarnNavCostmap-v0", entry_point="envs.wrappers:make_costmap_env")
