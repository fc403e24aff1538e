"""Restricted unpickling: trajectory contents load, anything else is refused without running."""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import Payload
from _paths import APPLR_DIR
from PIL import Image

from sb3_vlm.formats.safe_pickle import (
    TRAJECTORY_GLOBALS,
    UnsafePickleError,
    load_applr_actor_state_dict,
    safe_load,
    safe_loads,
)

APPLR_ACTOR = APPLR_DIR / "policy_actor"
APPLR_SHAPES = {
    "head.mlp.0.weight": (512, 721),
    "head.mlp.0.bias": (512,),
    "head.mlp.2.weight": (512, 512),
    "head.mlp.2.bias": (512,),
    "fc.weight": (7, 512),
    "fc.bias": (7,),
}


def _sample_objects() -> dict:
    return {
        "laser": np.linspace(-0.5, 0.5, 721).reshape(1, 721),
        "uint8": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        "object_array": np.array([1, "a", None], dtype=object),
        "f64": np.float64(1.25),
        "i64": np.int64(-3),
        "f32": np.float32(0.5),
        "bool": np.bool_(True),
        "dtype": np.dtype("<f4"),
        "image": Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)),
        "containers": [(1, 2.5, "s", b"by", None, True), {1, 2}, frozenset({3}), bytearray(b"x"), 1 + 2j],
        "ordered": collections.OrderedDict(a=1, b=[2]),
    }


def _assert_same(a, b) -> None:
    if isinstance(a, Image.Image):
        assert isinstance(b, Image.Image) and a.mode == b.mode and a.size == b.size
        assert np.array_equal(np.asarray(a), np.asarray(b))
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tolist() == b.tolist()
    else:
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_trajectory_contents_round_trip(protocol: int) -> None:
    objects = _sample_objects()
    loaded = safe_loads(pickle.dumps(objects, protocol=protocol))
    assert loaded.keys() == objects.keys()
    for key, value in objects.items():
        _assert_same(value, loaded[key])


