"""Hypothesis fuzzing of the inference server's endpoints (``/infer``, ``/reload``, ``/v1/chat/completions``) on a
real server on 127.0.0.1: bodies and headers. Every request is answered within the time limit with a JSON error
(4xx) or a result; never a 5xx; no file outside the image root is read; the server keeps serving."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from _fuzz import expect, fuzz_tests
from _helpers import b64, png, running
from _tiny_ckpt import build_tiny_checkpoint
from hypothesis import strategies as st

from envs.planners import DWA_PARAMS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
PNG = b64(png(0, (16, 24))[0])
ROOT = Path(tempfile.mkdtemp(prefix="fuzz_http_root_"))
"""The server's only image root."""
(ROOT / "frame.png").write_bytes(png(1, (16, 24))[0])
SERVER: dict[str, str] = {}
"""``url`` of the running server (set by the module fixture)."""


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from sb3_vlm.serving.app import build_app
    from sb3_vlm.serving.chat import ChatModel, add_chat_routes
    from sb3_vlm.serving.server import ServerSettings

    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("http") / "checkpoint-5").path
    app = build_app(checkpoint, ServerSettings(params=DWA_PARAMS, image_roots=[ROOT]), max_body_bytes=1 << 16)
    add_chat_routes(app, ChatModel.from_source("tiny"))
    with running(app) as url:
        SERVER["url"] = url
        yield url
        assert request("GET", "/health", b"", {})[0] == 200, "the server stopped serving"


def request(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    parsed = urlparse(SERVER["url"])
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
paths = st.one_of(
    st.sampled_from([str(ROOT / "frame.png"), str(ROOT / "nope.png"), str(ROOT), "/etc/passwd", "", "\x00", "~"]),
    st.sampled_from([f"{ROOT}/../{Path(tempfile.gettempdir()).name}", "frame.png", str(ROOT / "frame.png\x00x")]),
    st.text(max_size=20),
)
images = st.one_of(st.just(PNG), st.just(PNG[:40]), st.text(max_size=20), scalars)
infer_bodies = st.fixed_dictionaries(
    {},
    optional={
        "image_base64": images,
        "image_path": paths,
        "history_images_base64": st.one_of(st.lists(images, max_size=3), scalars),
        "linear_vel": scalars,
        "angular_vel": scalars,
        "algorithm": st.one_of(st.sampled_from(["DWA", "dwa", "TEB"]), scalars),
    },
)
reload_bodies = st.one_of(st.fixed_dictionaries({}, optional={"noise_std": scalars, "x": scalars}), scalars)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=20), scalars)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries({"url": st.just(f"data:image/png;base64,{PNG}")}),
        }
    ),
    st.dictionaries(st.sampled_from(["type", "text", "image_url", "url"]), scalars, max_size=3),
)
messages = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(["system", "user", "assistant"]), scalars),
        "content": st.one_of(st.text(max_size=30), st.lists(parts, max_size=3), scalars),
    }
)
chat_bodies = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(messages, max_size=3), scalars)},
    optional={
        "model": st.one_of(st.text(max_size=8), scalars),
        "max_tokens": st.one_of(st.integers(-2, 4), scalars),
        "temperature": scalars,
        "n": scalars,
        "stream": scalars,
    },
)
BODIES = {"/infer": infer_bodies, "/reload": reload_bodies, "/v1/chat/completions": chat_bodies}
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, bytes, dict[str, str], Any]:
    path = draw(st.sampled_from(sorted(BODIES)))
    body = draw(BODIES[path])
    kind = draw(st.integers(0, 9))
    data = draw(st.binary(max_size=64)) if kind == 0 else json.dumps(body).encode()
    if kind == 1:
        data = data[: draw(st.integers(0, len(data)))]
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "", "application/json; x"]))}
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["X-Custom", "Accept", "Content-Encoding", "Expect", "Authorization"]))
        headers[name] = draw(header_text)
    method = "POST" if draw(st.integers(0, 9)) else draw(st.sampled_from(["GET", "PUT", "DELETE"]))
    return method, path, data, headers, body if kind > 1 else None


def _outside_root(body: Any) -> bool:
    """Whether ``body`` asks for an image_path whose real path is not inside the root."""
    path = body.get("image_path") if isinstance(body, dict) else None
    if not isinstance(path, str):
        return False
    try:
        return not Path(os.path.realpath(path)).is_relative_to(ROOT)
    except ValueError:  # a NUL byte
        return True


def check_request(case: tuple[str, str, bytes, dict[str, str], Any]) -> None:
    method, path, data, headers, body = case
    status, answer = expect("HTTP endpoints", lambda: request(method, path, data, headers), (), [], lambda r: str(r[0]))
    assert status < 500, f"{method} {path} {data[:200]!r}: {status} {answer[:300]!r}"
    parsed = json.loads(answer)
    if status >= 400:
        assert parsed.get("detail") or parsed.get("error", {}).get("message"), answer[:300]
    if method == "POST" and path == "/infer" and _outside_root(body) and "image_base64" not in body:
        assert status in (400, 403, 422), f"image_path {body['image_path']!r} outside the root answered {status}"


test_fuzz_http, test_fuzz_http_slow = fuzz_tests("HTTP endpoints", http_requests(), check_request)


def test_image_path_with_a_nul_byte_is_a_400():
    """Found by the 1,000-request profile: ``os.path.realpath`` raised ValueError, answered 500."""
    body = json.dumps({"image_path": f"{ROOT / 'frame.png'}\x00x"}).encode()
    status, answer = request("POST", "/infer", body, {"Content-Type": "application/json"})
    assert status == 400 and "NUL" in json.loads(answer)["detail"]
