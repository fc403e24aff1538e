"""FTRL-compatible HTTP inference server (ftrl_reference §5.1), FastAPI + uvicorn.

Routes and JSON names are FTRL's, so the stdlib :mod:`sb3_vlm.client` and the original ``qwen_client.py`` work
unchanged:

* ``GET /health``: ``status``, ``model_loaded``, ``device``, ``algorithm``, ``policy_name``, ``current_checkpoint``;
* ``GET /algorithms``: ``algorithms``, ``current``;
* ``GET /config``: ``algorithm``, ``num_params``, ``use_history``, ``num_history_frames``, ``history_dim``;
* ``POST /infer``: JSON ``image_base64`` (bytes of an image file) or ``image_path``, ``history_images_base64``
  (newest first), ``linear_vel`` (m/s), ``angular_vel`` (rad/s), ``algorithm`` -> ``parameters`` (name -> value),
  ``parameters_array``, ``inference_time`` (s), ``success``, ``checkpoint``;
* ``POST /reload``: re-reads the checkpoint directory.

Two serving modes:

* ``"sft"`` (FTRL's behaviour, §5.4): the DPT head including its supervised ``mlp``, de-normalised with
  ``pred * std + mean`` (no clipping); ``P`` outputs (e.g. 7 DWA parameters + next ``v``, ``w``).
* ``"actor"``: the TD3 actor of a directory written by :meth:`sb3_vlm.policy.VLMTD3Policy.save_pretrained` (or
  :func:`sb3_vlm.handoff.publish_policy`): ``tanh`` action in [-1, 1], optional Gaussian exploration noise (std in
  action units, then clipped to [-1, 1], as SB3's TD3 collects), mapped to physical units with the policy's action
  space ``low + (a + 1) / 2 * (high - low)`` (APPLR's map; SB3 ``unscale_action``).

Differences from the original, on purpose: binds 127.0.0.1 by default; a bounded request body (413); decoding
errors answer 400 and wrong JSON types 422, after which the server keeps serving; concurrent requests are run through
the model as one batch (requests arriving within ``batch_delay`` seconds of each other, up to ``max_batch_size``);
``/reload`` really reloads the LoRA adapter (FTRL's key-name bug, §8.9), the heads, the history encoder, the
normalisation and the actor head, in place when the architecture is unchanged, otherwise by rebuilding the model,
and swaps them in only once all of them have loaded (a failed reload leaves the previous model serving).
A request's ``algorithm`` must name the planner the server serves (FTRL zipped any name with its one head).

History frames (checkpoints with a history encoder): ``history="client"`` (FTRL, default in ``"sft"`` mode) stacks
the request's ``history_images_base64`` as given (newest first, cut or padded with the last one to the encoder's
frame count; none given: the current frame repeated); ``history="current"`` (default in ``"actor"`` mode) always
repeats the current frame, which is what :class:`sb3_vlm.extractor.VLMDPTExtractor` feeds during TD3 training, and
``/config`` then reports ``num_history_frames = 0`` so clients send none.

FastAPI and uvicorn are the optional extra ``serve`` (``pip install "sb3-vlm[serve]"``) and are imported only when
an app is built.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
from PIL import Image, UnidentifiedImageError

from sb3_vlm._constants import ACTOR_HEAD_DIR, ADAPTER_WEIGHTS, TINY
from sb3_vlm.checkpoint import CheckpointError, FTRLCheckpoint, check_state, read_checkpoint
from sb3_vlm.policies import MODES, DirectoryOptions, ParamTableLike, VLMDirectoryPolicy, load_directory
from sb3_vlm.replay import resize_image

if TYPE_CHECKING:  # type only: FastAPI is an optional extra, imported lazily where the app is built
    from fastapi import FastAPI

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PORT",
    "ParamTableLike",
    "PolicyServer",
    "add_serve_arguments",
    "build_app",
    "run_serve",
    "serve",
]

logger = logging.getLogger(__name__)

ALGORITHMS = ("DWA", "TEB", "MPPI", "DDP")
"""Planner names of ``GET /algorithms`` (FTRL)."""
DEFAULT_PORT = 5000
"""FTRL's ``--port`` default."""
HISTORY_SOURCES = ("client", "current")
_RELOAD_ATTEMPTS = 3


