"""Packaging: dependency floors match the APIs the code uses; the zoo files and the tiny model configuration ship as
package data."""

import re
import subprocess
import sys
import zipfile
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


@pytest.mark.slow
def test_wheel_ships_the_default_zoo_files_and_tiny_config(tmp_path):
    root = PYPROJECT.parent
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(root)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("sb3_vlm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"zoo_configs/td3_vlm_barnnav.yml", "zoo_configs/td3_applr_barnnav.yml"} <= names
    assert "sb3_vlm/model/tiny_qwen2_5_vl.json" in names  # tiny_config() reads it through importlib.resources


@pytest.mark.parametrize("policy", ["vlm", "applr"])
def test_default_zoo_files_come_from_package_resources(policy):
    from importlib import resources

    from sb3_vlm.zoo import default_conf

    path = default_conf(policy)
    assert path.is_file() and path.parent == Path(str(resources.files("zoo_configs")))


def test_a_policy_without_a_default_zoo_file_is_refused():
    from sb3_vlm.zoo import default_conf

    with pytest.raises(ValueError, match="got 'sac'"):
        default_conf("sac")
