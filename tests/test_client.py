"""The stdlib client against a real HTTP server on 127.0.0.1 answering the documented routes with canned JSON."""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import subprocess
import sys
import threading
import time
import tokenize
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from _helpers import free_port
from _trajectories import frame_image

import sb3_vlm.serving.client as client_module
from envs.planners import DWA_PARAMS
from sb3_vlm.serving.client import QwenClient

CLIENT_SOURCE = Path(client_module.__file__)
ALGORITHMS = ["DWA", "TEB", "MPPI", "DDP"]
PARAMETERS = [1.5, 1.57, 6.0, 20.0, 0.75, 1.0, 0.3, 0.8, -0.1]  # 7 DWA parameters + next v, w


class CannedServer(ThreadingHTTPServer):
    """Stand-in for the inference server: documented routes, canned answers, every request recorded.

    ``fail_infer``: how many next ``/infer`` calls answer 500; ``infer_delay``: seconds before answering
    ``/infer``; ``health_statuses``: ``/health`` status per call (the last one repeats).
    """

    daemon_threads = True

    def __init__(self, num_history_frames: int = 2):
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.requests: list[tuple[str, str, dict | None]] = []
        self.fail_infer = 0
        self.infer_delay = 0.0
        self.health_statuses = ["ok"]
        self.num_history_frames = num_history_frames

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def infer_requests(self) -> list[dict]:
        return [body for method, path, body in self.requests if path == "/infer"]