class RequestError(Exception):
    """A client error: answered with ``status_code`` and ``message``; the server keeps serving."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _require_serving() -> tuple[Any, Any]:
    """Import FastAPI and uvicorn lazily, naming the extra that provides them."""
    try:
        import fastapi
        import uvicorn
    except ImportError as e:
        raise ImportError(
            "sb3_vlm.server needs FastAPI and uvicorn, which are the optional extra 'serve': "
            'pip install "sb3-vlm[serve]"'
        ) from e
    return fastapi, uvicorn


# ---------------------------------------------------------------------------------------------------------------- model


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


# ------------------------------------------------------------------------------------------------------- fast reload

_LORA_FIELDS = (
    "r",
    "lora_alpha",
    "target_modules",
    "bias",
    "use_rslora",
    "use_dora",
    "fan_in_fan_out",
    "modules_to_save",
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
    "exclude_modules",
)


def _lora_signature(config: Any) -> dict[str, Any]:
    """The LoRA config fields that decide the adapter's modules and scaling."""
    signature = {}
    for name in _LORA_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple, set, frozenset)):
            value = sorted(map(str, value))
        signature[name] = value
    return signature


class _ArchitectureChanged(Exception):
    """The new checkpoint does not fit the live modules: rebuild instead of loading in place."""


def _prepare_in_place(model: VLMDirectoryPolicy, ckpt: FTRLCheckpoint) -> Callable[[], None]:
    """
    Check that ``ckpt`` fits the live modules and read everything it needs; return the function that loads it.

    :raises _ArchitectureChanged: When only a rebuild can load ``ckpt``.
    """
    from peft import LoraConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    ext = model.extractor
    path = model.checkpoint
    peft_model = ext.backbone.model if isinstance(ext.backbone.model, PeftModel) else None
    adapter: dict[str, th.Tensor] | None = None
    if (ckpt.adapter_dir is not None) != (peft_model is not None):
        raise _ArchitectureChanged("adapter added or removed")
    if peft_model is not None:
        live = peft_model.peft_config["default"]
        if _lora_signature(LoraConfig.from_pretrained(path)) != _lora_signature(live):
            raise _ArchitectureChanged("LoRA configuration changed")
        adapter = {k: v for k, v in load_file(path / ADAPTER_WEIGHTS).items() if v.numel() > 0}
        expected = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
        try:
            check_state(expected, adapter, str(path / ADAPTER_WEIGHTS), "the live LoRA adapter")
        except CheckpointError as e:
            raise _ArchitectureChanged(str(e)) from e
    try:
        check_state(ext.dpt.state_dict(), ckpt.head_state, f"{path}/regression_head", "DPTHead")
        if (ckpt.history_state is None) != (ext.history is None):
            raise _ArchitectureChanged("history encoder added or removed")
        if ext.history is not None:
            assert ckpt.history_state is not None
            check_state(ext.history.state_dict(), ckpt.history_state, f"{path}/history_encoder", "HistoryEncoder")
        actor_state = None
        if model.policy is not None:
            if ACTOR_HEAD_DIR not in ckpt.extras:
                raise CheckpointError(f"{path}: no {ACTOR_HEAD_DIR}/ (mode='actor')")
            actor_state = ckpt.extras[ACTOR_HEAD_DIR]
            live_actor = {k: v for k, v in model.policy.actor.state_dict().items() if not k.startswith("features_")}
            check_state(live_actor, actor_state, f"{path}/{ACTOR_HEAD_DIR}", "the actor head")
    except CheckpointError as e:
        raise _ArchitectureChanged(str(e)) from e
    history_size = int(ckpt.history_config.get("history_image_size", 224))

    def apply() -> None:
        if peft_model is not None:
            result = set_peft_model_state_dict(peft_model, adapter)
            assert not result.unexpected_keys, result.unexpected_keys
        ext.dpt.load_state_dict(ckpt.head_state, strict=True)
        if ext.history is not None:
            ext.history.load_state_dict(ckpt.history_state, strict=True)
            ext.history_image_size = history_size
        ext.param_mean, ext.param_std = ckpt.param_mean, ckpt.param_std
        if actor_state is not None:
            assert model.policy is not None
            model.policy.actor.load_state_dict(actor_state, strict=False)

    return apply


# ------------------------------------------------------------------------------------------------------------ server


