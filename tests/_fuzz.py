"""Shared machinery of the Hypothesis fuzz tests: a small profile by default, >= 1,000 inputs per reader with
``--runslow``; every input under a wall-clock limit, memory growth bounded, counts and outcomes printed."""

from __future__ import annotations

import os
import resource
import signal
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import Payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

FAST_EXAMPLES = 30
"""Inputs per reader in the default run (deterministic: ``derandomize``)."""
SLOW_EXAMPLES = 1000
"""Inputs per reader with ``--runslow``."""
SECONDS_PER_INPUT = 20.0
"""An input that takes longer is a hang (the readers answer in milliseconds to ~1 s)."""
MAX_RSS_GROWTH_MB = 1024
"""Peak memory growth allowed over a whole run of one reader."""

IMAGE_MODES = ["RGB", "L", "RGBA", "P", "1", "I", "F", "I;16", "CMYK", "LA"]
MARKER = Path(tempfile.gettempdir()) / f"sb3_vlm_fuzz_executed_{os.getpid()}"
"""A hostile input that runs anything creates this file."""

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


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.lists(st.integers(), max_size=3)
)

OUTCOMES: dict[str, Counter] = defaultdict(Counter)
"""reader -> outcome (``ok``, or the documented exception's class name) -> count."""


class Hang(Exception):
    """An input took longer than :data:`SECONDS_PER_INPUT`."""


@contextmanager
def time_limit(seconds: float = SECONDS_PER_INPUT) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM)."""

    def on_alarm(*_: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def expect(
    reader: str,
    call: Callable[[], Any],
    allowed: tuple[type[BaseException], ...],
    names: list[str],
    label: Callable[[Any], str] | None = None,
) -> Any:
    """Run ``call`` under the time limit; an exception must be one of ``allowed`` with a message naming one of
    ``names`` (the file or the key), and nothing may have run (:data:`MARKER`). Records the outcome
    (``label(result)``, ``ok`` or the exception's class); returns ``call``'s result (None after an error)."""
    try:
        with time_limit():
            result = call()
        assert not MARKER.exists(), f"{reader}: a hostile input ran code"
    except allowed as e:
        assert not MARKER.exists(), f"{reader}: a hostile input ran code"
        message = str(e)
        assert "\n" not in message.strip() or len(message) < 2000, f"{reader}: a message of {len(message)} chars"
        assert any(name in message for name in names), f"{reader}: {type(e).__name__} names none of {names}: {e}"
        OUTCOMES[reader][type(e).__name__] += 1
        return None
    OUTCOMES[reader]["ok" if label is None else label(result)] += 1
    return result


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fuzz(reader: str, strategy: st.SearchStrategy, check: Callable[[Any], None], slow: bool, capsys: Any) -> None:
    """Feed ``check`` with ``strategy``'s inputs (the fast or the slow profile) and print the counts."""
    before, rss = sum(OUTCOMES[reader].values()), _max_rss_mb()
    examples = SLOW_EXAMPLES if slow else FAST_EXAMPLES
    profile = settings(
        max_examples=examples,
        deadline=None,  # time_limit instead: a shared machine makes per-example deadlines flaky
        derandomize=not slow,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    profile(given(strategy)(check))()
    count = sum(OUTCOMES[reader].values()) - before
    growth = _max_rss_mb() - rss
    with capsys.disabled():
        print(f"\nfuzz {reader}: {count} inputs, outcomes {dict(OUTCOMES[reader])}, peak RSS +{growth:.0f} MB")
    assert count >= examples, f"{reader}: only {count} inputs ran"
    assert growth < MAX_RSS_GROWTH_MB, f"{reader}: peak memory grew by {growth:.0f} MB"


def fuzz_tests(reader: str, strategy: st.SearchStrategy, check: Callable[[Any], None]) -> tuple[Any, Any]:
    """A default-run test (small profile) and a ``slow`` one (>= 1,000 inputs) for one reader."""

    def fast(capsys: Any) -> None:
        run_fuzz(reader, strategy, check, False, capsys)

    @pytest.mark.slow
    def slow(capsys: Any) -> None:
        run_fuzz(reader, strategy, check, True, capsys)

    return fast, slow
