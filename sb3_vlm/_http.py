"""FastAPI routes of :mod:`sb3_vlm.server` (imported only by :func:`sb3_vlm.server.build_app`).

A module of its own because FastAPI reads the request models from the endpoint annotations at run time, which the
postponed annotations of ``server.py`` would hide; and because FastAPI/pydantic are the optional extra ``serve``.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from sb3_vlm.server import PolicyServer, RequestError

logger = logging.getLogger("sb3_vlm.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class InferRequest(BaseModel):
    """``POST /infer`` body, strict JSON types (``linear_vel: "0.5"`` is a 422); other fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    image_base64: str | None = None
    image_path: str | None = None
    history_images_base64: list[str] | None = None
    linear_vel: float = 0.0
    angular_vel: float = 0.0
    algorithm: str | None = None


class ReloadRequest(BaseModel):
    """Optional ``POST /reload`` body (FTRL sends none)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    noise_std: float | None = None


class BodyLimit:
    """
    ASGI middleware: 413 for a request body above ``max_bytes``, by ``Content-Length`` or while it streams in.

    The rest of the body is read and dropped (up to ``drain_bytes``) before answering, so that a client still
    sending gets the 413 rather than a reset connection.
    """

    def __init__(self, app: Any, max_bytes: int, drain_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes

    def _detail(self, size: str) -> str:
        return f"request body of {size} exceeds the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive)
            body = json.dumps({"detail": self._detail(f"{int(length)} bytes"), "success": False}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await self._drain(receive)
                    # FastAPI turns other exceptions raised while reading the body into a 400.
                    raise HTTPException(status_code=413, detail=self._detail("more than that"))
            return message

        await self.app(scope, limited_receive, send)

    async def _drain(self, receive: Receive) -> None:
        drained = 0
        while drained < self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def create_app(server: PolicyServer, max_body_bytes: int) -> FastAPI:
    """
    :param server: The loaded model and batch worker.
    :param max_body_bytes: Largest request body accepted.
    :return: The app (see :func:`sb3_vlm.server.build_app`).
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = FastAPI(title="sb3-vlm inference server", lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, drain_bytes=max(4 * max_body_bytes, 16 << 20))

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.message, "success": False})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes each bad input, and cannot render a NaN one (500 instead of 422).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail, "success": False})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/config")
    async def config() -> dict[str, Any]:
        return server.config()

    @app.get("/algorithms")
    async def algorithms() -> dict[str, Any]:
        return server.algorithms()

    @app.post("/infer")
    async def infer(body: InferRequest) -> Any:
        started = time.perf_counter()
        # Decoding is CPU work: off the event loop, like the model (the batch worker thread).
        item = await run_in_threadpool(server.decode_request, body.model_dump())
        try:
            result = await asyncio.wrap_future(server.submit(item))
        except Exception as e:  # noqa: BLE001 - this batch failed on the server: 500, keep serving
            return JSONResponse(status_code=500, content={"detail": f"inference failed: {e}", "success": False})
        return server.answer(result, started)

    @app.post("/reload")
    async def reload(request: Request) -> Any:
        raw = await request.body()
        try:
            body = ReloadRequest.model_validate_json(raw) if raw.strip() else ReloadRequest()
            if body.noise_std is not None:
                server.check_noise(body.noise_std)
        except ValidationError as e:
            detail = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in e.errors()]
            return JSONResponse(status_code=422, content={"detail": detail, "success": False})
        except ValueError as e:
            return JSONResponse(status_code=400, content={"detail": str(e), "success": False})
        try:
            return await run_in_threadpool(server.reload, body.noise_std)
        except Exception as e:  # noqa: BLE001 - FTRL answers 500; the previous model keeps serving
            logger.exception("reload of %s failed", server.checkpoint)
            return JSONResponse(status_code=500, content={"detail": f"reload failed: {e}", "success": False})

    return app
