"""Helpers shared by several test modules: hostile pickles, local ports, a background uvicorn server, PNG bytes."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image


class Payload:
    """Pickles as a call of ``func(*args)``: what a hostile file does."""

    def __init__(self, func: Callable[..., Any], *args: Any):
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.func, self.args


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(seed: int, size: tuple[int, int] = (56, 84)) -> tuple[bytes, np.ndarray]:
    """A random RGB PNG and its pixels ``[h, w, 3]``."""
    array = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue(), array


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def post(url: str, payload: Any = None, data: bytes | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    """Plain urllib POST; returns (status, JSON answer) for 2xx and 4xx/5xx alike."""
    body = data if data is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a socket bound to a free port) in a background thread."""
    import uvicorn

    from sb3_vlm.serving.client import QwenClient

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert QwenClient(url, num_history_frames=0).wait_for_service(timeout=30, poll_interval=0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()
