"""FTRL checkpoint layout: read, write (atomic), zero-numel tensors, clear errors."""

import json
import os

import numpy as np
import pytest
import torch as th
from _tiny_ckpt import build_tiny_checkpoint

from sb3_vlm import DPTHead, HistoryEncoder
from sb3_vlm.formats.checkpoint import (
    CheckpointError,
    FTRLCheckpoint,
    is_checkpoint_dir,
    load_module_state,
    read_checkpoint,
    read_state_dict,
    write_checkpoint,
)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint-1")


def tree(path) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, f), path): open(os.path.join(root, f), "rb").read()
        for root, _, files in os.walk(path)
        for f in files
    }


def test_reads_an_ftrl_checkpoint(tiny_ckpt):
    assert is_checkpoint_dir(tiny_ckpt.path)
    ckpt = read_checkpoint(tiny_ckpt.path)
    assert ckpt.num_params == 9
    assert ckpt.adapter_dir == tiny_ckpt.path
    assert ckpt.history_config["num_history_frames"] == 2
    for key, value in tiny_ckpt.head.state_dict().items():
        assert th.equal(ckpt.head_state[key], value)
    load_module_state(HistoryEncoder(), ckpt.history_state, "history")
    assert ckpt.param_mean.dtype == np.float64
    np.testing.assert_array_equal(ckpt.param_std, tiny_ckpt.param_std)


def test_write_read_round_trip_in_ftrl_layout(tmp_path):
    head, history = DPTHead(64, 7, use_history=True), HistoryEncoder()
    parts = FTRLCheckpoint(
        head_state=head.state_dict(),
        history_state=history.state_dict(),
        history_config={"use_history": True, "num_history_frames": 2, "history_dim": 256},
        param_mean=np.arange(7.0),
        param_std=np.ones(7),
        extras={"actor_head": {"mu.0.weight": th.randn(7, 256)}},
        config={"base_model": "tiny"},
    )
    path = write_checkpoint(tmp_path / "out", parts)
    assert set(tree(path)) == {
        "regression_head/pytorch_model.bin",
        "history_encoder/pytorch_model.bin",
        "history_config.json",
        "normalization/param_mean.npy",
        "normalization/param_std.npy",
        "actor_head/model.safetensors",
        "sb3_vlm_config.json",
    }
    back = read_checkpoint(path)
    load_module_state(DPTHead(64, 7, use_history=True), back.head_state, "head")
    assert all(th.equal(back.history_state[k], v) for k, v in history.state_dict().items())
    np.testing.assert_array_equal(back.param_mean, np.arange(7.0))
    assert th.equal(back.extras["actor_head"]["mu.0.weight"], parts.extras["actor_head"]["mu.0.weight"])
    assert back.config == {"base_model": "tiny"} and back.adapter_dir is None
    # FTRL's own loader reads the head with plain torch.load
    assert set(th.load(path / "regression_head" / "pytorch_model.bin", weights_only=True)) == set(head.state_dict())


def test_zero_numel_tensors_are_dropped(tmp_path):
    state = DPTHead(32, 5).state_dict()
    th.save({**state, "zero3_placeholder": th.empty(0)}, tmp_path / "head.bin")
    assert set(read_state_dict(tmp_path / "head.bin")) == set(state)


def test_a_zero3_placeholder_for_a_needed_key_is_named(tmp_path):
    state = DPTHead(32, 5).state_dict()
    state["mlp.3.weight"] = th.empty(0)
    th.save(state, tmp_path / "head.bin")
    with pytest.raises(CheckpointError, match=r"head.bin.*missing keys \['mlp.3.weight'\]"):
        load_module_state(DPTHead(32, 5), read_state_dict(tmp_path / "head.bin"), str(tmp_path / "head.bin"))


def test_shape_mismatch_names_file_key_and_shapes(tiny_ckpt):
    ckpt = read_checkpoint(tiny_ckpt.path)
    source = str(tiny_ckpt.path / "regression_head" / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        load_module_state(DPTHead(64, 9, use_history=True), ckpt.head_state, source)
    message = str(info.value)
    assert source in message and "'projections.0.0.weight'" in message
    assert "expected shape (256, 64), got (256, 128)" in message


def test_missing_parts_are_named(tmp_path, tiny_ckpt):
    with pytest.raises(CheckpointError, match="regression_head/pytorch_model.bin: file not found"):
        read_checkpoint(tmp_path)
    broken = tmp_path / "broken"
    write_checkpoint(
        broken, FTRLCheckpoint(head_state=tiny_ckpt.head.state_dict(), param_mean=np.zeros(9), param_std=np.ones(9))
    )
    (broken / "normalization" / "param_std.npy").unlink()
    with pytest.raises(CheckpointError, match="param_std.npy: file not found"):
        read_checkpoint(broken)
    np.save(broken / "normalization" / "param_std.npy", np.ones(4))
    with pytest.raises(CheckpointError, match=r"param_std.npy: expected shape \(9,\).*got \(4,\)"):
        read_checkpoint(broken)
    (broken / "history_config.json").write_text(json.dumps({"use_history": True}))
    with pytest.raises(CheckpointError, match="history_encoder/pytorch_model.bin: file not found"):
        read_checkpoint(broken)


def test_refuses_pickled_code(tmp_path):
    th.save({"weights": th.zeros(2), "payload": np.zeros(2, dtype=object)}, tmp_path / "evil.bin")
    with pytest.raises(CheckpointError, match="evil.bin: cannot be read"):
        read_state_dict(tmp_path / "evil.bin")


def test_crash_mid_save_leaves_previous_checkpoint_intact(tmp_path, tiny_ckpt):
    target = tmp_path / "policy"
    write_checkpoint(target, FTRLCheckpoint(head_state=tiny_ckpt.head.state_dict()))
    before = tree(target)

    def crash(directory):
        (directory / "adapter_config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(target, FTRLCheckpoint(head_state=DPTHead(128, 9).state_dict()), save_adapter=crash)
    assert tree(target) == before
    assert os.listdir(tmp_path) == ["policy"]

    new_head = DPTHead(128, 9).state_dict()
    write_checkpoint(target, FTRLCheckpoint(head_state=new_head))
    assert th.equal(read_checkpoint(target).head_state["mlp.6.weight"], new_head["mlp.6.weight"])
    assert os.listdir(tmp_path) == ["policy"]
