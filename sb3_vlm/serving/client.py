"""HTTP client for the FTRL-compatible inference server: a drop-in for the original ``QwenClient``
(docs/compat/ftrl.md §5.2) with timeouts, bounded retries (connection errors and 5xx, not timeouts) and ``None`` on
failure. This file must stay importable on Python 3.8 with the standard library alone (string annotations, nothing
newer than 3.8 at run time): the ROS side copies it."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["QwenClient", "ServerRequestError"]

logger = logging.getLogger(__name__)

# Frame files written by the renderer: "<METHOD>_<k:06d>.png" (e.g. FTRL_000012.png).
_FRAME_NAME = re.compile(r"^([A-Z]+)_(\d{6})\.png$")


class ServerRequestError(Exception):
    """A request failed after its retries (HTTP error, bad JSON, connection error or timeout)."""


class QwenClient:
    """Client of the inference server's ``/health``, ``/config``, ``/algorithms`` and ``/infer`` routes.

    :param qwen_url: Server base URL, e.g. ``http://127.0.0.1:7000``.
    :param algorithm: Planner name sent with each request (``DWA``, ``TEB``, ``MPPI``, ``DDP``).
    :param timeout: Seconds to wait for an ``/infer`` answer.
    :param auto_start: If the server does not answer ``/health``, start ``qwen_script_path`` with this Python
        (``<python> <script> --port <url port>``) and wait until it reports ``ok``.
    :param qwen_script_path: Server script for ``auto_start``.
    :param num_history_frames: History frames to send with each image; ``None`` asks the server's ``/config``
        (0 if that fails: no history sent).
    :param max_retries: Extra attempts after a connection error or a 5xx answer.
    :param backoff: Seconds before the first retry, doubled for each further one.
    :param startup_timeout: Seconds ``auto_start`` waits for the started server.
    """

    def __init__(
        self,
        qwen_url: str = "http://localhost:5000",
        algorithm: str = "DWA",
        timeout: float = 30.0,
        auto_start: bool = False,
        qwen_script_path: str | None = None,
        num_history_frames: int | None = None,
        max_retries: int = 2,
        backoff: float = 0.5,
        startup_timeout: float = 300.0,
    ) -> None:
        if max_retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError(
                "QwenClient: need timeout > 0, max_retries >= 0 and backoff >= 0, got "
                f"timeout={timeout}, max_retries={max_retries}, backoff={backoff}"
            )
        self.qwen_url = qwen_url.rstrip("/")
        self.algorithm = algorithm
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.server_process: subprocess.Popen | None = None
        if auto_start and self.health() is None:
            self._start_server(qwen_script_path, startup_timeout)
        if num_history_frames is None:
            config = self.get_config()
            num_history_frames = int(config.get("num_history_frames", 0)) if config else 0
        self.num_history_frames = num_history_frames

    # ------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        route: str,
        payload: dict[str, Any] | None = None,
        timeout: float | None = None,
        retries: int = -1,
    ) -> dict[str, Any]:
        """Send one JSON request; return the decoded JSON object.

        :param retries: Extra attempts on connection errors / 5xx; -1 means ``max_retries``.
        :raises ServerRequestError: When every attempt failed, on a 4xx answer, a timeout or a non-JSON answer.
        """
        url = self.qwen_url + route
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json"} if data is not None else {}
        retries = self.max_retries if retries < 0 else retries
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode("utf-8", "replace")
                error = f"{method} {url}: HTTP {e.code} {detail}"
                if e.code < 500:
                    raise ServerRequestError(error) from e
            except (socket.timeout, TimeoutError) as e:  # noqa: UP041 - distinct classes before Python 3.10
                raise ServerRequestError(f"{method} {url}: no answer within {timeout} s") from e
            except urllib.error.URLError as e:
                if isinstance(e.reason, (socket.timeout, TimeoutError)):  # noqa: UP041 - see above
                    raise ServerRequestError(f"{method} {url}: no connection within {timeout} s") from e
                error = f"{method} {url}: {e.reason}"
            except ConnectionError as e:  # reset / refused / remote closed without answer
                error = f"{method} {url}: {e}"
            else:
                try:
                    result = json.loads(body.decode("utf-8"))
                except ValueError as e:
                    raise ServerRequestError(f"{method} {url}: answer is not JSON: {body[:100]!r}") from e
                if not isinstance(result, dict):
                    raise ServerRequestError(f"{method} {url}: expected a JSON object, got {result!r}")
                return result
            if attempt < retries:
                delay = self.backoff * 2**attempt
                logger.warning("%s; retry %d/%d in %.2f s", error, attempt + 1, retries, delay)
                time.sleep(delay)
        raise ServerRequestError(f"{error} (after {retries + 1} attempts)")

    def _get_or_none(
        self, route: str, timeout: float, retries: int = -1, level: int = logging.WARNING
    ) -> dict[str, Any] | None:
        try:
            return self._request("GET", route, timeout=timeout, retries=retries)
        except ServerRequestError as e:
            logger.log(level, "%s", e)
            return None

    # ------------------------------------------------------------------ server state

    def health(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """``GET /health``: ``status`` ("ok"/"loading"), ``model_loaded``, ``device``, ... or ``None``."""
        # A probe: failing is an answer (not up yet), not worth a warning.
        return self._get_or_none("/health", timeout, retries=0, level=logging.DEBUG)

    def get_config(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """``GET /config``: ``algorithm``, ``num_params``, ``use_history``, ``num_history_frames``, ... or ``None``."""
        return self._get_or_none("/config", timeout)

    def list_algorithms(self, timeout: float = 2.0) -> dict[str, Any]:
        """``GET /algorithms``: ``{"algorithms": [...], "current": ...}``, or ``{}`` on error."""
        return self._get_or_none("/algorithms", timeout) or {}

    def wait_for_service(self, timeout: float = 60.0, poll_interval: float = 2.0) -> bool:
        """Poll ``/health`` (1 s per try) until the server reports ``status == "ok"``.

        :param timeout: Seconds to wait in total.
        :param poll_interval: Seconds between tries.
        :return: ``True`` once the server is ready.
        :raises TimeoutError: If it is not ready within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = self.health(timeout=1.0)
            if last is not None and last.get("status") == "ok":
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.qwen_url}: not ready after {timeout} s (last /health: {last})")
            time.sleep(min(poll_interval, remaining))

    def _start_server(self, script_path: str | None, startup_timeout: float) -> None:
        if not script_path or not os.path.isfile(script_path):
            raise ValueError(f"QwenClient(auto_start=True) needs an existing qwen_script_path, got {script_path!r}")
        port = urllib.parse.urlsplit(self.qwen_url).port or 80
        logger.info("starting %s on port %d", script_path, port)
        self.server_process = subprocess.Popen([sys.executable, script_path, "--port", str(port)])
        try:
            self.wait_for_service(timeout=startup_timeout, poll_interval=0.5)
        except TimeoutError:
            self.close()
            raise

    def close(self) -> None:
        """Stop the server this client started with ``auto_start`` (no-op otherwise)."""
        if self.server_process is not None:
            self.server_process.terminate()
            try:
                self.server_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server_process.kill()
                self.server_process.wait()
            self.server_process = None

    # ------------------------------------------------------------------ inference

    def _read_history_frames(self, image_path: str, current: bytes) -> list[bytes]:
        """Bytes of the ``num_history_frames`` frames before ``image_path``, newest first.

        Frame ``<METHOD>_<id-k:06d>.png`` (k = 1..N) from the same directory; a missing one is replaced by the
        newest frame already in the list, or by the current frame if there is none yet. A file name not of the
        form ``<METHOD>_<6 digits>.png`` gives N copies of the current frame.
        """
        frames: list[bytes] = []
        match = _FRAME_NAME.match(os.path.basename(image_path))
        for k in range(1, self.num_history_frames + 1):
            frame = None
            if match is not None and int(match.group(2)) - k >= 0:
                name = f"{match.group(1)}_{int(match.group(2)) - k:06d}.png"
                path = os.path.join(os.path.dirname(image_path), name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        frame = f.read()
            if frame is None:
                frame = frames[-1] if frames else current
            frames.append(frame)
        return frames

    def infer_from_image_bytes(
        self,
        image_bytes: bytes,
        linear_vel: float,
        angular_vel: float,
        algorithm: str | None = None,
        history_images: list[bytes] | None = None,
    ) -> dict[str, Any] | None:
        """``POST /infer`` with an encoded image (PNG/JPEG file bytes).

        :param image_bytes: The current frame, as file bytes.
        :param linear_vel: Current linear velocity (m/s).
        :param angular_vel: Current angular velocity (rad/s).
        :param algorithm: Planner name; the client's ``algorithm`` if ``None``.
        :param history_images: Earlier frames as file bytes, newest first; none sent if ``None`` or empty.
        :return: The server's answer (``parameters``, ``parameters_array``, ``inference_time``, ``success``, ...)
            or ``None`` on any error.
        """
        payload: dict[str, Any] = {
            "image_base64": base64.b64encode(image_bytes).decode("ascii"),
            "linear_vel": float(linear_vel),
            "angular_vel": float(angular_vel),
            "algorithm": algorithm or self.algorithm,
        }
        if history_images:
            payload["history_images_base64"] = [base64.b64encode(b).decode("ascii") for b in history_images]
        try:
            return self._request("POST", "/infer", payload)
        except ServerRequestError as e:
            logger.warning("%s", e)
            return None

    def infer_from_server(
        self, image_path: str, linear_vel: float, angular_vel: float, algorithm: str | None = None
    ) -> dict[str, Any] | None:
        """Send the frame at ``image_path`` (plus its history frames) to ``/infer``.

        :param image_path: Frame file ``<METHOD>_<k:06d>.png``.
        :param linear_vel: Current linear velocity (m/s).
        :param angular_vel: Current angular velocity (rad/s).
        :param algorithm: Planner name; the client's ``algorithm`` if ``None``.
        :return: The server's answer, or ``None`` if the file is missing or the request failed.
        """
        if not os.path.isfile(image_path):
            logger.warning("infer_from_server: image %s does not exist", image_path)
            return None
        with open(image_path, "rb") as f:
            current = f.read()
        history = self._read_history_frames(image_path, current) if self.num_history_frames > 0 else None
        return self.infer_from_image_bytes(current, linear_vel, angular_vel, algorithm, history)

    @staticmethod
    def get_parameters_array(result: dict[str, Any] | None) -> list[float] | None:
        """Planner parameters (physical units) of a successful ``/infer`` answer, else ``None``.

        Returns a list of floats (the original returned a numpy array; ``numpy.asarray`` it if needed).
        """
        if not result or not result.get("success"):
            return None
        return [float(v) for v in result["parameters_array"]]
