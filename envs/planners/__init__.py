"""Planners of the embedded simulator: parameter tables, global planner, local planners."""

from envs.planners.params import DWA_PARAMS, PARAM_TABLES, ParamSpec, ParamTable

__all__ = ["DWA_PARAMS", "PARAM_TABLES", "ParamSpec", "ParamTable"]
