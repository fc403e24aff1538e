"""Planners of the embedded simulator: parameter tables, global planner, local planners (DWA, TEB, MPPI, DDP).

The parameter tables (:mod:`envs.planners.params`) load with the package; the planners, their numba kernels and the
simulator only when a planner name is first asked for (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from envs._lazy import lazy_getattr
from envs.planners.params import (
    DDP_PARAMS,
    DWA_PARAMS,
    MPPI_PARAMS,
    PARAM_TABLES,
    PARAMS,
    TEB_PARAMS,
    ParamSpec,
    ParamTable,
    param_table,
)

if TYPE_CHECKING:
    from envs.planners.base import LocalPlanner, PeriodicPlanner, PlannerInput
    from envs.planners.registry import PLANNERS, make_planner

__all__ = [
    "DDP_PARAMS",
    "DWA_PARAMS",
    "MPPI_PARAMS",
    "PARAMS",
    "PARAM_TABLES",
    "PLANNERS",
    "TEB_PARAMS",
    "LocalPlanner",
    "ParamSpec",
    "ParamTable",
    "PeriodicPlanner",
    "PlannerInput",
    "make_planner",
    "param_table",
]

__getattr__ = lazy_getattr(
    __name__,
    {
        "LocalPlanner": "base",
        "PeriodicPlanner": "base",
        "PlannerInput": "base",
        "PLANNERS": "registry",
        "make_planner": "registry",
    },
)