def test_numpy_1x_module_names_load() -> None:
    # Collectors run numpy 1.x (py3.8), whose pickles name ``numpy.core.multiarray``; protocol 2 spells globals as
    # text, so the numpy 2.x names written here can be rewritten to the 1.x ones.
    data = pickle.dumps([np.arange(5.0), np.float64(2.0)], protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    arr, scalar = safe_loads(old)
    assert arr.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and scalar == 2.0 and isinstance(scalar, np.float64)


@pytest.mark.parametrize(
    ("make_payload", "global_name"),
    [
        (lambda marker: Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
        (lambda marker: Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        (lambda marker: Payload(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: Payload(getattr, str(marker), "upper"), "builtins.getattr"),
    ],
    ids=["os.system", "subprocess.call", "eval", "getattr"],
)
def test_hostile_global_is_refused_without_running(tmp_path: Path, make_payload, global_name: str) -> None:
    marker = tmp_path / "pwned"
    payload = make_payload(marker)
    # Hidden inside otherwise valid trajectory data.
    path = tmp_path / "traj_1.pickle"
    path.write_bytes(pickle.dumps([[np.zeros(3), payload, 1.0]]))
    with pytest.raises(UnsafePickleError) as err:
        safe_load(path)
    assert not marker.exists()
    assert err.value.global_name == global_name
    assert str(path) in str(err.value) and global_name in str(err.value)


@pytest.mark.parametrize(
    "global_line",
    [b"c_codecs\nencode\n", b"cnumpy.core.numeric\n_frombuffer\n", b"cPIL.Image\nImage\n", b"cnumpy\nndarray\n"],
)
def test_build_cannot_modify_allowed_globals(global_line: bytes) -> None:
    # Hand-made pickle: push an allowed global, then BUILD it with a slot state that would set ``__defaults__``.
    state = pickle.dumps((None, {"__defaults__": ("rot13",), "mode": "hacked"}), protocol=2)[2:-1]
    targets = [TRAJECTORY_GLOBALS[("_codecs", "encode")], np.zeros(1).__reduce_ex__(5)[0], Image.Image, np.ndarray]
    before = [(getattr(t, "__defaults__", None), getattr(t, "mode", None)) for t in targets]
    try:
        safe_loads(b"\x80\x02" + global_line + state + b"b.")
    except TypeError:
        pass  # classes refuse the state; functions are handed out as throwaway wrappers that accept it
    assert [(getattr(t, "__defaults__", None), getattr(t, "mode", None)) for t in targets] == before
    assert safe_loads(pickle.dumps([b"\xff", np.arange(2)], protocol=2))[0] == b"\xff"  # still usable afterwards


def test_codecs_encode_only_latin1() -> None:
    assert safe_loads(pickle.dumps(b"\x00\xffab", protocol=2)) == b"\x00\xffab"
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        safe_loads(pickle.dumps(Payload(codecs.encode, "abc", "rot13"), protocol=2))


def test_persistent_id_is_refused() -> None:
    class WithPersistentId(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, bytes) else None

    buf = io.BytesIO()
    WithPersistentId(buf).dump([b"blob"])
    with pytest.raises(UnsafePickleError, match="persistent id"):
        safe_loads(buf.getvalue(), source="x.pickle")


@pytest.mark.parametrize(
    "data", [b"", b"\x80\x04\x95", pickle.dumps(list(range(100)))[:-7]], ids=["empty", "header", "cut"]
)
def test_truncated_data_raises(data: bytes) -> None:
    with pytest.raises((pickle.UnpicklingError, EOFError, ValueError)):
        safe_loads(data)


def test_applr_format_round_trip(tmp_path: Path) -> None:
    # A plain pickle.dump of a state_dict is the published APPLR format (same three globals).
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    path = tmp_path / "policy_actor"
    path.write_bytes(pickle.dumps(net.state_dict(), protocol=3))
    state = load_applr_actor_state_dict(path)
    assert list(state) == list(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value)


def test_applr_loader_refuses_other_globals_and_hostile_storage(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile_actor"
    hostile.write_bytes(pickle.dumps({"w": Payload(os.system, f"touch {marker}")}, protocol=3))
    with pytest.raises(UnsafePickleError, match="system"):
        load_applr_actor_state_dict(hostile)
    # numpy is fine in trajectories but not in an actor file.
    with_numpy = tmp_path / "numpy_actor"
    with_numpy.write_bytes(pickle.dumps({"w": np.zeros(2)}, protocol=3))
    with pytest.raises(UnsafePickleError, match="numpy"):
        load_applr_actor_state_dict(with_numpy)
    # An allowed outer global whose inner "torch.save" blob is a hostile pickle: weights_only refuses it.
    inner = pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2)
    blob_file = tmp_path / "blob_actor"
    blob_file.write_bytes(pickle.dumps({"w": Payload(torch.storage._load_from_bytes, inner)}, protocol=3))
    with pytest.raises(ValueError, match="blob_actor"):
        load_applr_actor_state_dict(blob_file)
    assert not marker.exists()


def test_applr_loader_rejects_non_tensor_mapping(tmp_path: Path) -> None:
    path = tmp_path / "actor"
    path.write_bytes(pickle.dumps(collections.OrderedDict(w=[1.0]), protocol=3))
    with pytest.raises(ValueError, match="mapping of str to torch.Tensor"):
        load_applr_actor_state_dict(path)


@pytest.mark.skipif(not APPLR_ACTOR.is_file(), reason="published APPLR actor not available")
def test_published_applr_actor() -> None:
    state = load_applr_actor_state_dict(APPLR_ACTOR)
    assert {k: tuple(v.shape) for k, v in state.items()} == APPLR_SHAPES
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())
    # The weights drive the documented network: Linear(721, 512), ReLU, Linear(512, 512), ReLU, fc, tanh.
    net = torch.nn.Sequential(
        torch.nn.Linear(721, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 7)
    )
    net.load_state_dict({k.replace("head.mlp.", "").replace("fc.", "4."): v for k, v in state.items()})
    action = torch.tanh(net(torch.zeros(1, 721)))
    assert action.shape == (1, 7) and action.abs().max() < 1
    assert float(state["fc.weight"].std()) > 1e-3  # trained weights, not zeros
