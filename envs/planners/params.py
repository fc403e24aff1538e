"""Planner parameter tables: names, physical ranges, defaults, integer flags, one table per planner; every conversion
between the policy's [-1, 1] action and physical units goes through it. Where the ranges and defaults come from:
docs/compat/ftrl.md §4.4 and docs/guide/simulator.md "Local planners"."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ParamSpec:
    """One planner parameter.

    :param name: ROS parameter name without namespace (e.g. ``max_vel_x``).
    :param low: Lowest physical value (inclusive).
    :param high: Highest physical value (inclusive).
    :param default: Planner default (physical units).
    :param is_int: Integer parameter; rounded by the environment, never by the policy.
    :param unit: Physical unit, for tables and plots.
    """

    name: str
    low: float
    high: float
    default: float
    is_int: bool = False
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"ParamSpec {self.name!r}: low must be < high, got low={self.low}, high={self.high}")
        if not self.low <= self.default <= self.high:
            raise ValueError(f"ParamSpec {self.name!r}: default {self.default} outside [{self.low}, {self.high}]")


@dataclass(frozen=True)
class ParamTable:
    """Ordered parameter table of one planner, with vectorised unit conversions.

    The affine map is APPLR's: ``phys = a * (high - low) / 2 + (high + low) / 2`` for ``a`` in [-1, 1].
    """

    planner: str
    specs: tuple[ParamSpec, ...]
    names: tuple[str, ...] = field(init=False)
    low: np.ndarray = field(init=False, repr=False)
    high: np.ndarray = field(init=False, repr=False)
    default: np.ndarray = field(init=False, repr=False)
    is_int: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(s.name for s in self.specs))
        for attr in ("low", "high", "default"):
            arr = np.array([getattr(s, attr) for s in self.specs], dtype=np.float32)
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)
        is_int = np.array([s.is_int for s in self.specs], dtype=bool)
        is_int.setflags(write=False)
        object.__setattr__(self, "is_int", is_int)

    def __len__(self) -> int:
        return len(self.specs)

    def index(self, name: str) -> int:
        """Position of parameter ``name``; ``KeyError`` naming the known ones otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{self.planner} has no parameter {name!r}; known: {', '.join(self.names)}") from None

    def to_unit(self, physical: np.ndarray) -> np.ndarray:
        """Physical values ``[..., P]`` -> normalised ``[..., P]`` in [-1, 1] (clipped)."""
        physical = self._check_shape(physical, "physical")
        unit = (physical - (self.high + self.low) / 2) / ((self.high - self.low) / 2)
        return np.clip(unit, -1.0, 1.0).astype(np.float32)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Normalised ``[..., P]`` in [-1, 1] (clipped) -> physical ``[..., P]`` (ints not rounded)."""
        unit = np.clip(self._check_shape(unit, "unit"), -1.0, 1.0)
        return (unit * (self.high - self.low) / 2 + (self.high + self.low) / 2).astype(np.float32)

    def validate(self, physical: np.ndarray, atol: float = 1e-4) -> np.ndarray:
        """Check physical values against the ranges; return them clipped and with ints rounded.

        :raises ValueError: naming the first parameter out of range, its value and its range.
        """
        physical = self._check_shape(physical, "physical")
        if not np.all(np.isfinite(physical)):
            raise ValueError(f"{self.planner} parameters must be finite, got {physical}")
        bad = (physical < self.low - atol) | (physical > self.high + atol)
        if np.any(bad):
            j = int(np.argwhere(bad)[0][-1])
            value = physical[..., j].ravel()[np.argmax(bad[..., j].ravel())]
            raise ValueError(
                f"{self.planner} parameter {self.names[j]!r} = {value:.6g} outside its range "
                f"[{self.low[j]:.6g}, {self.high[j]:.6g}]"
            )
        out = np.clip(physical, self.low, self.high)
        return np.where(self.is_int, np.round(out), out).astype(np.float32)

    def _check_shape(self, values: np.ndarray, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32)
        if values.ndim == 0 or values.shape[-1] != len(self):
            raise ValueError(
                f"{self.planner} {what} parameters must have last dimension {len(self)} "
                f"({', '.join(self.names)}), got shape {values.shape}"
            )
        return values


DWA_PARAMS = ParamTable(
    planner="DWA",
    specs=(
        ParamSpec("max_vel_x", 0.2, 2.0, 0.5, unit="m/s"),
        ParamSpec("max_vel_theta", 0.314, 3.14, 1.57, unit="rad/s"),
        ParamSpec("vx_samples", 4, 12, 6, is_int=True),
        ParamSpec("vtheta_samples", 8, 40, 20, is_int=True),
        ParamSpec("path_distance_bias", 0.1, 1.5, 0.75),
        ParamSpec("goal_distance_bias", 0.1, 2.0, 1.0),
        ParamSpec("inflation_radius", 0.1, 0.6, 0.3, unit="m"),
    ),
)
"""APPLR's 7 DWA parameters (ros_jackal ``RANGE_DICT`` ranges, move_base defaults)."""

