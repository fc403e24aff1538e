"""Parameter sources of the collector (:mod:`sb3_vlm.workflows.collector`): what chooses the planner parameters of
each step, FTRL-style. ``--server URL``: an inference server's ``/infer`` (ours or FTRL's) through
:class:`~sb3_vlm.serving.client.QwenClient`; ``--policy PATH``: any policy :func:`sb3_vlm.policies.load_policy` reads,
in process. A source returns None on a failure the collector falls back from (the default parameters)."""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from envs.planners import ParamTable
from sb3_vlm.formats.trajectories import resize_image
from sb3_vlm.serving.client import QwenClient

__all__ = ["Frame", "LocalPolicySource", "ParameterSource", "ServerSource"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """What a parameter source sees at the start of a step.

    :param image: Scene image, uint8 ``[400, 600, 3]`` RGB.
    :param png: The same image as PNG file bytes (what is on disk as this step's frame).
    :param velocity: Measured ``[v (m/s), w (rad/s)]``, float64 ``[2]``.
    :param laser: APPLR laser observation, float32 ``[721]`` (or longer with the env's goal/last-action options).
    :param history: PNG bytes of this episode's earlier frames, newest first.
    """

    image: np.ndarray
    png: bytes
    velocity: np.ndarray
    laser: np.ndarray
    history: tuple[bytes, ...] = ()


class ParameterSource(Protocol):
    """Chooses planner parameters for a step; ``None`` means a failure the collector falls back from (the default
    parameters), an exception a bug that stops the collection."""

    def __call__(self, frame: Frame) -> np.ndarray | None:
        """Physical parameters ``[>= P]`` (only the first ``P`` are used, then clipped), or None."""
        ...


def _history(frame: Frame, n: int) -> list[bytes]:
    """``n`` history frames, newest first; missing ones repeat the oldest available, else the current frame
    (docs/compat/ftrl.md §5.2)."""
    frames: list[bytes] = []
    for k in range(n):
        frames.append(frame.history[k] if k < len(frame.history) else (frames[-1] if frames else frame.png))
    return frames


class ServerSource:
    """Parameters from an inference server's ``/infer`` (FTRL's collector, docs/compat/ftrl.md §5.3 step 1).

    :param url: Server base URL, e.g. ``http://127.0.0.1:7000``.
    :param planner: Planner name sent with each request.
    :param timeout: Seconds to wait for each ``/infer`` answer (FTRL: 30).
    :param retries: Extra attempts after a connection error or a 5xx answer (the client backs off between them).
    :param wait: Seconds to wait for the server's ``/health`` to report ready before collecting; 0 does not wait.
        A server still down after that is not an error: steps fall back to the default parameters.
    """

    def __init__(self, url: str, planner: str = "DWA", timeout: float = 30.0, retries: int = 2, wait: float = 0.0):
        self.client = QwenClient(url, algorithm=planner, timeout=timeout, num_history_frames=0, max_retries=retries)
        if wait > 0:
            try:
                self.client.wait_for_service(timeout=wait, poll_interval=min(2.0, wait))
            except TimeoutError as e:
                logger.warning("%s; collecting with default parameters until it answers", e)
        self._configured = self._configure()
        self.model_version: int | None = None
        """``model_version`` of the last answer (the server's reloads), None until one reports it."""

    def _configure(self) -> bool:
        """Read how many history frames the server wants (``/config``); False if it did not answer."""
        config = self.client.get_config()
        if config is None:
            return False
        self.client.num_history_frames = int(config.get("num_history_frames", 0) or 0)
        return True

    def __call__(self, frame: Frame) -> np.ndarray | None:
        history = _history(frame, self.client.num_history_frames)
        v, w = (float(x) for x in frame.velocity)
        result = self.client.infer_from_image_bytes(frame.png, v, w, history_images=history)
        try:
            params = QwenClient.get_parameters_array(result)
        except (KeyError, TypeError, ValueError) as e:  # a 200 answer without a usable parameters_array
            logger.warning("%s: malformed /infer answer (%s: %s)", self.client.qwen_url, type(e).__name__, e)
            return None
        if params is None:
            return None
        version = result.get("model_version") if isinstance(result, dict) else None
        self.model_version = int(version) if isinstance(version, int) else self.model_version
        if not self._configured:  # the server was down when we started: ask now that it answers
            self._configured = self._configure()
        return np.asarray(params, dtype=np.float64)


class LocalPolicySource:
    """Parameters from a local policy, in process, loaded by :func:`sb3_vlm.policies.load_policy`: an SB3 ``.zip``
    (``VLMTD3`` or ``TD3``), a directory written by ``VLMTD3Policy.save_pretrained`` / ``publish_policy`` (the TD3
    actor) or an FTRL SFT checkpoint (the DPT head, with this episode's earlier frames as its history, as the FTRL
    server reads them from a client).

    The scene image is resized (Pillow bilinear, as the replay loader and the server do) to the size the policy
    records (its observation space, or the hand-off's); otherwise it is used at its own size.

    :param path: Policy directory or ``.zip`` file.
    :param params: The env's parameter table (output names and, for a directory, the physical ranges).
    :param base_model: Base Qwen2.5-VL (``"tiny"`` or a local directory) of a checkpoint directory that does not
        record it.
    :raises FileNotFoundError: if ``path`` does not exist.
    """

    def __init__(self, path: str | os.PathLike, params: ParamTable, base_model: str | None = None):
        from sb3_vlm.policies import load_policy

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"policy {path} not found")
        self.path = path
        self.policy = load_policy(path, params=params, base_model=base_model, algorithm=params.planner)

    def __call__(self, frame: Frame) -> np.ndarray | None:
        policy = self.policy
        if policy.observation == "laser":
            return policy.predict(frame.laser).ravel()
        size = getattr(policy, "input_size", None)
        image = frame.image if size is None else resize_image(frame.image, size)
        history = None
        if policy.kind == "sft" and frame.history:
            history = [[np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in frame.history]]
        return policy.predict(image, frame.velocity.astype(np.float32), history=history).ravel()

    def close(self) -> None:
        """Nothing to release (the policy runs in this process)."""
