"""Real data from the field, read from beside the project (tests that need it skip when it is absent).

``SB3_VLM_BARN_DIR`` points the tests at the ``worlds/BARN`` folder of a BARN checkout (``world_N.world`` files and
``path_files/``); by default they read ``../shared/data/barn/BARN`` next to the repository.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BARN_DIR = Path(os.environ.get("SB3_VLM_BARN_DIR") or SHARED_DATA / "barn" / "BARN")
"""All 300 published BARN worlds (250 training, 50 test) and their reference paths."""
APPLR_DIR = SHARED_DATA / "applr"
"""The published APPLR actor (``policy_actor``) and its config."""

needs_barn = pytest.mark.skipif(
    not BARN_DIR.is_dir(), reason=f"real BARN worlds not found at {BARN_DIR} (set SB3_VLM_BARN_DIR)"
)
needs_applr = pytest.mark.skipif(not APPLR_DIR.is_dir(), reason=f"APPLR actor not found at {APPLR_DIR}")
