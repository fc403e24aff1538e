"""Hypothesis fuzzing of every file reader: trajectory pickles (FTRL 7-field, APPLR 5-field), FTRL RL YAML, FTRL SFT
JSON and CSV, checkpoint directories, replay-buffer ``.npz``, SB3 zips. Each input ends loaded or as a documented
exception naming the file (or key); hostile pickles run nothing; no input hangs (see ``_fuzz``)."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _fuzz import expect as _expect
from _fuzz import fuzz_tests
from _fuzz import time_limit as _fuzz_time_limit
from _helpers import Payload
from _tiny_ckpt import build_tiny_checkpoint
from _trajectories import ftrl_episode, ros_jackal_episode, set_age
from gymnasium import spaces
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from stable_baselines3.common.buffers import ReplayBuffer

from envs.planners import DWA_PARAMS
from sb3_vlm.formats.buffer_npz import load_replay_buffer, save_replay_buffer
from sb3_vlm.formats.checkpoint import CheckpointError, read_checkpoint
from sb3_vlm.formats.ftrl_config import apply_ftrl_config, read_ftrl_config
from sb3_vlm.formats.ftrl_sft import FTRLSFTError, read_ftrl_sft
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.formats.trajectories import load_trajectories
from sb3_vlm.zoo import default_conf, load_zoo_config

IMAGE_MODES = ["RGB", "L", "RGBA", "P", "1", "I", "F", "I;16", "CMYK", "LA"]
MARKER = Path(tempfile.gettempdir()) / f"sb3_vlm_fuzz_executed_{os.getpid()}"
"""A hostile input that runs anything creates this file."""

# -------------------------------------------------------------------------------------------------- generic values

images = st.builds(
    lambda mode, w, h: Image.new(mode, (w, h)), st.sampled_from(IMAGE_MODES), st.integers(0, 12), st.integers(0, 12)
)
arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.int64, np.bool_, np.complex64, np.str_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    arrays,
    images,
)
anything = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.tuples(inner, inner), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
hostile = st.sampled_from(
    [
        Payload(os.system, f"touch {MARKER}"),
        Payload(open, str(MARKER), "w"),
        Payload(eval, f"open({str(MARKER)!r}, 'w')"),
        Payload(exec, f"open({str(MARKER)!r}, 'w')"),
        Payload(bytearray, 10**12),  # 1 TB if called
        Payload(np.ndarray, (10**6, 10**6)),
    ]
)


def expect(
    reader: str, call: Any, allowed: tuple[type[BaseException], ...], names: list[str], label: Any = None
) -> Any:
    """:func:`_fuzz.expect`, then: nothing ran."""
    try:
        return _expect(reader, call, allowed, names, label)
    finally:
        assert not MARKER.exists(), f"{reader}: a hostile input ran code"


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes changed, maybe truncated or extended."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    if out and draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    if draw(st.integers(0, 9)) == 0:
        out += draw(st.binary(max_size=16))
    return bytes(out)


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
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.lists(st.integers(), max_size=3)
)


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

# ------------------------------------------------------------------------------------------ checkpoint directories


@functools.cache
def _checkpoint() -> tuple[Path, list[str]]:
    """A valid tiny checkpoint (with adapter, history, normalisation, sb3_vlm_config.json) and its files."""
    root = Path(tempfile.mkdtemp(prefix="fuzz_ckpt_")) / "checkpoint-5"
    build_tiny_checkpoint(root)
    (root / "sb3_vlm_config.json").write_text(json.dumps({"base_model": "tiny", "vlm": {"backbone": "tiny"}}))
    (root / "actor_head").mkdir()
    shutil.copy(root / "adapter_model.safetensors", root / "actor_head" / "model.safetensors")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return root, files


@st.composite
def checkpoint_edits(draw: st.DrawFn) -> list[tuple[int, str, bytes]]:
    """``(file index, action, bytes)``: delete a file, replace it with random or mutated bytes, or with JSON."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "random", "mutate", "json"]))
        payload = draw(st.binary(max_size=64))
        if action == "json":
            payload = json.dumps(draw(st.dictionaries(st.text(max_size=6), scalars, max_size=4))).encode()
        edits.append((draw(st.integers(0, 99)), action, payload, draw(st.integers(0, 2**16))))
    return edits