TEB_PARAMS = ParamTable(
    planner="TEB",
    specs=(
        ParamSpec("max_vel_x", 0.2, 2.0, 0.5, unit="m/s"),
        ParamSpec("max_vel_x_backwards", 0.1, 0.7, 0.5, unit="m/s"),
        ParamSpec("max_vel_theta", 0.314, 3.14, 3.0, unit="rad/s"),
        ParamSpec("dt_ref", 0.1, 0.35, 0.35, unit="s"),
        ParamSpec("min_obstacle_dist", 0.05, 0.2, 0.2, unit="m"),
        ParamSpec("inflation_dist", 0.01, 0.2, 0.2, unit="m"),
        ParamSpec("inflation_radius", 0.1, 0.6, 0.25, unit="m"),
    ),
)
"""FTRL's 7 TEB parameters (teb_local_planner names)."""

MPPI_PARAMS = ParamTable(
    planner="MPPI",
    specs=(
        ParamSpec("max_vel_x", -0.5, 2.0, 0.5, unit="m/s"),
        ParamSpec("max_vel_theta", 0.314, 3.14, 3.0, unit="rad/s"),
        ParamSpec("nr_pairs_", 400, 800, 600, is_int=True),
        ParamSpec("nr_steps_", 20, 40, 20, is_int=True),
        ParamSpec("linear_stddev", 0.05, 0.15, 0.15, unit="m/s"),
        ParamSpec("angular_stddev", 0.02, 0.15, 0.15, unit="rad/s"),
        ParamSpec("lambda", 0.5, 5.0, 1.0),
        ParamSpec("inflation_radius", 0.1, 0.6, 0.25, unit="m"),
    ),
)
"""FTRL's 8 MPPI parameters (samples ``nr_pairs_`` x steps ``nr_steps_``, noise, temperature)."""

DDP_PARAMS = ParamTable(
    planner="DDP",
    specs=(
        ParamSpec("max_vel_x", 0.0, 2.0, 0.5, unit="m/s"),
        ParamSpec("max_vel_theta", 0.314, 3.14, 3.0, unit="rad/s"),
        ParamSpec("nr_pairs_", 400, 800, 600, is_int=True),
        ParamSpec("distance", 0.01, 0.4, 0.1, unit="m"),
        ParamSpec("robot_radius", 0.01, 0.15, 0.02, unit="m"),
        ParamSpec("inflation_radius", 0.1, 0.6, 0.25, unit="m"),
    ),
)
"""FTRL's 6 DDP parameters (FTRL's DDP collection is the coherent one, docs/compat/ftrl.md §5.5)."""

PARAMS: dict[str, ParamTable] = {"dwa": DWA_PARAMS, "teb": TEB_PARAMS, "mppi": MPPI_PARAMS, "ddp": DDP_PARAMS}
"""Parameter table per planner name as ``gym.make(..., planner=...)`` takes it (lower case)."""
PARAM_TABLES: dict[str, ParamTable] = {table.planner: table for table in PARAMS.values()}
"""Parameter table per upper-case planner name, the FTRL server's ``algorithm`` field (``"DWA"``, ``"DDP"``, ...)."""


def param_table(planner: str) -> ParamTable:
    """The table of ``planner`` (any case: ``"ddp"``, ``"DDP"``); ``ValueError`` naming the known ones otherwise."""
    table = PARAMS.get(str(planner).lower())
    if table is None:
        raise ValueError(f"planner must be one of {sorted(PARAMS)} (any case), got {planner!r}")
    return table
