"""FTRL's DWA config as it is: ``freeze_vlm_actor: false`` against a supervised checkpoint saved with LoRA trains
that adapter with no extra flag; a missing ``vlm_checkpoint_path`` is named before anything is loaded."""

import json
from pathlib import Path

import pytest
import yaml
from _tiny_ckpt import build_tiny_checkpoint
from safetensors.torch import load_file

from sb3_vlm.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ADAPTER = "adapter_model.safetensors"


def ftrl_file(tmp_path: Path, checkpoint: Path) -> Path:
    """FTRL's ``configs/ftrl_vlm_dwa.yaml`` keys (its checkpoint path says ``lora-True``), at a test budget."""
    config = {
        "env_config": {"env_id": "dwa_param-v0", "seed": 3},
        "training_config": {
            "vlm_checkpoint_path": str(checkpoint),
            "freeze_vlm_actor": False,
            "freeze_dpt_actor": False,
            "actor_lr": 1e-3,
            "training_args": {"max_step": 16, "batch_size": 4, "pre_collect": 8},
        },
    }
    path = tmp_path / "ftrl_vlm_dwa.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(tmp_path: Path, ftrl: Path) -> int:
    args = ["train", "--ftrl-config", str(ftrl), "--n-envs", "2", "--log-dir", str(tmp_path / "runs")]
    return main([*args, "--final-eval", "0", "--eval-freq", "0", "--no-progress-bar"])


def test_unfrozen_vlm_trains_the_checkpoints_adapter(tmp_path):
    checkpoint = build_tiny_checkpoint(tmp_path / "sft" / "lora-True" / "checkpoint-5").path
    assert train(tmp_path, ftrl_file(tmp_path, checkpoint)) == 0
    policy = next((tmp_path / "runs").iterdir()) / "policy"
    assert json.loads((policy / "sb3_vlm_config.json").read_text())["vlm"]["freeze_vlm"] is False
    before, after = load_file(checkpoint / ADAPTER), load_file(policy / ADAPTER)
    assert sorted(before) == sorted(after) and any("lora_B" in name for name in after)
    changed = [name for name in before if not before[name].equal(after[name])]
    assert len(changed) == len(before), f"adapter tensors left untouched: {sorted(set(before) - set(changed))}"


def test_missing_checkpoint_path_is_named_first(tmp_path, capsys):
    missing = tmp_path / "sft" / "lora-True" / "checkpoint-5000"
    assert train(tmp_path, ftrl_file(tmp_path, missing)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"sb3-vlm train: error: FTRL config: training_config.vlm_checkpoint_path '{missing}'")
    assert "is not a directory" in err and "VLMDPTExtractor" not in err
    assert not (tmp_path / "runs").exists()
