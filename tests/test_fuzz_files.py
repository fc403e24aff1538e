"""Hypothesis fuzzing of the readers of collectors' and FTRL's files: trajectory pickles (FTRL 7-field, APPLR
5-field), FTRL RL YAML, FTRL SFT JSON and CSV. Each input ends loaded or as a documented exception naming the file (or
key); hostile pickles run nothing; no input hangs (see ``_fuzz``)."""

from __future__ import annotations

import functools
import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _fuzz import anything, expect, fuzz_tests, hostile, mutated_bytes, scalars, time_limit
from _trajectories import ftrl_episode, ros_jackal_episode, set_age
from hypothesis import strategies as st
from PIL import Image

from envs.planners import DWA_PARAMS
from sb3_vlm.formats.ftrl_config import apply_ftrl_config, read_ftrl_config
from sb3_vlm.formats.ftrl_sft import FTRLSFTError, read_ftrl_sft
from sb3_vlm.formats.trajectories import load_trajectories
from sb3_vlm.zoo import default_conf, load_zoo_config

# ---------------------------------------------------------------------------------------------- trajectory pickles


@st.composite
def episodes(draw: st.DrawFn) -> Any:
    """An FTRL or APPLR episode with some fields replaced (by random, hostile or nothing), or anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(anything)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(1, 3))
    if draw(st.booleans()):
        records, _ = ftrl_episode(rng, n, act_size=draw(st.sampled_from([7, 9])))
        for record in records:
            record[4]["img_PIL"] = record[4]["img_PIL"].resize((12, 8))
    else:
        records = ros_jackal_episode(rng, n, flat_obs=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        record = records[draw(st.integers(0, n - 1))]
        field = draw(st.integers(0, len(record)))
        value = draw(st.one_of(anything, hostile)) if draw(st.integers(0, 5)) else draw(hostile)
        if field == len(record) and isinstance(record[4], dict):  # an info entry
            record[4][draw(st.sampled_from(["img_PIL", "last_state", "status", "time", "world", "model_version"]))] = (
                value
            )
        else:
            record[min(field, len(record) - 1)] = value
    if draw(st.integers(0, 9)) == 0:
        records.append(draw(anything))
    return records


@st.composite
def trajectory_files(draw: st.DrawFn) -> bytes:
    data = pickle.dumps(draw(episodes()), protocol=draw(st.integers(0, 5)))
    return draw(mutated_bytes(data)) if draw(st.integers(0, 2)) == 0 else data


def check_trajectory(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "actor_0" / "traj_0.pickle"
        path.parent.mkdir()
        path.write_bytes(data)
        set_age(path, 60)
        read = functools.partial(load_trajectories, tmp, params=DWA_PARAMS, image_size=(8, 12), min_age_s=0)
        result = expect(
            "trajectory pickles", read, (), [], lambda r: r.skipped[0].reason.split(":")[0] if r.skipped else "ok"
        )
        assert len(result.trajectories) + len(result.skipped) == 1
        for skipped in result.skipped:
            assert skipped.path == path and skipped.reason


test_fuzz_trajectory_pickles, test_fuzz_trajectory_pickles_slow = fuzz_tests(
    "trajectory pickles", trajectory_files(), check_trajectory
)

# ------------------------------------------------------------------------------------------------- FTRL RL YAML

FTRL_KEYS = [
    "training_config.actor_lr",
    "training_config.buffer_size",
    "training_config.freeze_vlm_actor",
    "training_config.freeze_history_actor",
    "training_config.freeze_dpt_critic",
    "training_config.vlm_checkpoint_path",
    "training_config.use_4bit",
    "training_config.exploration_noise_end",
    "training_config.policy_args.n_step",
    "training_config.policy_args.exploration_noise",
    "training_config.training_args.collect_per_step",
    "training_config.training_args.max_step",
    "env_config.env_id",
    "env_config.seed",
    "ftrl_config",
    "unknown.key",
]


@st.composite
def ftrl_yaml(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # text of YAML's syntax characters
        return draw(st.text(alphabet=st.sampled_from(list("ab:- \n\t{}[]&*!|>'\"#%@`,?0123.e")), max_size=60))
    if kind == 1:
        return draw(st.text(max_size=60))
    config: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(FTRL_KEYS), max_size=6)):
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[leaf] = draw(scalars)
    text = yaml.safe_dump(config)
    return draw(mutated_bytes(text.encode())).decode("utf-8", "replace") if kind == 3 else text


def check_ftrl_yaml(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ftrl.yaml"
        path.write_text(text)
        config = expect("FTRL RL YAML", lambda: read_ftrl_config(path), (ValueError,), [str(path)])
        if config is not None:
            cfg = load_zoo_config(default_conf("vlm"))
            names = ["FTRL config: "]
            expect("FTRL RL YAML", lambda: apply_ftrl_config(config, cfg), (ValueError, FileNotFoundError), names)


test_fuzz_ftrl_yaml, test_fuzz_ftrl_yaml_slow = fuzz_tests("FTRL RL YAML", ftrl_yaml(), check_ftrl_yaml)

# -------------------------------------------------------------------------------------------- FTRL SFT JSON, CSV

SFT_FIELDS = ["id", "images", "parameters", "conversations", "system_prompt"]
CSV_HEADER = "img_label,Method,max_vel_x,max_vel_theta,vx_samples,vtheta_samples,path_distance_bias,"
CSV_HEADER += "goal_distance_bias,final_inflation,next_linear_vel:,next_angular_vel"


def _sft_folder(tmp: Path) -> None:
    """One good PNG, one corrupt PNG and a directory named like a PNG."""
    Image.new("RGB", (12, 8), (10, 20, 30)).save(tmp / "HB_000001.png")
    (tmp / "HB_000002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp / "HB_000003.png").mkdir()


image_names = st.sampled_from(["HB_000001.png", "HB_000002.png", "HB_000003.png", "missing.png", "../x.png", "\x00"])


@st.composite
def sft_json(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=40))
    samples = []
    for i in range(draw(st.integers(0, 3))):
        sample = {
            "id": i,
            "images": [draw(image_names)],
            "parameters": [float(x) for x in np.linspace(0.1, 1.0, 9)],
            "conversations": [],
            "system_prompt": "",
        }
        for field in draw(st.lists(st.sampled_from(SFT_FIELDS), max_size=2)):
            if draw(st.booleans()):
                sample[field] = draw(st.one_of(scalars, st.lists(scalars, max_size=10)))
            else:
                sample.pop(field, None)
        samples.append(sample)
    body = samples if draw(st.integers(0, 9)) else draw(scalars)
    text = json.dumps(body, allow_nan=True).encode()
    return draw(mutated_bytes(text)) if draw(st.integers(0, 3)) == 0 else text


@st.composite
def sft_csv(draw: st.DrawFn) -> bytes:
    cell = st.one_of(
        st.sampled_from(["1", "0.5", "nan", "inf", "", "1e400", "9" * 400, "-0"]), st.text(max_size=6), image_names
    )
    header = CSV_HEADER if draw(st.integers(0, 5)) else ",".join(draw(st.lists(st.text(max_size=6), max_size=4)))
    rows = [header]
    for _ in range(draw(st.integers(0, 3))):
        cells = ["1", "HB", *["0.5"] * 9]
        for _ in range(draw(st.integers(0, 3))):
            cells[draw(st.integers(0, len(cells) - 1))] = draw(cell)
        rows.append(",".join(cells))
    text = "\n".join(rows).encode()
    return draw(mutated_bytes(text)) if draw(st.integers(0, 3)) == 0 else text


def _check_sft(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _sft_folder(Path(tmp))
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        expect(f"FTRL SFT {suffix[1:].upper()}", lambda: read_ftrl_sft(path, (8, 12)), (FTRLSFTError,), [str(path)])


def check_sft_json(data: bytes) -> None:
    _check_sft(".json", data)


def check_sft_csv(data: bytes) -> None:
    _check_sft(".csv", data)


test_fuzz_sft_json, test_fuzz_sft_json_slow = fuzz_tests("FTRL SFT JSON", sft_json(), check_sft_json)
test_fuzz_sft_csv, test_fuzz_sft_csv_slow = fuzz_tests("FTRL SFT CSV", sft_csv(), check_sft_csv)

# ------------------------------------------------------------------- crashes the fuzzing found, one test each


@pytest.mark.parametrize(
    "suffix, data, match",
    [
        (".json", b"\x80[]", "not valid JSON"),
        (".json", b'[{"id": 0, "images": ["HB_000001.png"], "parameters": [1e999999], "conversations": [], '
         b'"system_prompt": ""}]', "expected a list of finite numbers"),
        (".json", json.dumps([{**dict.fromkeys(SFT_FIELDS, []), "images": ["a"], "parameters": [10**400]}]).encode(),
         "expected a list of finite numbers"),
        (".csv", CSV_HEADER.encode() + b"\n\x80", "not a readable CSV file"),
        (".csv", CSV_HEADER.encode() + b"\n1\x00,HB," + b"0.5," * 8 + b"0.5", "column 'img_label'"),
        (".csv", CSV_HEADER.encode() + b"\n" + b"9" * 400 + b",HB," + b"0.5," * 8 + b"0.5", "frame number"),
    ],
)  # fmt: skip
def test_sft_reader_names_the_file(tmp_path, suffix, data, match):
    _sft_folder(tmp_path)
    path = tmp_path / f"data{suffix}"
    path.write_bytes(data)
    with pytest.raises(FTRLSFTError, match=match) as error:
        read_ftrl_sft(path, (8, 12))
    assert str(path) in str(error.value)


def test_ftrl_yaml_alias_bomb_is_refused_not_walked(tmp_path):
    lines = ["l0: &l0 {a: 1, b: 2}"] + [f"l{i}: &l{i} {{a: *l{i - 1}, b: *l{i - 1}}}" for i in range(1, 40)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    config = read_ftrl_config(path)
    with time_limit(10), pytest.raises(ValueError, match="more than 10000 keys"):
        apply_ftrl_config(config, load_zoo_config(default_conf("vlm")))


def test_slow_fuzz_findings_text(tmp_path):
    """Inputs the 1,000-example profile found: an out-of-range YAML escape, an image name too long to stat."""
    path = tmp_path / "ftrl.yaml"
    path.write_text('a: "\\U0011ffff"\n')
    with pytest.raises(ValueError, match=rf"{path}: FTRL config is not valid YAML"):
        read_ftrl_config(path)
    _sft_folder(tmp_path)
    csv = tmp_path / "data.csv"
    csv.write_text(CSV_HEADER + "\n1," + "9" * 400 + "," + "0.5," * 8 + "0.5\n")
    with pytest.raises(FTRLSFTError, match="cannot be read"):
        read_ftrl_sft(csv, (8, 12))
