"""Restricted unpickling for the pickle files that existing collectors and APPLR write: globals resolve only from an
explicit allowlist, anything else raises :class:`UnsafePickleError` before it is called, so a hostile file cannot run
code. :func:`safe_load` / :func:`safe_loads` read trajectory pickles, :func:`load_applr_actor_state_dict` the
published APPLR ``policy_actor``."""

from __future__ import annotations

import codecs
import collections
import functools
import io
import os
import pickle
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch._utils
from PIL import Image

__all__ = [
    "TRAJECTORY_GLOBALS",
    "UnsafePickleError",
    "load_applr_actor_state_dict",
    "safe_load",
    "safe_loads",
]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referred to a global outside the allowlist; nothing was executed.

    :param source: File (or label) the pickle came from.
    :param global_name: The refused global, ``module.name``.
    """

    def __init__(self, source: str, global_name: str):
        self.source = source
        self.global_name = global_name
        super().__init__(f"{source}: refusing to load global {global_name!r} (not in the allowlist)")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes``; other codecs are refused."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(
            f"_codecs.encode: expected (str, 'latin1'), got ({type(text).__name__}, {encoding!r})"
        )
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Take the reconstructors from numpy's own reduce tuples, so both the numpy 1.x (``numpy.core``) and 2.x
    # (``numpy._core``) spellings map to the installed functions without importing private modules by name.
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0.0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


_BUILTIN_TYPES = (set, frozenset, bytearray, complex, list, dict, tuple, int, float, str, bytes, bool)

TRAJECTORY_GLOBALS: Mapping[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{("builtins", t.__name__): t for t in _BUILTIN_TYPES},
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("PIL.Image", "Image"): Image.Image,
}
"""Globals a trajectory pickle may refer to, ``(module, name) -> object``."""

# Python 2 / protocol < 3 module spellings.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals only from ``allowed``."""

    def __init__(self, file: io.BufferedIOBase, source: str, allowed: Mapping[tuple[str, str], Any]):
        super().__init__(file)
        self._source = source
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        key = (_MODULE_ALIASES.get(module, module), name)
        if key not in self._allowed:
            raise UnsafePickleError(self._source, f"{module}.{name}")
        obj = self._allowed[key]
        # A BUILD opcode can set attributes (``__defaults__``, ...) on the object a global resolves to. Python
        # functions allow that, so each lookup gets a fresh wrapper and the real function stays untouched; the
        # allowed classes are immutable C types or define ``__setstate__`` (which BUILD calls instead).
        return functools.partial(obj) if isinstance(obj, types.FunctionType) else obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._source, f"<persistent id {pid!r}>")


def safe_loads(
    data: bytes, *, source: str = "<bytes>", allowed: Mapping[tuple[str, str], Any] = TRAJECTORY_GLOBALS
) -> Any:
    """Unpickle ``data`` resolving globals only from ``allowed``.

    :param data: Pickle bytes.
    :param source: Name used in error messages (usually the file path).
    :param allowed: ``(module, name) -> object`` allowlist; trajectory contents by default.
    :return: The unpickled object.
    :raises UnsafePickleError: On any global outside ``allowed`` (nothing is executed).
    :raises pickle.UnpicklingError, EOFError, ValueError, TypeError: On truncated or corrupt data.
    """
    return _RestrictedUnpickler(io.BytesIO(data), source, allowed).load()


def safe_load(path: str | os.PathLike, *, allowed: Mapping[tuple[str, str], Any] = TRAJECTORY_GLOBALS) -> Any:
    """Read and unpickle the file at ``path`` with :func:`safe_loads`; errors name the file."""
    with open(path, "rb") as f:
        data = f.read()
    return safe_loads(data, source=os.fspath(path), allowed=allowed)


def _storage_from_legacy_bytes(source: str) -> Callable[[bytes], torch.storage.TypedStorage]:
    def load(blob: bytes) -> torch.storage.TypedStorage:
        if not isinstance(blob, bytes):
            raise pickle.UnpicklingError(f"{source}: storage blob must be bytes, got {type(blob).__name__}")
        with warnings.catch_warnings():
            # Legacy storages come back as TypedStorage, which torch flags as deprecated.
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            storage = torch.load(io.BytesIO(blob), weights_only=True)
        if not isinstance(storage, torch.storage.TypedStorage):
            raise pickle.UnpicklingError(f"{source}: storage blob must hold a storage, got {type(storage).__name__}")
        return storage

    return load


def _checked_rebuild_tensor(source: str) -> Callable[..., torch.Tensor]:
    def rebuild(
        storage: Any,
        storage_offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any,
        backward_hooks: Any,
        *metadata: Any,
    ) -> torch.Tensor:
        ok = (
            isinstance(storage, torch.storage.TypedStorage)
            and isinstance(storage_offset, int)
            and isinstance(size, tuple)
            and isinstance(stride, tuple)
            and all(isinstance(v, int) for v in size + stride)
            and isinstance(requires_grad, bool)
            and isinstance(backward_hooks, dict)
            and not backward_hooks
        )
        if not ok:
            raise pickle.UnpicklingError(f"{source}: unexpected _rebuild_tensor_v2 arguments")
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks)

    return rebuild


def load_applr_actor_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the published APPLR actor (ros_jackal ``policy_actor``) without executing arbitrary code.

    The file refers to exactly ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
    ``torch.storage._load_from_bytes``; only those are allowed, tensor-rebuild arguments are type-checked and every
    inner storage blob goes through ``torch.load(weights_only=True)``.

    :param path: The ``policy_actor`` file.
    :return: ``{name: tensor}`` in file order, e.g. ``head.mlp.0.weight [512, 721]`` ... ``fc.bias [7]``.
    :raises UnsafePickleError: On any other global.
    :raises ValueError: If the file does not hold a ``{str: Tensor}`` mapping or is corrupt.
    """
    source = os.fspath(path)
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _checked_rebuild_tensor(source),
        ("torch.storage", "_load_from_bytes"): _storage_from_legacy_bytes(source),
    }
    try:
        state = safe_load(source, allowed=allowed)
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"{source}: not a valid APPLR actor file: {e}") from e
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{source}: expected a mapping of str to torch.Tensor, got {type(state).__name__}")
    return dict(state)
