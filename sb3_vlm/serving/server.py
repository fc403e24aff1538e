"""FTRL-compatible HTTP inference server (docs/compat/ftrl.md §5.1), FastAPI + uvicorn, imported only when an app is
built. Routes, modes, history frames and the differences from FTRL's server: docs/guide/ftrl_workflow.md "Serving"."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_vlm._validation import check_int, settings_from
from sb3_vlm.formats.checkpoint import CheckpointError, read_checkpoint, recover_directory
from sb3_vlm.policies import MODES, DirectoryOptions, VLMDirectoryPolicy, load_directory
from sb3_vlm.serving.batching import Batcher
from sb3_vlm.serving.reload import ArchitectureChanged, dir_identity, prepare_in_place
from sb3_vlm.serving.requests import RequestError, b64_bytes, decode_image, read_image_path

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PORT",
    "PolicyServer",
    "RequestError",
    "ServerSettings",
]

logger = logging.getLogger(__name__)

ALGORITHMS = ("DWA", "TEB", "MPPI", "DDP")
"""Planner names of ``GET /algorithms`` (FTRL)."""
DEFAULT_PORT = 5000
"""FTRL's ``--port`` default."""
HISTORY_SOURCES = ("client", "current")
_RELOAD_ATTEMPTS = 3


@dataclass
class _Item:
    """One decoded ``/infer`` request waiting for the batch worker."""

    image: th.Tensor  # uint8 [3, H, W]
    velocity: tuple[float, float]
    history: list[th.Tensor] | None  # uint8 [3, h, w] each, newest first, or None
    future: Future = field(default_factory=Future)


@dataclass
class _Result:
    names: tuple[str, ...]  # of the model that answered (a reload may change them)
    parameters: np.ndarray  # [P] float64, physical units
    action: np.ndarray | None  # [A] in [-1, 1] (actor mode)
    batch_size: int
    model_version: int  # reloads before the batch ran: which policy answered


# ------------------------------------------------------------------------------------------------------------ server


