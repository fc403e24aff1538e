"""Packaging: dependency floors match the APIs the code uses; the zoo files ship as package data."""

import re
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# The oldest release of each dependency with every API sb3_vlm uses.
NEEDED = {
    # torch.nn.utils.get_total_norm / clip_grads_with_norm_ (VLMTD3._step)
    "torch": (2, 6),
    # TD3(n_steps=...) and NStepReplayBuffer (the APPLR zoo file's n_steps: 4)
    "stable-baselines3": (2, 7),
    "sb3-contrib": (2, 7),
    # rope_parameters in the text config, image_processing_pil_qwen2_vl, mm_token_type_ids for 3-D mRoPE
    "transformers": (5, 0),
}


def _floors() -> dict[str, tuple[int, ...]]:
    """``name -> floor`` of every quoted ``"name>=x.y"`` requirement (tomllib is Python 3.11+; we support 3.10)."""
    found = re.findall(r'"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)"', PYPROJECT.read_text())
    return {name.lower().replace("_", "-"): tuple(int(x) for x in v.split(".")) for name, v in found}


@pytest.mark.parametrize("name, needed", sorted(NEEDED.items()))
def test_dependency_floor_covers_the_apis_we_use(name, needed):
    floor = _floors()[name]
    assert floor[: len(needed)] >= needed, f"pyproject says {name}>={floor}, the code needs >= {needed}"


def test_rl_zoo_floor_matches_sb3():
    assert _floors()["rl-zoo3"][:2] >= NEEDED["stable-baselines3"]
