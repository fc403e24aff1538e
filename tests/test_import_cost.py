"""What light imports load, read from ``python -X importtime``: ``import sb3_vlm`` no simulator module and no torch,
``from envs.planners import PARAMS`` the parameter tables only (no simulator, no numba kernel)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("costmap", "kernels", "dwa_kernels", "global_planner", "dwa", "teb", "mppi", "ddp", "registry")
SIMULATOR = {"envs.sim", "envs.nav_env", *(f"envs.planners.{name}" for name in KERNELS)}


def imported_modules(code: str) -> set[str]:
    """Every module ``python -X importtime -c code`` imports (run from the repository root, as the tests do)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}  # the first line is the header


@pytest.mark.parametrize(
    "code, envs_modules",
    [
        ("import sb3_vlm", set()),
        ("from envs.planners import PARAMS", {"envs", "envs._lazy", "envs.planners", "envs.planners.params"}),
    ],
)
def test_light_imports_load_no_simulator(code: str, envs_modules: set[str]) -> None:
    modules = imported_modules(code)
    assert not modules & SIMULATOR, f"{code!r} imports {sorted(modules & SIMULATOR)}"
    assert not modules & {"numba", "torch"}
    assert {m for m in modules if m == "envs" or m.startswith("envs.")} == envs_modules


def test_the_simulator_still_loads_on_use() -> None:
    modules = imported_modules("import envs; envs.BarnNavVecEnv; from envs.planners import make_planner")
    assert SIMULATOR <= modules
