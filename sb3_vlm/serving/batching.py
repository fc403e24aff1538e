"""Request batching: one worker thread runs queued requests through the model in batches (those arriving within
``batch_delay`` seconds of the first, up to ``max_batch_size``), grouped by a key (e.g. image size)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from sb3_vlm._validation import check_int

__all__ = ["Batcher"]

logger = logging.getLogger(__name__)


class _Queued(Protocol):
    future: Future


class Batcher:
    """
    A worker thread that runs queued items through ``run`` in batches; each item's ``future`` gets its result, or the
    exception of its batch.

    :param run: Items of one group -> one result per item.
    :param key: Items with the same key run together (e.g. image shape).
    :param max_batch_size: Most items per batch.
    :param batch_delay: Seconds to wait for more items after the first one of a batch.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], Sequence[Any]],
        key: Callable[[Any], Hashable],
        max_batch_size: int = 8,
        batch_delay: float = 0.005,
    ):
        check_int(max_batch_size, "max_batch_size", owner="Batcher")
        if not batch_delay >= 0:
            raise ValueError(f"Batcher: batch_delay must be >= 0 s, got {batch_delay}")
        self.run, self.key = run, key
        self.max_batch_size, self.batch_delay = int(max_batch_size), float(batch_delay)
        self._queue: queue.Queue[_Queued | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    def submit(self, item: _Queued) -> Future:
        """Queue ``item``; returns its future."""
        if self._worker is None or not self._worker.is_alive():
            raise RuntimeError("the batch worker is not running (call start())")
        self._queue.put(item)
        return item.future

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._worker = threading.Thread(target=self._work, name="sb3-vlm-batcher", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker after the queued items; items queued later fail."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)
            self._worker = None
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(RuntimeError("the server is shutting down"))

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.batch_delay
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Queued]) -> None:
        """Run the live items of ``batch`` by group; every future gets a result or an exception."""
        groups: dict[Hashable, list[_Queued]] = {}
        for item in batch:
            if item.future.set_running_or_notify_cancel():
                groups.setdefault(self.key(item), []).append(item)
        for items in groups.values():
            try:
                results = self.run(items)
            except Exception as e:  # noqa: BLE001 - reported to each waiting request (a 500)
                logger.exception("inference failed for a batch of %d", len(items))
                for item in items:
                    item.future.set_exception(e)
                continue
            for item, result in zip(items, results, strict=True):
                item.future.set_result(result)