def check_checkpoint(edits: list[tuple[int, str, bytes, int]]) -> None:
    source, files = _checkpoint()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "checkpoint-5"
        shutil.copytree(source, root)
        for index, action, payload, seed in edits:
            file = root / files[index % len(files)]
            if not file.exists():
                continue
            if action == "delete":
                file.unlink()
            elif action == "mutate" and file.stat().st_size:
                data = bytearray(file.read_bytes())
                rng = np.random.default_rng(seed)
                for at in rng.integers(0, len(data), size=3):
                    data[at] = rng.integers(0, 256)
                file.write_bytes(bytes(data[: rng.integers(len(data) // 2, len(data) + 1)]))
            elif action != "mutate":
                file.write_bytes(payload)
        expect("checkpoint directories", lambda: read_checkpoint(root), (CheckpointError,), [str(root)])


test_fuzz_checkpoints, test_fuzz_checkpoints_slow = fuzz_tests(
    "checkpoint directories", checkpoint_edits(), check_checkpoint
)

# ------------------------------------------------------------------------------------------- replay-buffer .npz


def _buffer() -> ReplayBuffer:
    return ReplayBuffer(8, spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), n_envs=1)


@functools.cache
def _npz() -> dict[str, np.ndarray]:
    buffer = _buffer()
    for i in range(5):
        obs = np.full((1, 3), i, np.float32)
        buffer.add(obs, obs + 1, np.zeros((1, 2), np.float32), np.ones(1), np.zeros(1), [{}])
    path = Path(tempfile.mkdtemp()) / "b.npz"
    save_replay_buffer(buffer, path)
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@st.composite
def npz_files(draw: st.DrawFn) -> bytes:
    arrays = dict(_npz())
    for key in draw(st.lists(st.sampled_from([*arrays, "extra"]), max_size=3)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            arrays.pop(key, None)
        elif choice == 1:
            arrays[key] = draw(arrays_strategy)
        else:
            header = {k: draw(scalars) for k in ("pos", "full", "buffer_size", "n_envs") if draw(st.integers(0, 4))}
            text = json.dumps(header) if choice == 2 else draw(st.text(max_size=20))
            arrays["header"] = np.frombuffer(text.encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return draw(mutated_bytes(out.getvalue())) if draw(st.integers(0, 3)) == 0 else out.getvalue()


arrays_strategy = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=12),
)


def check_npz(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay_buffer.npz"
        path.write_bytes(data)
        buffer = _buffer()
        expect("replay-buffer npz", lambda: load_replay_buffer(buffer, path), (ValueError,), [str(path)])
        assert 0 <= buffer.pos <= buffer.buffer_size


test_fuzz_replay_npz, test_fuzz_replay_npz_slow = fuzz_tests("replay-buffer npz", npz_files(), check_npz)

# ------------------------------------------------------------------------------------------------------ SB3 zips


@functools.cache
def _zip_entries() -> dict[str, bytes]:
    from stable_baselines3 import TD3

    model = TD3("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8]), learning_starts=10, buffer_size=50)
    path = Path(tempfile.mkdtemp()) / "model.zip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _serialized(obj: Any) -> dict[str, str]:
    return {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(obj)).decode()}


@st.composite
def sb3_zips(draw: st.DrawFn) -> bytes:
    entries = dict(_zip_entries())
    data = json.loads(entries["data"])
    for key in draw(st.lists(st.sampled_from(sorted(data)), max_size=3)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            data.pop(key, None)
        elif choice == 1:
            data[key] = _serialized(draw(hostile))
        else:
            data[key] = draw(scalars)
    entries["data"] = json.dumps(data).encode()
    for name in draw(st.lists(st.sampled_from(sorted(entries)), max_size=2)):
        entries[name] = draw(mutated_bytes(entries[name]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, blob in entries.items():
            archive.writestr(name, blob)
    return draw(mutated_bytes(out.getvalue())) if draw(st.integers(0, 4)) == 0 else out.getvalue()


def check_sb3_zip(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.zip"
        path.write_bytes(data)
        expect("SB3 zips", lambda: load_algorithm(path), (ValueError,), [str(path)])


test_fuzz_sb3_zips, test_fuzz_sb3_zips_slow = fuzz_tests("SB3 zips", sb3_zips(), check_sb3_zip)

# ------------------------------------------------------------------- crashes the fuzzing found, one test each


def test_sb3_zip_payload_is_refused_not_run(tmp_path):
    entries = dict(_zip_entries())
    data = json.loads(entries["data"])
    data["lr_schedule"] = _serialized(Payload(open, str(MARKER), "w"))
    entries["data"] = json.dumps(data).encode()
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in entries.items():
            archive.writestr(name, blob)
    with pytest.raises(ValueError, match=rf"{path}: data\['lr_schedule'\]: refusing to load 'io.open'"):
        load_algorithm(path)
    assert not MARKER.exists()


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


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("header"), "not a replay-buffer checkpoint"),
        (lambda d: d.update(header=np.frombuffer(b"\x80", np.uint8)), "not a replay-buffer checkpoint"),
        (lambda d: d.update(header=np.frombuffer(b'{"pos": 1}', np.uint8)), "header must hold ints"),
        (lambda d: d.update(rewards=np.zeros((99, 1), np.float32)), "field 'rewards' expected 5"),
    ],
)
def test_replay_npz_errors_name_the_file(tmp_path, edit, match):
    arrays = dict(_npz())
    edit(arrays)
    path = tmp_path / "replay_buffer.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as error:
        load_replay_buffer(_buffer(), path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "name, data",
    [("actor_head/model.safetensors", b"\x00"), ("sb3_vlm_config.json", b"\x80"), ("normalization/param_std.npy", b"")],
)
def test_checkpoint_errors_name_the_file(tmp_path, name, data):
    root = tmp_path / "checkpoint-5"
    shutil.copytree(_checkpoint()[0], root)
    (root / name).write_bytes(data)
    with pytest.raises(CheckpointError, match="cannot be read") as error:
        read_checkpoint(root)
    assert str(root / name) in str(error.value)


def test_ftrl_yaml_alias_bomb_is_refused_not_walked(tmp_path):
    lines = ["l0: &l0 {a: 1, b: 2}"] + [f"l{i}: &l{i} {{a: *l{i - 1}, b: *l{i - 1}}}" for i in range(1, 40)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    config = read_ftrl_config(path)
    with _fuzz_time_limit(10), pytest.raises(ValueError, match="more than 10000 keys"):
        apply_ftrl_config(config, load_zoo_config(default_conf("vlm")))


def test_slow_fuzz_findings(tmp_path):
    """Inputs the 1,000-example profile found: an out-of-range YAML escape, a .npy header that is not Python, an
    image name too long to stat."""
    path = tmp_path / "ftrl.yaml"
    path.write_text('a: "\\U0011ffff"\n')
    with pytest.raises(ValueError, match=rf"{path}: FTRL config is not valid YAML"):
        read_ftrl_config(path)
    root = tmp_path / "checkpoint-5"
    shutil.copytree(_checkpoint()[0], root)
    npy = root / "normalization" / "param_std.npy"
    npy.write_bytes(npy.read_bytes().replace(b"'descr'", b"'d\x82scr'"))
    with pytest.raises(CheckpointError, match=f"{npy}: cannot be read as a .npy array"):
        read_checkpoint(root)
    _sft_folder(tmp_path)
    csv = tmp_path / "data.csv"
    csv.write_text(CSV_HEADER + "\n1," + "9" * 400 + "," + "0.5," * 8 + "0.5\n")
    with pytest.raises(FTRLSFTError, match="cannot be read"):
        read_ftrl_sft(csv, (8, 12))


def test_sb3_zip_with_a_corrupt_member_names_the_file(tmp_path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in _zip_entries().items():
            archive.writestr(name, b"\x80\x02]q\x00(e0." if name == "policy.pth" else blob)
    with pytest.raises(ValueError, match=rf"{path}: cannot be loaded as an SB3 TD3 model"):
        load_algorithm(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_algorithm(tmp_path / "missing.zip")
