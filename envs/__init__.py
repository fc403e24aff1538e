"""Embedded BARN-style navigation simulator. ``import envs`` registers the Gymnasium ids.

* ``BarnNav-v0``: APPLR's laser observation, the local planner's parameters as the action (``planner="dwa"``,
  ``"teb"``, ``"mppi"`` or ``"ddp"``; :class:`envs.nav_env.BarnNav`).
* ``BarnNavCostmap-v0``: the same env behind :class:`envs.wrappers.CostmapObservation` (FTRL scene image).
"""

from gymnasium.envs.registration import register

from envs.nav_env import BarnNav, NavBatch, RewardConfig
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

register(id="BarnNav-v0", entry_point="envs.nav_env:BarnNav")
register(id="BarnNavCostmap-v0", entry_point="envs.wrappers:make_costmap_env")
