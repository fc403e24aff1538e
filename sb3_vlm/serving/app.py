"""The HTTP app around a :class:`~sb3_vlm.serving.server.PolicyServer`: FastAPI routes, body limit, ``build_app``
and ``serve`` (uvicorn).

FastAPI, pydantic and uvicorn are the optional extra ``serve`` (``pip install "sb3-vlm[serve]"``): only this module
imports them. No postponed annotations here: FastAPI reads the request models from the endpoint annotations at run
time.
"""

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, ValidationError
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sb3_vlm.serving.app needs FastAPI and uvicorn, which are the optional extra 'serve': "
        'pip install "sb3-vlm[serve]"'
    ) from e

from sb3_vlm._validation import check_int, settings_from
from sb3_vlm.serving.server import DEFAULT_PORT, PolicyServer, RequestError, ServerSettings

logger = logging.getLogger("sb3_vlm.serving.server")

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
    :return: The app (see :func:`build_app`).
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
    _add_error_handlers(app)
    _add_state_routes(app, server)
    _add_model_routes(app, server)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Request errors and wrong JSON types as ``{"detail", "success": False}`` answers (400-413, 422)."""

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


def _add_state_routes(app: FastAPI, server: PolicyServer) -> None:
    """``GET /health``, ``/config``, ``/algorithms``."""

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return server.health()

    @app.get("/config")
    async def config() -> dict[str, Any]:
        return server.config()

    @app.get("/algorithms")
    async def algorithms() -> dict[str, Any]:
        return server.algorithms()


def _add_model_routes(app: FastAPI, server: PolicyServer) -> None:
    """``POST /infer`` (decoded off the event loop, answered by the batch worker) and ``POST /reload``."""

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


def _require_serving() -> tuple[Any, Any]:
    """Import FastAPI and uvicorn lazily, naming the extra that provides them."""
    try:
        import fastapi
        import uvicorn
    except ImportError as e:
        raise ImportError(
            "sb3_vlm.serving.server needs FastAPI and uvicorn, which are the optional extra 'serve': "
            'pip install "sb3-vlm[serve]"'
        ) from e
    return fastapi, uvicorn


def build_app(
    checkpoint: str | os.PathLike | None = None,
    settings: ServerSettings | str | None = None,
    *,
    server: PolicyServer | None = None,
    max_body_bytes: int = 8 * 1024 * 1024,
    **server_kwargs: Any,
) -> FastAPI:
    """
    The FastAPI app of the inference server. The model is loaded here (errors surface before any port is bound);
    the batch worker runs while the app does (its lifespan).

    :param checkpoint: Checkpoint directory (see :class:`PolicyServer`); or pass ``server``.
    :param settings: How to build and serve it (:class:`ServerSettings`; None: its defaults). The call form of
        sb3-vlm 0.1, its names as keyword arguments (``server_kwargs``), still works for one release and warns.
    :param server: An existing :class:`PolicyServer` instead of ``checkpoint`` + ``settings``.
    :param max_body_bytes: Largest request body accepted (413 above it).
    :return: The app; its :class:`PolicyServer` is ``app.state.server``.
    """
    _require_serving()
    if (checkpoint is None) == (server is None):
        raise ValueError("build_app: pass exactly one of checkpoint and server")
    if server is not None and (settings is not None or server_kwargs):
        given = sorted(server_kwargs) or "settings"
        raise ValueError(f"build_app: settings are for a new server, got {given} with server=")
    check_int(max_body_bytes, "max_body_bytes", owner="build_app")
    if server is None:
        server = PolicyServer(checkpoint, settings_from(ServerSettings, settings, (), server_kwargs, "build_app"))
    return create_app(server, max_body_bytes)


def serve(
    checkpoint: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    settings: ServerSettings | str | None = None,
    *,
    max_body_bytes: int = 8 * 1024 * 1024,
    log_level: str = "info",
    **server_kwargs: Any,
) -> None:
    """
    Load the checkpoint and serve it until interrupted (blocking).

    :param checkpoint: Checkpoint directory (see :class:`PolicyServer`).
    :param host: Interface to bind; ``0.0.0.0`` exposes the server to the network (FTRL's default), so it is not
        the default here.
    :param port: TCP port.
    :param settings: How to build and serve it (:class:`ServerSettings`). The call form of sb3-vlm 0.1 (``mode``
        here, the other names as keyword arguments) still works for one release and warns.
    :param max_body_bytes: Largest request body accepted.
    :param log_level: uvicorn log level.
    """
    _, uvicorn = _require_serving()
    settings = settings_from(ServerSettings, settings, (), server_kwargs, "serve")
    app = build_app(checkpoint, settings, max_body_bytes=max_body_bytes)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
