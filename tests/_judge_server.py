"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for the judge's tests and benchmark.

``POST /v1/chat/completions`` answers with OpenAI's minimal ``chat.completion`` JSON; what it answers is scripted:
:class:`Reply` items queued in ``server.script`` are used first, then ``server.default`` (a ``Reply`` or a function
of the request body returning one). Replies can carry a score text, be slow, return an HTTP error status or text
without a score. ``GET /v1/models`` lists one model. Every request (JSON body and headers) is recorded, and the
largest number of requests handled at once is kept (``peak_active``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One answer: ``status`` (200 or an error), the assistant ``text``, a ``delay`` (s) before answering."""

    text: str | None = "[SCORE] 7"
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: str = "judge-test") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.model = model
        self.script: list[Reply] = []
        self.default: Reply | Callable[[dict[str, Any]], Reply] = Reply()
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.active = self.peak_active = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self.lock:
            if self.script:
                return self.script.pop(0)
        return self.default(body) if callable(self.default) else self.default

    def completions(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]


class _Handler(BaseHTTPRequestHandler):
    server: JudgeServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall between them

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.server.model, "object": "model", "created": 0, "owned_by": "tests"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.requests.append(Recorded(self.path, body, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        reply = self.server.next_reply(body)
        with self.server.lock:
            self.server.active += 1
            self.server.peak_active = max(self.server.peak_active, self.server.active)
        if reply.delay:
            self.server.stopping.wait(reply.delay)
        with self.server.lock:
            self.server.active -= 1
        if reply.status != 200:
            self._send(reply.status, {"error": {"message": "scripted failure", "type": "server_error"}}, reply.headers)
            return
        message = {"role": "assistant", "content": reply.text}
        choice = {"index": 0, "finish_reason": "stop", "message": message}
        completion = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.server.model),
            "choices": [choice],
        }
        self._send(200, completion, reply.headers)


@contextmanager
def judge_server(model: str = "judge-test") -> Iterator[JudgeServer]:
    """Serve a :class:`JudgeServer` in a background thread; ``server.url`` is its ``.../v1`` base URL."""
    server = JudgeServer(model)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
