"""Content-keyed LRU cache of frozen-backbone outputs under a byte budget (keys: SHA-1 of the observation's bytes).
:class:`~sb3_vlm.model.extractor.VLMDPTExtractor` decides what is stored and when it is stale; this module only stores,
evicts and counts."""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np
import torch as th
from torch import nn

__all__ = [
    "ENTRY_OVERHEAD_BYTES",
    "CacheStats",
    "FeatureCache",
    "content_keys",
    "module_tensors",
    "stack_hidden",
    "to_storage",
]

# Python/torch bookkeeping per entry (tensor object, storage, key bytes, dict slot), measured with torch 2.13 and
# CPython 3.11 on 20,000 entries: ~576 bytes. Counted against the budget so that it approximates real memory.
ENTRY_OVERHEAD_BYTES = 576


class CacheStats(NamedTuple):
    """
    Counters of a :class:`FeatureCache` since it was created.

    :param hits: Observation rows served without a backbone pass (incl. repeats of a missed image in the same batch).
    :param misses: Distinct images the backbone had to compute.
    :param evictions: Entries dropped to stay within the byte budget.
    :param invalidations: Times the whole cache was cleared because cached-side parameters changed.
    :param entries: Entries stored now.
    :param bytes: Bytes counted against the budget now (payload + ``ENTRY_OVERHEAD_BYTES`` per entry).
    :param max_bytes: The byte budget.
    """

    hits: int
    misses: int
    evictions: int
    invalidations: int
    entries: int
    bytes: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``, 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class FeatureCache:
    """
    LRU map from content keys to tensors, bounded by a byte budget, with hit/miss/eviction counters. Thread-safe.

    An entry larger than the whole budget is returned to the caller but not stored. Values are stored as given (the
    caller makes them own their storage, see :func:`to_storage`), so a view into a bigger batch would keep the whole
    batch alive; the budget counts each value's full storage.

    :param max_bytes: Byte budget (> 0) for payload + ``ENTRY_OVERHEAD_BYTES`` per entry.
    """

    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int | np.integer):
            raise TypeError(f"FeatureCache: max_bytes must be an int, got {type(max_bytes).__name__}")
        if max_bytes <= 0:
            raise ValueError(f"FeatureCache: max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[bytes, tuple[th.Tensor, int]] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._invalidations = 0
        self._version: Hashable = None
        self._generation = 0  # bumped by every clear: results computed before it are not stored after it
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def stats(self) -> CacheStats:
        """The current counters (see :class:`CacheStats`)."""
        with self._lock:
            return CacheStats(
                self._hits,
                self._misses,
                self._evictions,
                self._invalidations,
                len(self._entries),
                self._bytes,
                self.max_bytes,
            )

    def clear(self) -> None:
        """Drop every entry (counters other than ``entries``/``bytes`` are kept)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self._generation += 1

    def sync(self, version: Hashable) -> bool:
        """
        Clear the cache if ``version`` differs from the one of the stored entries.

        :param version: Any value that compares equal exactly when the cached side (weights, mode) is unchanged.
        :return: Whether the cache was invalidated (a first call on an empty cache is not an invalidation).
        """
        with self._lock:
            if version == self._version:
                return False
            invalidated = self._version is not None and bool(self._entries)
            self._version = version
            self._clear()
            self._invalidations += invalidated
            return invalidated

    def get(self, key: bytes) -> th.Tensor | None:
        """The stored value (marked most recently used), or None. Does not touch the hit/miss counters."""
        with self._lock:
            return self._get(key)

    def _get(self, key: bytes) -> th.Tensor | None:
        item = self._entries.get(key)
        if item is None:
            return None
        self._entries.move_to_end(key)
        return item[0]

    def put(self, key: bytes, value: th.Tensor) -> bool:
        """
        Store ``value`` as the most recently used entry, evicting least recently used ones beyond the budget.

        :return: Whether it was stored (False when it alone exceeds the budget).
        """
        with self._lock:
            return self._put(key, value)

    def _put(self, key: bytes, value: th.Tensor) -> bool:
        size = value.untyped_storage().nbytes() + ENTRY_OVERHEAD_BYTES
        if size > self.max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped
            self._evictions += 1
        return True

    def get_or_compute(
        self, keys: Sequence[bytes], compute: Callable[[list[int]], Sequence[th.Tensor]]
    ) -> list[th.Tensor]:
        """
        One value per key: stored ones are reused; the others are computed once per distinct key and stored.

        :param keys: ``B`` content keys (see :func:`content_keys`).
        :param compute: Given the row indices of the distinct missing keys (first occurrence of each), returns one
            value per index, in that order.
        :return: ``B`` values (rows with equal keys share one tensor).
        """
        with self._lock:
            values: list[th.Tensor | None] = [self._get(k) for k in keys]
            generation = self._generation
        missing: dict[bytes, list[int]] = {}
        for row, (key, value) in enumerate(zip(keys, values, strict=True)):
            if value is None:
                missing.setdefault(key, []).append(row)
        if missing:
            computed = compute([rows[0] for rows in missing.values()])
            if len(computed) != len(missing):
                raise RuntimeError(f"FeatureCache: compute returned {len(computed)} values for {len(missing)} keys")
            with self._lock:
                for (key, rows), value in zip(missing.items(), computed, strict=True):
                    if generation == self._generation:
                        self._put(key, value)
                    for row in rows:
                        values[row] = value
        with self._lock:
            self._misses += len(missing)
            self._hits += len(keys) - len(missing)
        return values  # type: ignore[return-value]


def content_keys(images: th.Tensor, extra: th.Tensor | None = None, uint8_images: bool = True) -> list[bytes]:
    """
    One SHA-1 digest per row of the batch, over the image bytes (and ``extra``, e.g. the velocity).

    Float images that are exactly ``uint8 / 255`` (SB3's preprocessing of uint8 observations) are keyed by their uint8
    values, so they share entries with the raw uint8 images; other float images are keyed by their float32 bytes.

    :param images: ``[B, ...]``, uint8, or float in [0, 1].
    :param extra: ``[B, ...]`` numbers that also determine the output (keyed as float64), or None.
    :param uint8_images: Whether float images may be keyed as uint8 (the observation space is uint8).
    :return: ``B`` 20-byte keys.
    """
    data = images.detach()
    if data.dtype != th.uint8:
        quantized = data.mul(255).round_().clamp_(0, 255).to(th.uint8) if uint8_images else None
        if quantized is not None and th.equal(quantized.to(data.dtype).div_(255), data):
            data = quantized
        else:
            data = data.float()
    tag = b"u8" if data.dtype == th.uint8 else b"f32"
    rows = data.cpu().contiguous().numpy().reshape(len(data), -1).view(np.uint8)
    prefix = hashlib.sha1(tag + str(tuple(data.shape[1:])).encode(), usedforsecurity=False)
    more = None if extra is None else extra.detach().double().cpu().contiguous().numpy().reshape(len(data), -1)
    keys = []
    for i, row in enumerate(rows):
        digest = prefix.copy()
        digest.update(row)
        if more is not None:
            digest.update(more[i].view(np.uint8))
        keys.append(digest.digest())
    return keys


_warned_overflow = False


def to_storage(tensor: th.Tensor, dtype: th.dtype) -> th.Tensor:
    """
    A contiguous copy in the storage dtype, checked for overflow.

    :param tensor: A float tensor (e.g. a batch ``[m, ...]``; split it into rows with ``.clone()`` afterwards).
    :param dtype: Storage dtype (float16 halves the memory of float32 hidden states, ~1e-3 relative rounding).
    :return: The copy in ``dtype``, or in float32 if ``dtype`` cannot represent the values (overflow; warns once).
    """
    global _warned_overflow
    stored = tensor.detach().to(dtype=dtype, memory_format=th.contiguous_format, copy=True)
    if dtype != th.float32 and not th.isfinite(stored).all() and th.isfinite(tensor).all():
        if not _warned_overflow:
            warnings.warn(
                f"FeatureCache: values up to {float(tensor.abs().max()):.3g} overflow {dtype}; such entries are "
                "stored as float32 (pass feature_cache_dtype='bfloat16' or 'float32' to avoid the mix)",
                stacklevel=2,
            )
            _warned_overflow = True
        stored = tensor.detach().to(dtype=th.float32, memory_format=th.contiguous_format, copy=True)
    return stored


def module_tensors(module: nn.Module) -> list[th.Tensor]:
    """Every parameter and buffer of ``module`` and its submodules, in one walk of the module tree."""
    # The modules' own dicts: ``parameters(recurse=False)`` per module costs ~10x more, on every cached forward.
    return [t for m in module.modules() for t in chain(m._parameters.values(), m._buffers.values()) if t is not None]


def stack_hidden(values: Sequence[th.Tensor]) -> tuple[list[th.Tensor], th.Tensor | None]:
    """
    Batch per-image hidden states ``[4, L_i, H]`` (any float dtype) as the backbone would return them.

    :return: 4 float32 tensors ``[B, L, H]`` (right-padded with zeros) and the ``[B, L]`` long mask, or None when all
        ``L_i`` are equal.
    """
    if len({v.dtype for v in values}) > 1:
        values = [v.float() for v in values]
    lengths = [v.shape[1] for v in values]
    if len(set(lengths)) == 1:
        return list(th.stack(values).float().unbind(1)), None
    first = values[0]
    batch = first.new_zeros((len(values), first.shape[0], max(lengths), first.shape[2]))
    mask = th.zeros((len(values), max(lengths)), dtype=th.long, device=first.device)
    for i, (value, n) in enumerate(zip(values, lengths, strict=True)):
        batch[i, :, :n] = value
        mask[i, :n] = 1
    return list(batch.float().unbind(1)), mask
