"""``VLMJudge``: frames of an episode scored by a vision-language model behind an OpenAI-compatible API.

Any server that answers ``POST /v1/chat/completions`` with OpenAI's content parts (``image_url`` data URLs) works:
vLLM, SGLang, Ollama, a hosted API, or ``sb3-vlm serve --judge``. The HTTP side is the official ``openai`` client
(optional extra ``judge``: ``pip install "sb3-vlm[judge]"``), configured once: ``base_url``, ``timeout``,
``max_retries`` (its exponential backoff, 0.5 s doubling up to 8 s, or the server's ``Retry-After``). Requests run on
a thread pool of ``max_concurrency`` workers; answers are cached by the hash of their frames and settings.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sb3_vlm._validation import check_int, settings_from
from sb3_vlm.rewards import scoring

__all__ = ["FAILURE_KINDS", "JudgeResult", "JudgeSettings", "JudgeStats", "VLMJudge"]

logger = logging.getLogger(__name__)

FAILURE_KINDS = ("timeout", "connection", "http", "unparsable", "deadline", "breaker", "error")
"""Why a judgement failed: the request timed out, could not connect, got an HTTP error status (after the client's
retries), got an answer without a score, was still running when the caller stopped waiting (``deadline``), was not
sent because the judge failed too often in a row (``breaker``), or anything else (``error``, also a request to a
closed judge)."""


@dataclass(frozen=True)
class JudgeResult:
    """Outcome of one judgement.

    :param score: Score in ``[low, high]``, or None on failure.
    :param failure: A kind of :data:`FAILURE_KINDS`, or None on success.
    :param text: The model's answer (None when there was none).
    :param latency_ms: Wall time of the request (ms); 0 for a cache hit.
    :param cached: The answer came from the cache.
    """

    score: float | None
    failure: str | None = None
    text: str | None = None
    latency_ms: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None and self.score is not None


@dataclass
class JudgeStats:
    """Counters of a judge since it was made (a snapshot; :meth:`VLMJudge.stats` makes one).

    :param requests: Requests that reached the client (each may be retried inside it).
    :param scored: Judgements that produced a score (cache hits included).
    :param cache_hits: Judgements answered from the cache.
    :param failures: Failed judgements, all kinds.
    :param failures_by_kind: Failed judgements per kind of :data:`FAILURE_KINDS`.
    :param latency_ms_sum: Sum of request wall times (ms) over ``requests``.
    :param score_sum: Sum of the scores of ``scored``.
    """

    requests: int = 0
    scored: int = 0
    cache_hits: int = 0
    failures: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_KINDS, 0))
    latency_ms_sum: float = 0.0
    score_sum: float = 0.0

    def copy(self) -> JudgeStats:
        return JudgeStats(**{**self.__dict__, "failures_by_kind": dict(self.failures_by_kind)})


@dataclass
class JudgeSettings:
    """
    How a :class:`VLMJudge` asks: the server, the prompt, the frames and the client's limits (JSON-able: a training
    run saves them; lists given for ``image_size`` and ``score_range`` become tuples).
    """

    base_url: str
    """API root including ``/v1``, e.g. ``http://localhost:8000/v1`` (vLLM, SGLang), ``http://localhost:11434/v1``
    (Ollama)."""
    model: str
    """Model name the server knows (vLLM: the served model path or ``--served-model-name``)."""
    task: str = scoring.DEFAULT_TASK
    """Task description put into the prompt."""
    prompt_template: str = scoring.DEFAULT_PROMPT
    """Template with ``{task}``, ``{num_frames}``, ``{low}``, ``{high}``."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (read once, never logged or stored on the judge); unset: ``"EMPTY"``,
    what local servers accept."""
    num_frames: int = 8
    """Frames per request, sampled evenly (first and last included)."""
    image_size: tuple[int, int] | None = None
    """``(H, W)`` the frames are resized to (pixels), or None to send them as they are."""
    image_format: str = "png"
    """``"png"`` or ``"jpeg"``."""
    jpeg_quality: int = 90
    """JPEG quality 1..95."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy, the same frames get the same score)."""
    max_tokens: int = 64
    """Answer length limit (tokens)."""
    score_range: tuple[float, float] = (0.0, 10.0)
    """``(low, high)``: scores are clipped to it."""
    timeout: float = 30.0
    """Seconds one HTTP attempt may take."""
    max_retries: int = 2
    """Retries of the ``openai`` client (connection errors, timeouts, 408/409/429/5xx)."""
    max_concurrency: int = 8
    """Requests in flight at most (thread-pool workers)."""
    extra_body: dict[str, Any] | None = None
    """Extra JSON fields of every request (server-specific, e.g. ``{"top_k": 1}``)."""
    cache_size: int = 10_000
    """Answers kept (least recently used dropped); 0 disables the cache."""
    breaker_failures: int = 5
    """After this many transport failures in a row (timeout, connection, http), requests fail at once with ``"breaker"``
    for ``breaker_cooldown`` s, then one is tried again; 0 disables this."""
    breaker_cooldown: float = 30.0
    """Seconds the judge stays off after ``breaker_failures`` failures."""

    def __post_init__(self) -> None:
        check_int(self.num_frames, "num_frames", owner="JudgeSettings")
        if self.image_format not in ("png", "jpeg"):
            raise ValueError(f"JudgeSettings: image_format must be 'png' or 'jpeg', got {self.image_format!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
                raise ValueError(
                    f"JudgeSettings: image_size must be None or (height, width) positive ints, got {self.image_size!r}"
                )
            self.image_size = (int(size[0]), int(size[1]))
        low, high = (float(v) for v in self.score_range)
        if not low < high:
            raise ValueError(
                f"JudgeSettings: score_range must be (low, high) with low < high, got {self.score_range!r}"
            )
        self.score_range = (low, high)
        if not self.timeout > 0:
            raise ValueError(f"JudgeSettings: timeout must be > 0 s, got {self.timeout!r}")
        for name in ("max_retries", "cache_size", "breaker_failures"):
            check_int(getattr(self, name), name, 0, owner="JudgeSettings")
        check_int(self.max_concurrency, "max_concurrency", owner="JudgeSettings")
        scoring.render_prompt(self.prompt_template, self.task, self.num_frames, low, high)  # template errors now


class VLMJudge:
    """
    Score frames of an episode with a VLM behind an OpenAI-compatible chat-completions endpoint.

    One request: a user message with the prompt (``prompt_template`` filled with ``task``, the number of frames and
    the score range) and ``num_frames`` frames sampled evenly from the given ones, each a base64 PNG/JPEG data URL;
    the answer's score is parsed by :func:`~sb3_vlm.rewards.scoring.parse_score` and clipped to ``score_range``.
    Never raises on a failed request: the result carries the failure kind, which the stats count.

    Example::

        settings = JudgeSettings("http://localhost:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct", task="reach the goal")
        judge = VLMJudge(settings)
        result = judge.score(frames)  # list of uint8 [H, W, 3] images
        result.score, result.failure

    :param settings: The server, prompt, frames and limits (:class:`JudgeSettings`). The call form of sb3-vlm 0.1,
        ``VLMJudge(base_url, model, **kwargs)`` with the names of :class:`JudgeSettings`, still works for one release
        and warns (``DeprecationWarning``).
    """

    def __init__(self, settings: JudgeSettings | str | None = None, *args: Any, **kwargs: Any) -> None:
        try:
            import openai
        except ImportError as e:
            raise ImportError('VLMJudge needs the openai package: pip install "sb3-vlm[judge]"') from e
        self.settings = s = settings_from(JudgeSettings, settings, args, kwargs, "VLMJudge")
        self.base_url, self.model, self.task, self.prompt_template = s.base_url, s.model, s.task, s.prompt_template
        self.num_frames, self.image_size, self.image_format = s.num_frames, s.image_size, s.image_format
        self.jpeg_quality, self.temperature, self.max_tokens = int(s.jpeg_quality), float(s.temperature), s.max_tokens
        self.timeout, self.max_retries, self.max_concurrency = float(s.timeout), s.max_retries, s.max_concurrency
        (self.low, self.high), self.cache_size = s.score_range, s.cache_size
        self.breaker_failures, self.breaker_cooldown = s.breaker_failures, float(s.breaker_cooldown)
        self.extra_body = dict(s.extra_body or {})
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=os.environ.get(s.api_key_env) or "EMPTY",
            base_url=s.base_url,
            timeout=self.timeout,
            max_retries=s.max_retries,
        )
        self._pool = ThreadPoolExecutor(max_workers=s.max_concurrency, thread_name_prefix="vlm-judge")
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._inflight: dict[str, Future[JudgeResult]] = {}
        self._stats = JudgeStats()
        self._failures_in_row = 0
        self._off_until = 0.0
        self._closed = False

    def __repr__(self) -> str:  # no API key here
        return f"VLMJudge(base_url={self.base_url!r}, model={self.model!r}, num_frames={self.num_frames})"

    # ------------------------------------------------------------------------------------------------- requests
    def prompt(self, num_frames: int) -> str:
        """The prompt text of a request with ``num_frames`` frames."""
        return scoring.render_prompt(self.prompt_template, self.task, num_frames, self.low, self.high)

    def build_messages(self, frames: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """Chat messages of one request: one user message, the prompt then the frames as image parts.

        :param frames: The frames to send (already sampled), uint8 ``[H, W, 3]``.
        """
        content: list[dict[str, Any]] = [{"type": "text", "text": self.prompt(len(frames))}]
        for frame in frames:
            url = scoring.encode_image(frame, self.image_size, self.image_format, self.jpeg_quality)
            content.append({"type": "image_url", "image_url": {"url": url}})
        return [{"role": "user", "content": content}]

    def _request_key(self, frames: Sequence[np.ndarray]) -> str:
        settings = (
            f"{self.base_url}|{self.model}|{self.prompt(len(frames))}|{self.temperature}|{self.max_tokens}|"
            f"{self.image_size}|{self.image_format}|{self.jpeg_quality}|{sorted(self.extra_body.items())}"
        )
        return scoring.frames_key(settings, frames)

    def submit(self, frames: Sequence[np.ndarray]) -> Future[JudgeResult]:
        """Judge ``frames`` (an episode or a window, in time order) in the background.

        ``num_frames`` of them are sampled evenly. A cached answer, an open breaker or a closed judge give an already
        finished future; a request equal to one in flight shares its future.

        :param frames: Images ``[H, W, 3]`` (uint8, or float in 0..1), at least one.
        :return: A future that never raises: its :class:`JudgeResult` says what happened.
        """
        if len(frames) == 0:
            raise ValueError("submit() needs at least one frame, got none")
        sampled = [np.array(f, copy=True) for f in scoring.sample_frames(frames, self.num_frames)]
        key = self._request_key(sampled)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                score, text = self._cache[key]
                self._stats.cache_hits += 1
                self._stats.scored += 1
                self._stats.score_sum += score
                return _done(JudgeResult(score, text=text, cached=True))
            if key in self._inflight:
                return self._inflight[key]
            if self._closed or time.monotonic() < self._off_until:
                kind = "error" if self._closed else "breaker"
                self._count_failure(kind)
                return _done(JudgeResult(None, failure=kind))
            future = self._pool.submit(self._judge, key, sampled)
            self._inflight[key] = future
            return future

    def score(self, frames: Sequence[np.ndarray]) -> JudgeResult:
        """Judge ``frames`` and wait for the answer (at most about ``timeout * (max_retries + 1)`` plus backoff)."""
        return self.submit(frames).result()

    def _judge(self, key: str, frames: list[np.ndarray]) -> JudgeResult:
        """Worker: one request through the client; every failure is caught and classified."""
        openai = self._openai
        text: str | None = None
        start = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(
                model=self.model,
                messages=self.build_messages(frames),  # type: ignore[arg-type]
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                extra_body=self.extra_body or None,
            )
            choices = completion.choices or []
            text = choices[0].message.content if choices else None
            score = scoring.parse_score(text, self.low, self.high)
            failure = None if score is not None else "unparsable"
        except openai.APITimeoutError:
            score, failure = None, "timeout"
        except openai.APIConnectionError:
            score, failure = None, "connection"
        except openai.APIStatusError as e:
            score, failure = None, "http"
            text = f"HTTP {e.status_code}: {e.message}"
        except Exception as e:  # a judge must never take training down: unexpected errors are logged and counted
            logger.warning("judge request failed: %s: %s", type(e).__name__, e)
            score, failure = None, "error"
        latency_ms = 1000.0 * (time.perf_counter() - start)
        with self._lock:
            self._inflight.pop(key, None)
            self._stats.requests += 1
            self._stats.latency_ms_sum += latency_ms
            if failure is None:
                assert score is not None
                self._stats.scored += 1
                self._stats.score_sum += score
                self._failures_in_row = 0
                if self.cache_size:
                    self._cache[key] = (score, text or "")
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
            else:
                self._count_failure(failure)
        if failure is not None:
            detail = f" ({text[:200]!r})" if failure in ("unparsable", "http") and text else ""
            logger.warning("judge %s at %s after %.0f ms%s", failure, self.base_url, latency_ms, detail)
        return JudgeResult(score, failure=failure, text=text, latency_ms=latency_ms)

    def _count_failure(self, kind: str) -> None:
        """Count a failure (the lock is held); transport failures feed the breaker."""
        self._stats.failures += 1
        self._stats.failures_by_kind[kind] += 1
        if kind in ("timeout", "connection", "http"):
            self._failures_in_row += 1
            if self.breaker_failures and self._failures_in_row >= self.breaker_failures:
                self._off_until = time.monotonic() + self.breaker_cooldown
                logger.warning(
                    "judge at %s failed %d times in a row: off for %.0f s",
                    self.base_url,
                    self._failures_in_row,
                    self.breaker_cooldown,
                )

    def count_failure(self, kind: str) -> None:
        """Count a failure seen by a caller (a wrapper that stopped waiting: ``"deadline"``)."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"kind must be one of {FAILURE_KINDS}, got {kind!r}")
        with self._lock:
            self._count_failure(kind)

    # --------------------------------------------------------------------------------------------------- state
    def stats(self) -> JudgeStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats.copy()

    def close(self) -> None:
        """Stop accepting requests, drop queued ones, release the HTTP client (running requests finish alone)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> VLMJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _done(result: JudgeResult) -> Future[JudgeResult]:
    future: Future[JudgeResult] = Future()
    future.set_result(result)
    return future
