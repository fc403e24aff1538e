"""FTRL's supervised data set (SFT JSON + PNGs, per-actor data.csv) read by `pretrain --data`, written by `collect`."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from PIL import Image

from envs.planners import DWA_PARAMS
from sb3_vlm._constants import VELOCITY_OUTPUTS
from sb3_vlm.cli import main
from sb3_vlm.formats.ftrl_sft import FTRLSFTError, read_ftrl_sft
from sb3_vlm.formats.safe_pickle import safe_load
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.workflows.collector import CollectSettings, collect

SIZE = (56, 84)
NAMES = DWA_PARAMS.names + VELOCITY_OUTPUTS
# data.csv under FTRL's own column names (§2.8): inflation_radius -> final_inflation, next_linear_vel -> with a colon
COLUMNS = ["img_label", "linear_vel", "angular_vel", "max_vel_x", "max_vel_theta", "vx_samples", "vtheta_samples",
           "path_distance_bias", "goal_distance_bias", "final_inflation", "next_linear_vel:",
           "next_angular_vel"]  # fmt: skip


def ftrl_sft_folder(root: Path, n_actors: int = 2, per_actor: int = 6, seed: int = 0) -> tuple[Path, np.ndarray]:
    """FTRL's layout: actor_<k>/HB_<id:06d>.png + actor_<k>/data.csv, and the SFT JSON over them."""
    rng = np.random.default_rng(seed)
    samples, labels = [], []
    for actor in range(n_actors):
        actor_dir = root / f"actor_{actor}"
        actor_dir.mkdir(parents=True)
        with open(actor_dir / "data.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for i in range(per_actor):
                k = 100 * actor + i
                Image.fromarray(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(actor_dir / f"HB_{k:06d}.png")
                params = [*np.round(DWA_PARAMS.from_unit(rng.uniform(-1, 1, 7)), 3).tolist(), 0.5, 0.1 * i]
                writer.writerow([k, 0.4, -0.1, *params])
                labels.append(params)
                samples.append(
                    {
                        "id": f"HB_{k:06d}",
                        "images": [f"actor_{actor}/HB_{k:06d}.png"],
                        "parameters": params,
                        "prev_parameters": params,
                        "conversations": ["<image>\n    Current robot state:"],
                        "system_prompt": "\n    You are a navigation scene analyzer\n\n",
                    }
                )
    json_path = root / "sft.json"
    json_path.write_text(json.dumps(samples))
    return json_path, np.asarray(labels)


def test_json_and_csv_read_the_same_samples(tmp_path):
    json_path, labels = ftrl_sft_folder(tmp_path)
    from_json = read_ftrl_sft(json_path, SIZE)
    from_csv = read_ftrl_sft(tmp_path, SIZE)
    for data in (from_json, from_csv):
        assert data.images.shape == (12, 3, *SIZE) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(data.labels, labels)
        assert data.names == NAMES
        np.testing.assert_array_equal(data.groups, [0] * 6 + [1] * 6)  # one group per actor directory
    np.testing.assert_array_equal(from_json.images, from_csv.images)
    frame = np.asarray(Image.open(tmp_path / "actor_1" / "HB_000102.png").resize(SIZE[::-1], Image.BILINEAR))
    np.testing.assert_array_equal(from_json.images[8].transpose(1, 2, 0), frame)
    one = read_ftrl_sft(tmp_path / "actor_1" / "data.csv", SIZE)
    np.testing.assert_array_equal(one.labels, labels[6:])


def test_bad_data_errors_name_file_field_and_value(tmp_path):
    json_path, _ = ftrl_sft_folder(tmp_path)
    (tmp_path / "actor_1" / "HB_000103.png").unlink()
    with pytest.raises(FTRLSFTError, match=r"sft.json, sample 9 \(id 'HB_000103'\): image .*HB_000103.png not found"):
        read_ftrl_sft(json_path, SIZE)
    with pytest.raises(FTRLSFTError, match=r"actor_1/data.csv, line 5: image .*HB_000103.png not found"):
        read_ftrl_sft(tmp_path, SIZE)

    samples = json.loads(json_path.read_text())
    del samples[2]["system_prompt"]
    json_path.write_text(json.dumps(samples))
    with pytest.raises(FTRLSFTError, match=r"sample 2 \(id 'HB_000002'\): missing field\(s\) \['system_prompt'\]"):
        read_ftrl_sft(json_path, SIZE)
    for sample in samples:
        sample["parameters"] = sample["parameters"][:5]
        sample["system_prompt"] = ""
    json_path.write_text(json.dumps(samples[:2]))
    with pytest.raises(FTRLSFTError, match=r"'parameters': expected 9 values \(max_vel_x, .*next_angular_vel\), got 5"):
        read_ftrl_sft(json_path, SIZE)

    csv_path = tmp_path / "actor_0" / "data.csv"
    rows = list(csv.reader(open(csv_path)))
    rows[0][rows[0].index("next_linear_vel:")] = "next_linear_vel"  # our name, not FTRL's column
    csv.writer(open(csv_path, "w", newline="")).writerows(rows)
    with pytest.raises(FTRLSFTError, match=r"actor_0/data.csv: missing column\(s\) \['next_linear_vel:'\]"):
        read_ftrl_sft(csv_path, SIZE)
    rows[0][rows[0].index("next_linear_vel")] = "next_linear_vel:"
    rows[3][COLUMNS.index("final_inflation")] = "n/a"
    csv.writer(open(csv_path, "w", newline="")).writerows(rows)
    with pytest.raises(FTRLSFTError, match=r"data.csv, line 4, column 'final_inflation': expected a number, got 'n/a'"):
        read_ftrl_sft(csv_path, SIZE)
    with pytest.raises(FileNotFoundError):
        read_ftrl_sft(tmp_path / "none.json", SIZE)


def test_pretrain_trains_on_ftrl_sft_json(tmp_path):
    json_path, _ = ftrl_sft_folder(tmp_path / "data")
    out = tmp_path / "ckpt"
    argv = ["pretrain", "--data", str(json_path), "--image-size", "56x84", "--epochs", "1", "--batch-size", "4",
            "--no-progress-bar", "--out", str(out), "--val-fraction", "0.5"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "sb3_vlm_config.json").read_text())["sft"]
    assert saved["parameter_names"] == list(NAMES) and saved["image_shape"] == [3, *SIZE]
    assert VLMDPTExtractor(spaces.Box(0, 255, (3, *SIZE), np.uint8), backbone=str(out)).dpt.num_params == 9
    (tmp_path / "data" / "actor_0" / "HB_000001.png").unlink()
    assert main([*argv[:2], str(tmp_path / "data"), *argv[3:]]) == 2  # clear error, no traceback


def test_collect_writes_ftrl_sft_data_that_reads_back(tmp_path):
    buffer = tmp_path / "buffer"
    settings = CollectSettings(
        actor_id=3, episodes=2, max_save_time=0, progress_bar=False, sft=True, env_kwargs={"max_steps": 4}
    )
    summary = collect(buffer, None, settings)
    records = [step for path in summary.saved for step in safe_load(path)]
    data = read_ftrl_sft(buffer / "sft_data.json", SIZE)
    assert len(data.labels) == len(records) == summary.steps
    np.testing.assert_allclose(data.labels[:, :7], [r[1] for r in records])  # the parameters sent
    # Velocity labels: measured at the end of the step = the next step's start velocity within an episode.
    row = 0
    for path in summary.saved:
        episode = safe_load(path)
        starts = [r[4]["last_state"] for r in episode]
        np.testing.assert_allclose(data.labels[row : row + len(episode) - 1, 7:], starts[1:], atol=1e-6)
        row += len(episode)
    samples = json.loads((buffer / "sft_data.json").read_text())
    first = samples[0]
    assert first["id"] == "FTRL_000000" and first["images"] == ["actor_3/FTRL_000000.png"]
    assert "Target local planner: DWA" in first["conversations"][0] and first["conversations"][0].startswith(
        "<image>\n"
    )
    assert first["system_prompt"].startswith("\n    You are a navigation scene analyzer")
    # The image of each sample is the frame the step's parameters were chosen from (info['img_PIL']).
    start = np.asarray(records[1][4]["img_PIL"])
    np.testing.assert_array_equal(np.asarray(Image.open(buffer / samples[1]["images"][0])), start)
    np.testing.assert_array_equal(data.labels, read_ftrl_sft(buffer, SIZE).labels)
