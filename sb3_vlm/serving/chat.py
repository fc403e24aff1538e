"""OpenAI-compatible chat completions backed by a local Qwen2.5-VL: the judge endpoint of ``sb3-vlm serve --judge``.

``POST /v1/chat/completions`` takes OpenAI's request (messages whose content is a string or a list of ``text`` and
``image_url`` parts; images as ``data:image/...;base64,`` URLs, nothing is downloaded) and answers with a
``chat.completion``; ``GET /v1/models`` lists the served model. The text goes through the model's tokenizer and chat
template (Qwen's ``<|im_start|>role ... <|im_end|>`` format when the tokenizer brings none), each image through the
Qwen2-VL patching of :func:`sb3_vlm.model.backbone.patchify`, and the answer is ``generate()``'s decoded output,
as with a real checkpoint. The default ``"tiny"`` model (random weights, offline) gets a byte-level tokenizer with
Qwen's special tokens: its answers are gibberish, the protocol is real. Needs the ``serve`` extra (FastAPI).
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from sb3_vlm._constants import QWEN_SPECIAL_TOKENS

__all__ = ["CHAT_TEMPLATE", "ChatModel", "ChatRequestError", "add_chat_routes", "build_chat_app", "tiny_chat_model"]

SPECIAL_TOKENS = list(QWEN_SPECIAL_TOKENS)

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Jinja chat template in Qwen2.5-VL's format, used when a tokenizer has none; an image part becomes
``<|vision_start|><|image_pad|><|vision_end|>`` (the pad is then repeated once per merged image patch)."""

MAX_NEW_TOKENS = 512
"""Upper bound of ``max_tokens`` / ``max_completion_tokens``."""


class ChatRequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def tiny_chat_model(seed: int = 0) -> tuple[Any, Any]:
    """The tiny random-weight Qwen2.5-VL with a byte-level tokenizer (256 bytes + :data:`SPECIAL_TOKENS`), offline.

    :param seed: Weight seed.
    :return: ``(model, tokenizer)``: the model in eval mode, its vocabulary and special token ids matching the
        tokenizer's.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLForConditionalGeneration

    from sb3_vlm.model.backbone import tiny_config

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = tiny_config()
    config.text_config.vocab_size = len(tokenizer) + 1
    config.text_config.pad_token_id = ids["<|endoftext|>"]
    config.text_config.eos_token_id = ids["<|im_end|>"]
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.eval(), tokenizer


def _decode_image(url: Any, where: str) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of a ``data:image/...;base64,`` URL."""
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        raise ChatRequestError(400, f"{where}: only data:image/...;base64, URLs are accepted (nothing is downloaded)")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise ChatRequestError(400, f"{where}: not a base64 image ({e})") from None


