"""Hypothesis fuzzing of the readers of weights and training state: checkpoint directories (config, safetensors,
adapter, ``sb3_vlm_config.json``, heads, normalisation), replay-buffer ``.npz``, SB3 zips (their pickled entries
included). Each input ends loaded or as a documented exception naming the file; nothing runs (see ``_fuzz``)."""

from __future__ import annotations

import base64
import functools
import io
import json
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _fuzz import MARKER, expect, fuzz_tests, hostile, mutated_bytes, scalars
from _helpers import Payload
from _tiny_ckpt import build_tiny_checkpoint
from gymnasium import spaces
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from stable_baselines3.common.buffers import ReplayBuffer

from sb3_vlm.formats.buffer_npz import load_replay_buffer, save_replay_buffer
from sb3_vlm.formats.checkpoint import CheckpointError, read_checkpoint
from sb3_vlm.formats.sb3_zip import load_algorithm

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


def test_npy_header_that_is_not_python_names_the_file(tmp_path):
    """Found by the 1,000-example profile: numpy parses a .npy header with ast (SyntaxError, TokenError)."""
    root = tmp_path / "checkpoint-5"
    shutil.copytree(_checkpoint()[0], root)
    npy = root / "normalization" / "param_std.npy"
    npy.write_bytes(npy.read_bytes().replace(b"'descr'", b"'d\x82scr'"))
    with pytest.raises(CheckpointError, match=f"{npy}: cannot be read as a .npy array"):
        read_checkpoint(root)


def test_sb3_zip_with_a_corrupt_member_names_the_file(tmp_path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in _zip_entries().items():
            archive.writestr(name, b"\x80\x02]q\x00(e0." if name == "policy.pth" else blob)
    with pytest.raises(ValueError, match=rf"{path}: cannot be loaded as an SB3 TD3 model"):
        load_algorithm(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_algorithm(tmp_path / "missing.zip")