@dataclass
class ServerSettings(DirectoryOptions):
    """
    How a :class:`PolicyServer` builds the policy of its checkpoint directory (the fields of
    :class:`~sb3_vlm.policies.DirectoryOptions`, ``mode`` ``"sft"`` by default) and serves it.

    Incoming images are resized to ``input_size`` (Pillow bilinear, as the replay loader; None: the observation size
    recorded by ``publish_policy`` in ``"actor"`` mode, else the image's own size).
    """

    mode: str = "sft"
    """``"sft"`` (supervised head, FTRL), ``"actor"`` (TD3 actor) or ``"flow"`` (flow-matching expert)."""
    noise_std: float = 0.0
    """``"actor"`` mode: std of the Gaussian exploration noise added to the [-1, 1] action."""
    history: str | None = None
    """``"client"`` or ``"current"`` history frames (see the module docstring); None: ``"client"`` in ``"sft"`` mode,
    ``"current"`` in ``"actor"`` mode (:attr:`history_source`)."""
    max_batch_size: int = 8
    """Most requests run through the model at once."""
    batch_delay: float = 0.005
    """Seconds the worker waits for more requests after the first one of a batch."""
    max_image_pixels: int = 4096 * 4096
    """Largest decoded image (width x height) accepted."""
    image_roots: Sequence[str | os.PathLike] = ()
    """Directories ``image_path`` requests may read from (FTRL's fallback: a file on the server's machine); the real
    path (symlinks resolved) must lie inside one of them, else 403. Empty (default): every ``image_path`` is refused
    (403), so a client cannot read arbitrary files through the server."""
    noise_seed: int | None = None
    """Seed of the exploration noise."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ServerSettings: mode must be one of {MODES}, got {self.mode!r}")
        if self.history not in (None, *HISTORY_SOURCES):
            raise ValueError(f"ServerSettings: history must be one of {HISTORY_SOURCES} or None, got {self.history!r}")
        self.algorithm = self.algorithm.upper()
        self.base_model = None if self.base_model is None else str(self.base_model)
        self.noise_std = _validate_noise(self.noise_std, self.mode)
        check_int(self.max_batch_size, "max_batch_size", owner="ServerSettings")
        check_int(self.max_image_pixels, "max_image_pixels", owner="ServerSettings")
        if not self.batch_delay >= 0:
            raise ValueError(f"ServerSettings: batch_delay must be >= 0 s, got {self.batch_delay!r}")
        if self.input_size is not None:
            self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.image_roots = tuple(Path(os.path.realpath(root)) for root in self.image_roots)
        missing = [str(root) for root in self.image_roots if not root.is_dir()]
        if missing:
            raise ValueError(f"ServerSettings: image_roots must be existing directories, got {missing}")

    @property
    def history_source(self) -> str:
        """Where history frames come from: ``history``, or by default ``"client"`` in ``"sft"`` mode, else
        ``"current"``."""
        if self.history is not None:
            return self.history
        return "client" if self.mode == "sft" else "current"


class PolicyServer:
    """
    The model behind the HTTP routes: request decoding, the batching worker and ``/reload``. Framework-free; see
    :func:`build_app` for the FastAPI app around it.

    :param checkpoint: Checkpoint directory in the FTRL layout (``"sft"``) or written by
        :meth:`VLMTD3Policy.save_pretrained` / :func:`sb3_vlm.serving.handoff.publish_policy` (``"actor"``).
    :param settings: How to build and serve it (:class:`ServerSettings`; None: its defaults). The call form of
        sb3-vlm 0.1, ``PolicyServer(checkpoint, mode, **kwargs)`` with the names of :class:`ServerSettings`, still
        works for one release and warns (``DeprecationWarning``).
    """

    def __init__(
        self, checkpoint: str | os.PathLike, settings: ServerSettings | str | None = None, *args: Any, **kwargs: Any
    ):
        self.settings = s = settings_from(ServerSettings, settings, args, kwargs, "PolicyServer")
        self.mode, self.algorithm, self.history_source = s.mode, s.algorithm, s.history_source
        self.noise_std, self.max_batch_size, self.batch_delay = s.noise_std, s.max_batch_size, float(s.batch_delay)
        self.max_image_pixels, self.image_roots = s.max_image_pixels, s.image_roots
        self.checkpoint = Path(checkpoint)
        self._rng = np.random.default_rng(s.noise_seed)
        self._model_lock = threading.Lock()  # held while the model runs or is modified
        self._reload_lock = threading.Lock()  # one reload at a time
        self._batcher = Batcher(self._predict, lambda item: tuple(item.image.shape), s.max_batch_size, s.batch_delay)
        self.model_version = 0
        self.model = self._load()
        planner = self.model.extractor.backbone.planner
        if planner != self.algorithm:
            logger.warning(
                "%s: the policy was built for planner %s (its prompt names it), serving it as %s",
                self.checkpoint,
                planner,
                self.algorithm,
            )

    def check_noise(self, noise_std: Any) -> float:
        """Validate an exploration noise std for this server's mode (``TypeError`` / ``ValueError``)."""
        return _validate_noise(noise_std, self.mode)

    def _load(self) -> VLMDirectoryPolicy:
        """Load the checkpoint, retrying when the directory was replaced while it was being read. A publisher killed
        in the middle of its directory swap leaves no ``checkpoint`` but the previous copy beside it: that is served
        (a server restarted before the learner's next publication still starts)."""
        for _ in range(_RELOAD_ATTEMPTS):
            source = recover_directory(self.checkpoint) or self.checkpoint
            before = dir_identity(source)
            model = load_directory(source, self.settings)
            if dir_identity(source) == before:
                return model
        raise CheckpointError(f"{self.checkpoint}: replaced while being read {_RELOAD_ATTEMPTS} times in a row")

    # ------------------------------------------------------------------ state routes

    def health(self) -> dict[str, Any]:
        """``GET /health`` (FTRL names + ``mode``, ``model_version``)."""
        return {
            "status": "ok",
            "model_loaded": True,
            "device": str(next(self.model.extractor.dpt.parameters()).device),
            "algorithm": self.algorithm,
            "policy_name": f"{self.algorithm.lower()}_qwen",
            "current_checkpoint": str(self.checkpoint),
            "mode": self.mode,
            "model_version": self.model_version,
        }

    def config(self) -> dict[str, Any]:
        """``GET /config`` (FTRL names + ``mode``, ``parameter_names``, ``history_source``, ``noise_std``)."""
        model = self.model
        history = model.extractor.history
        return {
            "algorithm": self.algorithm,
            "num_params": model.num_outputs,
            "use_history": history is not None,
            # Frames the server reads from requests: clients send this many.
            "num_history_frames": model.history_frames if self.history_source == "client" else 0,
            "history_dim": 0 if history is None else history.hidden_dim,
            "mode": self.mode,
            "parameter_names": list(model.names),
            "history_source": self.history_source,
            "noise_std": self.noise_std,
            "max_batch_size": self.max_batch_size,
        }

    def algorithms(self) -> dict[str, Any]:
        """``GET /algorithms``."""
        return {"algorithms": list(ALGORITHMS), "current": self.algorithm}

    # ------------------------------------------------------------------ inference

    def decode_request(self, body: Mapping[str, Any]) -> _Item:
        """
        Decode a validated ``/infer`` body into an item for the batch worker.

        :param body: ``image_base64`` | ``image_path``, ``history_images_base64``, ``linear_vel``, ``angular_vel``,
            ``algorithm`` (types already checked).
        :raises RequestError: 400 on a bad image, base64 string, path or algorithm.
        """
        algorithm = str(body.get("algorithm") or self.algorithm).upper()
        if algorithm != self.algorithm:
            raise RequestError(
                400, f"this server serves {self.algorithm} parameters, got algorithm {body.get('algorithm')!r}"
            )
        if body.get("image_base64") is not None:
            data = b64_bytes(body["image_base64"], "image_base64")
        elif body.get("image_path") is not None:
            data = read_image_path(body["image_path"], self.image_roots)
        else:
            raise RequestError(400, "need image_base64 (base64 of an image file) or image_path, got neither")
        model = self.model
        image = decode_image(data, "image", model.input_size, self.max_image_pixels)
        history, limit = None, self.max_image_pixels
        if self.history_source == "client" and model.history_frames > 0 and body.get("history_images_base64"):
            history = [
                decode_image(b64_bytes(s, f"history_images_base64[{i}]"), f"history_images_base64[{i}]", None, limit)
                for i, s in enumerate(body["history_images_base64"][: model.history_frames])
            ]
        return _Item(image, (float(body.get("linear_vel", 0.0)), float(body.get("angular_vel", 0.0))), history)

    def submit(self, item: _Item) -> Future:
        """Queue a decoded request; the future resolves to a ``_Result``."""
        return self._batcher.submit(item)

    def start(self) -> None:
        """Start the batch worker thread (idempotent)."""
        self._batcher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the batch worker after the queued requests; requests queued later fail."""
        self._batcher.stop(timeout)

    def answer(self, result: _Result, started: float) -> dict[str, Any]:
        """The ``/infer`` JSON of a result."""
        values = [float(v) for v in result.parameters]
        answer: dict[str, Any] = {
            "parameters": dict(zip(result.names, values, strict=True)),
            "parameters_array": values,
            "inference_time": time.perf_counter() - started,
            "success": True,
            "checkpoint": str(self.checkpoint),
            "batch_size": result.batch_size,
            "model_version": result.model_version,
        }
        if result.action is not None:
            answer["action"] = [float(v) for v in result.action]
        return answer

    def _predict(self, items: list[_Item]) -> list[_Result]:
        images = th.stack([item.image for item in items])
        velocity = th.tensor([item.velocity for item in items], dtype=th.float32)
        with self._model_lock:
            model, version = self.model, self.model_version
            history = None
            if self.history_source == "client" and model.history_frames > 0:
                history = [item.history for item in items]
            parameters, action = model.infer(images, velocity, history)
            if action is not None:
                action = model.explore(action, self.noise_std, self._rng)
                parameters = model.to_physical(action)
        assert parameters is not None
        n = len(items)
        actions = [None] * n if action is None else list(action)
        return [_Result(model.names, parameters[i], actions[i], n, version) for i in range(n)]

    # ------------------------------------------------------------------ reload

    def reload(self, noise_std: float | None = None) -> dict[str, Any]:
        """
        Re-read the checkpoint directory: in place (adapter, heads, history encoder, normalisation, actor head) when
        the architecture is unchanged, else by rebuilding the model. The new weights serve from the next batch on;
        if anything fails the previous model keeps serving and the error propagates.

        :param noise_std: New exploration noise std (``"actor"`` mode), or None to keep it.
        :return: ``success``, ``message``, ``checkpoint``, ``reload`` (``"in_place"`` | ``"rebuild"``),
            ``model_version``, ``noise_std``.
        """
        if noise_std is not None:
            noise_std = self.check_noise(noise_std)
        start = time.perf_counter()
        with self._reload_lock:
            kind = "in_place"
            for _ in range(_RELOAD_ATTEMPTS):
                before = dir_identity(self.checkpoint)
                ckpt = read_checkpoint(self.checkpoint)
                try:
                    apply = prepare_in_place(self.model, ckpt)
                except ArchitectureChanged as e:
                    logger.info("reload of %s rebuilds the model: %s", self.checkpoint, e)
                    kind, apply = "rebuild", None
                if dir_identity(self.checkpoint) == before:
                    break
            else:
                raise CheckpointError(f"{self.checkpoint}: replaced while being read {_RELOAD_ATTEMPTS} times")
            new_model = self._load() if apply is None else None
            with self._model_lock:
                if apply is not None:
                    apply()
                else:
                    self.model = new_model
                if noise_std is not None:
                    self.noise_std = noise_std
                self.model_version += 1
        elapsed = time.perf_counter() - start
        return {
            "success": True,
            "message": f"Reload ({kind.replace('_', ' ')}) in {elapsed:.2f}s",
            "checkpoint": str(self.checkpoint),
            "reload": kind,
            "model_version": self.model_version,
            "noise_std": self.noise_std,
        }


def _validate_noise(noise_std: Any, mode: str) -> float:
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)):
        raise TypeError(f"noise_std must be a number, got {type(noise_std).__name__}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    if noise_std > 0 and mode != "actor":
        raise ValueError(f"noise_std > 0 needs mode='actor' (exploration noise on the TD3 action), got {mode!r}")
    return float(noise_std)