class ChatModel:
    """
    A Qwen2.5-VL that answers chat requests with images (:meth:`complete`). One request runs at a time.

    :param model: ``Qwen2_5_VLForConditionalGeneration`` (eval mode).
    :param tokenizer: Its tokenizer; :data:`CHAT_TEMPLATE` is set when it has no chat template.
    :param name: Model name listed by ``/v1/models`` and echoed in answers.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        if tokenizer.chat_template is None:
            tokenizer.chat_template = CHAT_TEMPLATE
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.created = int(time.time())
        self._lock = threading.Lock()

    @classmethod
    def from_source(cls, source: str = "tiny", name: str | None = None, seed: int = 0) -> ChatModel:
        """``"tiny"`` (:func:`tiny_chat_model`) or a local Qwen2.5-VL directory with a tokenizer.

        :raises ValueError: for a directory without a tokenizer.
        """
        if source == "tiny":
            model, tokenizer = tiny_chat_model(seed)
            return cls(model, tokenizer, name or "tiny")
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        path = Path(source)
        if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise ValueError(f"--judge needs a tokenizer next to the model, none in {path}")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
        return cls(model, AutoTokenizer.from_pretrained(path), name or path.name)

    def _messages(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """Template messages (image parts as ``{"type": "image"}``) and the images in order."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ChatRequestError(400, "messages must be a non-empty list")
        out, images = [], []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
                raise ChatRequestError(400, f"messages[{i}] must have role system, user or assistant")
            content = message.get("content")
            if isinstance(content, str):
                out.append({"role": message["role"], "content": content})
                continue
            if not isinstance(content, list):
                raise ChatRequestError(400, f"messages[{i}].content must be a string or a list of parts")
            parts = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                    images.append(_decode_image(part["image_url"].get("url"), f"messages[{i}].content[{j}]"))
                    parts.append({"type": "image"})
                else:
                    raise ChatRequestError(400, f"messages[{i}].content[{j}] must be a text or image_url part")
            out.append({"role": message["role"], "content": parts})
        return out, images

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one chat-completions request body with a ``chat.completion`` dict.

        :raises ChatRequestError: 400 for a malformed request or an option this server does not support.
        """
        limit, temperature = _options(body)
        messages, images = self._messages(body)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text, inputs = self._image_inputs(text, images)
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        input_ids = encoded["input_ids"]
        inputs["mm_token_type_ids"] = (input_ids == self.model.config.image_token_id).int()
        sampling = {"do_sample": True, "temperature": float(temperature)} if temperature > 0 else {"do_sample": False}
        with self._lock, th.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"],
                max_new_tokens=limit,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
                **inputs,
            )
        new = output[0, input_ids.shape[1] :]
        answer = self.tokenizer.decode(new, skip_special_tokens=True)
        finish = "stop" if len(new) < limit or int(new[-1]) == self.tokenizer.eos_token_id else "length"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": answer}}],
            "usage": {
                "prompt_tokens": int(input_ids.shape[1]),
                "completion_tokens": int(len(new)),
                "total_tokens": int(input_ids.shape[1] + len(new)),
            },
        }

    def _image_inputs(self, text: str, images: list[np.ndarray]) -> tuple[str, dict[str, Any]]:
        """The prompt with each image's ``<|image_pad|>`` repeated once per merged patch, and the images' pixel
        values and grids (none without images)."""
        from sb3_vlm.model.backbone import patchify

        if not images:
            return text, {}
        vision = self.model.config.vision_config
        patches = [
            patchify(
                th.from_numpy(image.copy()).permute(2, 0, 1)[None],
                patch_size=vision.patch_size,
                merge_size=vision.spatial_merge_size,
                temporal_patch_size=vision.temporal_patch_size,
            )
            for image in images
        ]
        pad = "<|image_pad|>"
        pieces = text.split(pad)
        counts = [int(grid[0].prod()) // vision.spatial_merge_size**2 for _, grid in patches]
        text = pieces[0] + "".join(pad * n + rest for n, rest in zip(counts, pieces[1:], strict=True))
        pixels = th.cat([p for p, _ in patches]).to(self.model.dtype)
        return text, {"pixel_values": pixels, "image_grid_thw": th.cat([g for _, g in patches])}

    def models(self) -> dict[str, Any]:
        """The ``/v1/models`` answer."""
        entry = {"id": self.name, "object": "model", "created": self.created, "owned_by": "sb3-vlm"}
        return {"object": "list", "data": [entry]}


def _options(body: Any) -> tuple[int, float]:
    """The answer length limit and the temperature of a request body (400 for what this server does not do)."""
    if not isinstance(body, dict):
        raise ChatRequestError(400, "the request body must be a JSON object")
    if body.get("stream"):
        raise ChatRequestError(400, "stream is not supported")
    if body.get("n", 1) != 1:
        raise ChatRequestError(400, f"n must be 1, got {body.get('n')!r}")
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 64
    temperature = body.get("temperature", 1.0)
    if not (isinstance(limit, int) and 0 < limit <= MAX_NEW_TOKENS):
        raise ChatRequestError(400, f"max_tokens must be an int in 1..{MAX_NEW_TOKENS}, got {limit!r}")
    if not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
        raise ChatRequestError(400, f"temperature must be in [0, 2], got {temperature!r}")
    return limit, temperature


def add_chat_routes(app: FastAPI, chat: ChatModel) -> None:
    """Add ``POST /v1/chat/completions`` and ``GET /v1/models`` for ``chat`` to a FastAPI ``app``; errors answer
    OpenAI's ``{"error": {"message", "type", "code"}}``."""

    def error(status: int, message: str) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return chat.models()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON")
        try:
            return await run_in_threadpool(chat.complete, body)
        except ChatRequestError as e:
            return error(e.status, e.message)


def build_chat_app(chat: ChatModel) -> FastAPI:
    """A FastAPI app with only the chat routes and ``GET /health`` (``{"status": "ok"}``)."""
    app = FastAPI(title="sb3-vlm judge (OpenAI-compatible chat completions)")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "model": chat.name}

    add_chat_routes(app, chat)
    return app
