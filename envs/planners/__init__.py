"""Planners of the embedded simulator: parameter tables, global planner, local planners (DWA, TEB, MPPI, DDP)."""

from envs.planners.base import LocalPlanner, PeriodicPlanner, PlannerInput
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
