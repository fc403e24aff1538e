"""Real data from the field, read from beside the project (tests that need it skip when it is absent)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BARN_DIR = SHARED_DATA / "barn" / "BARN"
"""The 50 published BARN test worlds + all 300 reference paths."""
APPLR_DIR = SHARED_DATA / "applr"
"""The published APPLR actor (``policy_actor``) and its config."""

needs_barn = pytest.mark.skipif(not BARN_DIR.is_dir(), reason=f"real BARN worlds not found at {BARN_DIR}")
needs_applr = pytest.mark.skipif(not APPLR_DIR.is_dir(), reason=f"APPLR actor not found at {APPLR_DIR}")