class PolicyServer:
    """
    The model behind the HTTP routes: request decoding, the batching worker and ``/reload``. Framework-free; see
    :func:`build_app` for the FastAPI app around it.

    :param checkpoint: Checkpoint directory in the FTRL layout (``"sft"``) or written by
        :meth:`VLMTD3Policy.save_pretrained` / :func:`sb3_vlm.handoff.publish_policy` (``"actor"``).
    :param mode: ``"sft"`` (supervised head, FTRL) or ``"actor"`` (TD3 actor).
    :param algorithm: Planner served (``DWA``, ``TEB``, ``MPPI``, ``DDP``); requests must name it.
    :param params: Planner parameter table (``names``, ``low``, ``high``), e.g. ``envs.planners.DWA_PARAMS``: output
        names, and in ``"actor"`` mode the physical ranges (else those recorded by ``publish_policy``).
    :param base_model: Base model (``"tiny"`` or a local directory) if the checkpoint does not name it.
    :param noise_std: ``"actor"`` mode: std of the Gaussian exploration noise added to the [-1, 1] action.
    :param history: ``"client"`` or ``"current"`` history frames (see the module docstring); None: ``"client"`` in
        ``"sft"`` mode, ``"current"`` in ``"actor"`` mode.
    :param use_velocity: Put the request's velocity into the prompt (tokenizer backbones); None: as recorded by
        ``publish_policy``, else True (FTRL).
    :param input_size: ``(height, width)`` incoming images are resized to (Pillow bilinear, as the replay loader);
        None: the observation size recorded by ``publish_policy`` in ``"actor"`` mode, else the image's own size.
    :param dtype: Backbone dtype, ``"float32"`` or ``"bfloat16"``.
    :param quantization: ``"nf4"``, ``"int8"`` or None.
    :param vlm_image_size: ``(height, width)`` the VLM resizes to (multiples of 28), if not recorded; None: the
        processor's rule.
    :param seed: Weight seed of the tiny backbone, if not recorded.
    :param max_batch_size: Most requests run through the model at once.
    :param batch_delay: Seconds the worker waits for more requests after the first one of a batch.
    :param max_image_pixels: Largest decoded image (width x height) accepted.
    :param image_roots: Directories ``image_path`` requests may read from (FTRL's fallback: a file on the server's
        machine); the real path (symlinks resolved) must lie inside one of them, else 403. Empty (default): every
        ``image_path`` is refused (403), so a client cannot read arbitrary files through the server.
    :param noise_seed: Seed of the exploration noise.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        mode: str = "sft",
        algorithm: str = "DWA",
        params: ParamTableLike | None = None,
        base_model: str | os.PathLike | None = None,
        noise_std: float = 0.0,
        history: str | None = None,
        use_velocity: bool | None = None,
        input_size: tuple[int, int] | None = None,
        dtype: str = "float32",
        quantization: str | None = None,
        vlm_image_size: tuple[int, int] | None = None,
        seed: int = 0,
        max_batch_size: int = 8,
        batch_delay: float = 0.005,
        max_image_pixels: int = 4096 * 4096,
        image_roots: Sequence[str | os.PathLike] = (),
        noise_seed: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"PolicyServer: mode must be one of {MODES}, got {mode!r}")
        history = history if history is not None else ("client" if mode == "sft" else "current")
        if history not in HISTORY_SOURCES:
            raise ValueError(f"PolicyServer: history must be one of {HISTORY_SOURCES} or None, got {history!r}")
        if max_batch_size < 1 or batch_delay < 0 or max_image_pixels < 1:
            raise ValueError(
                "PolicyServer: need max_batch_size >= 1, batch_delay >= 0 and max_image_pixels >= 1, got "
                f"{max_batch_size}, {batch_delay}, {max_image_pixels}"
            )
        _validate_noise(noise_std, mode)
        self.mode = mode
        self.algorithm = algorithm.upper()
        self.history_source = history
        self.noise_std = float(noise_std)
        self.max_batch_size = int(max_batch_size)
        self.batch_delay = float(batch_delay)
        self.max_image_pixels = int(max_image_pixels)
        self.image_roots = tuple(Path(os.path.realpath(root)) for root in image_roots)
        missing = [str(root) for root in self.image_roots if not root.is_dir()]
        if missing:
            raise ValueError(f"PolicyServer: image_roots must be existing directories, got {missing}")
        self.checkpoint = Path(checkpoint)
        self._options = DirectoryOptions(
            mode=mode,
            algorithm=self.algorithm,
            base_model=None if base_model is None else str(base_model),
            params=params,
            use_velocity=use_velocity,
            input_size=None if input_size is None else (int(input_size[0]), int(input_size[1])),
            dtype=dtype,
            quantization=quantization,
            vlm_image_size=vlm_image_size,
            seed=seed,
        )
        self._rng = np.random.default_rng(noise_seed)
        self._model_lock = threading.Lock()  # held while the model runs or is modified
        self._reload_lock = threading.Lock()  # one reload at a time
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._worker: threading.Thread | None = None
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
        """Load the checkpoint, retrying when the directory was replaced while it was being read."""
        for _ in range(_RELOAD_ATTEMPTS):
            before = _dir_identity(self.checkpoint)
            model = load_directory(self.checkpoint, self._options)
            if _dir_identity(self.checkpoint) == before:
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
            data = self._b64(body["image_base64"], "image_base64")
        elif body.get("image_path") is not None:
            data = self._read_path(body["image_path"])
        else:
            raise RequestError(400, "need image_base64 (base64 of an image file) or image_path, got neither")
        model = self.model
        image = self._decode_image(data, "image", model.input_size)
        history = None
        if self.history_source == "client" and model.history_frames > 0 and body.get("history_images_base64"):
            history = [
                self._decode_image(self._b64(s, f"history_images_base64[{i}]"), f"history_images_base64[{i}]", None)
                for i, s in enumerate(body["history_images_base64"][: model.history_frames])
            ]
        return _Item(image, (float(body.get("linear_vel", 0.0)), float(body.get("angular_vel", 0.0))), history)

    @staticmethod
    def _b64(text: str, what: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise RequestError(400, f"{what}: not valid base64 ({e})") from e

    def _read_path(self, path: str) -> bytes:
        if not self.image_roots:
            raise RequestError(
                403, "image_path is refused: this server has no image root (--image-root); send image_base64"
            )
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(root) for root in self.image_roots):
            raise RequestError(403, f"image_path {path!r} is outside the server's image roots")
        try:
            with open(real, "rb") as f:
                return f.read()
        except OSError as e:
            raise RequestError(400, f"image_path {path!r}: cannot be read ({e.strerror or e})") from e

    def _decode_image(self, data: bytes, what: str, size: tuple[int, int] | None) -> th.Tensor:
        """File bytes -> uint8 ``[3, H, W]`` (RGB; resized to ``size`` if given)."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > self.max_image_pixels:
                    raise RequestError(
                        400,
                        f"{what}: {image.width}x{image.height} pixels is more than max_image_pixels "
                        f"({self.max_image_pixels})",
                    )
                image.load()
                array = resize_image(image, size) if size is not None else np.asarray(image.convert("RGB"))
        except RequestError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise RequestError(400, f"{what}: not a decodable image ({type(e).__name__}: {e})") from e
        return th.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def submit(self, item: _Item) -> Future:
        """Queue a decoded request; the future resolves to a ``_Result``."""
        if self._worker is None or not self._worker.is_alive():
            raise RuntimeError("PolicyServer: the batch worker is not running (call start())")
        self._queue.put(item)
        return item.future

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
        }
        if result.action is not None:
            answer["action"] = [float(v) for v in result.action]
        return answer

    def start(self) -> None:
        """Start the batch worker thread (idempotent)."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._worker = threading.Thread(target=self._work, name="sb3-vlm-batcher", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the batch worker after the queued requests; requests queued later fail."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)
            self._worker = None
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(RuntimeError("the server is shutting down"))

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.batch_delay
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[_Item]) -> None:
        """Run the live items of ``batch``, grouped by image size; every future gets a result or an exception."""
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        groups: dict[tuple[int, ...], list[_Item]] = {}
        for item in live:
            groups.setdefault(tuple(item.image.shape), []).append(item)
        for items in groups.values():
            try:
                results = self._predict(items)
            except Exception as e:  # noqa: BLE001 - reported to each waiting request as a 500
                logger.exception("inference failed for a batch of %d", len(items))
                for item in items:
                    item.future.set_exception(e)
                continue
            for item, result in zip(items, results, strict=True):
                item.future.set_result(result)

    def _predict(self, items: list[_Item]) -> list[_Result]:
        images = th.stack([item.image for item in items])
        velocity = th.tensor([item.velocity for item in items], dtype=th.float32)
        with self._model_lock:
            model = self.model
            history = None
            if self.history_source == "client" and model.history_frames > 0:
                history = [item.history for item in items]
            parameters, action = model.infer(images, velocity, history)
            if action is not None:
                action = model.explore(action, self.noise_std, self._rng)
                parameters = model.to_physical(action)
        assert parameters is not None
        n = len(items)
        return [_Result(model.names, parameters[i], None if action is None else action[i], n) for i in range(n)]

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
                before = _dir_identity(self.checkpoint)
                ckpt = read_checkpoint(self.checkpoint)
                try:
                    apply = _prepare_in_place(self.model, ckpt)
                except _ArchitectureChanged as e:
                    logger.info("reload of %s rebuilds the model: %s", self.checkpoint, e)
                    kind, apply = "rebuild", None
                if _dir_identity(self.checkpoint) == before:
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


def _dir_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a directory: changes when an atomic writer swaps a new directory in."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def build_app(
    checkpoint: str | os.PathLike | None = None,
    *,
    server: PolicyServer | None = None,
    max_body_bytes: int = 8 * 1024 * 1024,
    **server_kwargs: Any,
) -> FastAPI:
    """
    The FastAPI app of the inference server. The model is loaded here (errors surface before any port is bound);
    the batch worker runs while the app does (its lifespan).

    :param checkpoint: Checkpoint directory (see :class:`PolicyServer`); or pass ``server``.
    :param server: An existing :class:`PolicyServer` instead of ``checkpoint`` + ``server_kwargs``.
    :param max_body_bytes: Largest request body accepted (413 above it).
    :param server_kwargs: :class:`PolicyServer` arguments (``mode``, ``algorithm``, ``params``, ``noise_std``, ...).
    :return: The app; its :class:`PolicyServer` is ``app.state.server``.
    """
    _require_serving()
    from sb3_vlm._http import create_app

    if (checkpoint is None) == (server is None):
        raise ValueError("build_app: pass exactly one of checkpoint and server")
    if server is not None and server_kwargs:
        raise ValueError(f"build_app: server_kwargs are for a new server, got {sorted(server_kwargs)} with server=")
    if max_body_bytes < 1:
        raise ValueError(f"build_app: max_body_bytes must be >= 1, got {max_body_bytes}")
    if server is None:
        server = PolicyServer(checkpoint, **server_kwargs)
    return create_app(server, max_body_bytes)


def serve(
    checkpoint: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    mode: str = "sft",
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
    :param mode: ``"sft"`` or ``"actor"``.
    :param max_body_bytes: Largest request body accepted.
    :param log_level: uvicorn log level.
    :param server_kwargs: Other :class:`PolicyServer` arguments.
    """
    _, uvicorn = _require_serving()
    app = build_app(checkpoint, mode=mode, max_body_bytes=max_body_bytes, **server_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


# ------------------------------------------------------------------------------------------------------------ CLI


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 56x84, got {text!r}")
    return int(parts[0]), int(parts[1])


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """
    Add the ``serve`` options to ``parser`` (FTRL's ``qwen_server.py`` names are accepted as aliases).

    :param parser: A parser or sub-command parser; run it with :func:`run_serve`.
    """
    parser.add_argument("--checkpoint", "--lora_path", required=True, help="checkpoint / policy directory")
    parser.add_argument("--mode", choices=MODES, default="sft", help="supervised head (FTRL) or TD3 actor")
    parser.add_argument("--base-model", "--base_model", default=None, help=f"'{TINY}' or a local Qwen2.5-VL dir")
    parser.add_argument("--algorithm", default="DWA", help="planner served (DWA, TEB, MPPI, DDP)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--noise-std", type=float, default=0.0, help="actor mode: exploration noise std in [-1, 1]")
    parser.add_argument("--history", choices=HISTORY_SOURCES, default=None, help="history frames: client | current")
    parser.add_argument("--input-size", type=_size, default=None, help="resize requests to HEIGHTxWIDTH")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--quantization", choices=("nf4", "int8"), default=None)
    parser.add_argument("--load_in_4bit", action="store_const", const="nf4", dest="quantization", help="= nf4")
    parser.add_argument("--seed", type=int, default=0, help="weight seed of the tiny backbone")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-delay-ms", type=float, default=5.0, help="wait for more requests of a batch")
    parser.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (MiB)")
    parser.add_argument(
        "--image-root",
        action="append",
        default=[],
        type=Path,
        help="directory image_path requests may read from (repeatable); none: image_path is refused (403)",
    )
    parser.add_argument("--log-level", default="info")


def run_serve(args: argparse.Namespace, param_tables: Mapping[str, ParamTableLike] | None = None) -> None:
    """
    Serve with the options of :func:`add_serve_arguments` (blocking).

    :param args: Parsed arguments.
    :param param_tables: Planner name -> parameter table (the CLI passes ``envs.planners.PARAM_TABLES``; sb3_vlm
        itself does not import ``envs``).
    """
    algorithm = args.algorithm.upper()
    params = None if param_tables is None else param_tables.get(algorithm)
    serve(
        args.checkpoint,
        host=args.host,
        port=args.port,
        mode=args.mode,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        log_level=args.log_level,
        algorithm=algorithm,
        params=params,
        base_model=args.base_model,
        noise_std=args.noise_std,
        history=args.history,
        input_size=args.input_size,
        dtype=args.dtype,
        quantization=args.quantization,
        seed=args.seed,
        max_batch_size=args.max_batch_size,
        batch_delay=args.batch_delay_ms / 1000.0,
        image_roots=args.image_root,
    )