class CannedHandler(BaseHTTPRequestHandler):
    server: CannedServer

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _reply(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, None))
        if self.path == "/health":
            statuses = self.server.health_statuses
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            self._reply(
                200,
                {
                    "status": status,
                    "model_loaded": status == "ok",
                    "device": "cpu",
                    "algorithm": "DWA",
                    "policy_name": "dwa_qwen",
                    "current_checkpoint": "none",
                },
            )
        elif self.path == "/algorithms":
            self._reply(200, {"algorithms": ALGORITHMS, "current": "DWA"})
        elif self.path == "/config":
            n = self.server.num_history_frames
            self._reply(
                200,
                {
                    "algorithm": "DWA",
                    "num_params": 9,
                    "use_history": n > 0,
                    "num_history_frames": n,
                    "history_dim": 256 if n else 0,
                },
            )
        else:
            self._reply(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(("POST", self.path, body))
        if self.path != "/infer":
            self._reply(404, {"detail": "Not Found"})
        elif self.server.fail_infer > 0:
            self.server.fail_infer -= 1
            self._reply(500, {"detail": "CUDA out of memory"})
        elif body.get("algorithm") not in ALGORITHMS or "image_base64" not in body:
            self._reply(422, {"detail": "unknown algorithm"})
        else:
            time.sleep(self.server.infer_delay)
            names = [*DWA_PARAMS.names, "next_linear_vel", "next_angular_vel"]
            self._reply(
                200,
                {
                    "parameters": dict(zip(names, PARAMETERS, strict=True)),
                    "parameters_array": PARAMETERS,
                    "hidden_states_shape": "4 layers: torch.Size([1, 20, 128])",
                    "inference_time": 0.01,
                    "success": True,
                    "checkpoint": "none",
                },
            )


@pytest.fixture
def server() -> Iterator[CannedServer]:
    srv = CannedServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _write_frames(directory: Path, ids: list[int], method: str = "FTRL") -> dict[int, bytes]:
    rng = np.random.default_rng(0)
    frames = {}
    for k in ids:
        path = directory / f"{method}_{k:06d}.png"
        frame_image(rng, (20, 30)).save(path)
        frames[k] = path.read_bytes()
    return frames


def _decoded_history(body: dict) -> list[bytes]:
    return [base64.b64decode(s) for s in body.get("history_images_base64", [])]


def test_infer_from_server_sends_image_history_and_velocities(tmp_path: Path, server: CannedServer) -> None:
    frames = _write_frames(tmp_path, [3, 4, 5])
    client = QwenClient(server.url, algorithm="DWA", timeout=5)
    assert client.num_history_frames == 2  # from GET /config

    result = client.infer_from_server(str(tmp_path / "FTRL_000005.png"), 0.812, -0.104)
    assert result is not None and result["success"]
    assert client.get_parameters_array(result) == PARAMETERS
    body = server.infer_requests()[-1]
    assert base64.b64decode(body["image_base64"]) == frames[5]
    assert _decoded_history(body) == [frames[4], frames[3]]  # newest first
    assert (body["linear_vel"], body["angular_vel"], body["algorithm"]) == (0.812, -0.104, "DWA")

    client.infer_from_server(str(tmp_path / "FTRL_000004.png"), 0.0, 0.0, algorithm="TEB")
    assert server.infer_requests()[-1]["algorithm"] == "TEB"


def test_history_fallbacks(tmp_path: Path, server: CannedServer) -> None:
    frames = _write_frames(tmp_path, [0, 1, 3, 5])
    client = QwenClient(server.url, num_history_frames=3)
    # Frame 4 missing -> the current frame (nothing newer in the list yet); 2 missing -> the newest listed (3).
    client.infer_from_server(str(tmp_path / "FTRL_000005.png"), 0.0, 0.0)
    assert _decoded_history(server.infer_requests()[-1]) == [frames[5], frames[3], frames[3]]
    # Episode start: ids below 0 do not exist -> the most recent available frame.
    client.infer_from_server(str(tmp_path / "FTRL_000001.png"), 0.0, 0.0)
    assert _decoded_history(server.infer_requests()[-1]) == [frames[0], frames[0], frames[0]]
    # A name not of the form <METHOD>_<6 digits>.png: the current frame repeated.
    other = tmp_path / "scene.png"
    other.write_bytes(frames[1])
    client.infer_from_server(str(other), 0.0, 0.0)
    assert _decoded_history(server.infer_requests()[-1]) == [frames[1]] * 3
    # No history frames configured: none sent.
    QwenClient(server.url, num_history_frames=0).infer_from_server(str(tmp_path / "FTRL_000005.png"), 0.0, 0.0)
    assert "history_images_base64" not in server.infer_requests()[-1]


def test_missing_image_and_failed_answers_give_none(tmp_path: Path, server: CannedServer) -> None:
    client = QwenClient(server.url, num_history_frames=0, backoff=0.01)
    assert client.infer_from_server(str(tmp_path / "FTRL_000009.png"), 0.0, 0.0) is None
    assert server.infer_requests() == []  # nothing sent for a missing file
    # A 4xx answer is not retried.
    assert client.infer_from_image_bytes(b"png", 0.0, 0.0, algorithm="NOPE") is None
    assert len(server.infer_requests()) == 1
    assert client.get_parameters_array(None) is None
    assert client.get_parameters_array({"success": False, "parameters_array": [1.0]}) is None


def test_500_then_200_is_retried(tmp_path: Path, server: CannedServer) -> None:
    client = QwenClient(server.url, num_history_frames=0, max_retries=2, backoff=0.05)
    server.fail_infer = 1
    result = client.infer_from_image_bytes(b"png", 0.5, 0.1, history_images=[b"h1", b"h2"])
    assert result is not None and result["parameters_array"] == PARAMETERS
    bodies = server.infer_requests()
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert _decoded_history(bodies[1]) == [b"h1", b"h2"]
    # More failures than retries: bounded attempts, then None.
    server.fail_infer = 10
    assert client.infer_from_image_bytes(b"png", 0.5, 0.1) is None
    assert len(server.infer_requests()) == 2 + 3


def test_timeout_is_not_retried(server: CannedServer) -> None:
    client = QwenClient(server.url, timeout=0.2, num_history_frames=0, max_retries=3, backoff=0.01)
    server.infer_delay = 1.0
    start = time.monotonic()
    assert client.infer_from_image_bytes(b"png", 0.0, 0.0) is None
    assert time.monotonic() - start < 0.9
    assert len(server.infer_requests()) == 1


def test_connection_refused_retries_with_backoff() -> None:
    client = QwenClient(f"http://127.0.0.1:{free_port()}", num_history_frames=0, max_retries=2, backoff=0.1)
    start = time.monotonic()
    assert client.infer_from_image_bytes(b"png", 0.0, 0.0) is None
    assert time.monotonic() - start >= 0.1 + 0.2  # two backoff sleeps
    assert client.list_algorithms() == {}
    assert client.health() is None and client.get_config() is None
    assert QwenClient(client.qwen_url, backoff=0.0).num_history_frames == 0  # /config unreachable: no history


def test_server_state_routes(server: CannedServer) -> None:
    client = QwenClient(server.url)
    assert client.list_algorithms() == {"algorithms": ALGORITHMS, "current": "DWA"}
    assert client.health()["status"] == "ok"
    assert client.get_config()["num_history_frames"] == 2


def test_wait_for_service(server: CannedServer) -> None:
    server.health_statuses = ["loading", "loading", "ok"]
    client = QwenClient(server.url)
    assert client.wait_for_service(timeout=5, poll_interval=0.05)
    assert sum(path == "/health" for _m, path, _b in server.requests) == 3
    server.health_statuses = ["loading"]
    with pytest.raises(TimeoutError, match="not ready"):
        client.wait_for_service(timeout=0.3, poll_interval=0.05)


SERVER_SCRIPT = """
import argparse, json
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "num_history_frames": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
HTTPServer(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()
"""


def test_auto_start_launches_and_stops_the_script(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match="qwen_script_path"):
        QwenClient(url, auto_start=True, qwen_script_path=str(tmp_path / "missing.py"), backoff=0.0)
    script = tmp_path / "server.py"
    script.write_text(SERVER_SCRIPT)
    client = QwenClient(url, auto_start=True, qwen_script_path=str(script), startup_timeout=20)
    try:
        process = client.server_process
        assert process is not None and process.poll() is None
        assert client.health()["status"] == "ok" and client.num_history_frames == 3
    finally:
        client.close()
    assert process.poll() is not None and client.server_process is None


def test_client_is_stdlib_only_and_python38_compatible() -> None:
    source = CLIENT_SOURCE.read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # no syntax newer than 3.8 (match, except*, ...)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in client.py"
            imported.add(node.module.split(".")[0])
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    # Annotations such as ``list[int] | None`` are only safe on 3.8 as postponed (string) annotations.
    assert any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    annotations = set()
    for node in ast.walk(tree):
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if ann is not None:
                annotations |= {id(sub) for sub in ast.walk(ann)}
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            assert node.value.id not in {"list", "dict", "tuple", "set", "frozenset", "type"}, ast.unparse(node)
        if isinstance(node, ast.Attribute):
            assert node.attr not in {"removeprefix", "removesuffix", "is_relative_to"}, ast.unparse(node)
    # No f-string "=" specifier ({x=}); the AST cannot tell it from "x={x}", the tokens can.
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING and token.string[:1] in "fF":
            assert not re.search(r"=\s*(![rsa])?\}", token.string), token.string
    # It imports and runs with no site-packages at all (-S): nothing third-party hides behind a lazy import.
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('c', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
        "c = m.QwenClient('http://127.0.0.1:9', num_history_frames=0, max_retries=0); "
        "print(c.list_algorithms(timeout=0.5), c.get_parameters_array({'success': True, 'parameters_array': [1]}))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code, str(CLIENT_SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["{}", "[1.0]"]
    assert "numpy" not in out.stderr and "Traceback" not in out.stderr
