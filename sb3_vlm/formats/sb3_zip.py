"""SB3 ``.zip`` models: which algorithm class a zip needs, and loading it the way SB3 expects."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["is_vlm_zip", "load_algorithm"]


def is_vlm_zip(path: str | os.PathLike) -> bool:
    """Whether the zip's policy class is defined in ``sb3_vlm`` (a VLM policy: load it with ``VLMTD3``).

    Reads the ``__module__`` SB3 records for the saved ``policy_class`` in the zip's JSON ``data``; nothing is
    unpickled.

    :raises ValueError: for a file that is not an SB3 zip.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not an SB3 model zip (no JSON 'data' entry): {e}") from e
    policy_class = data.get("policy_class")
    module = policy_class.get("__module__", "") if isinstance(policy_class, dict) else ""
    return module.split(".")[0] == "sb3_vlm"


def load_algorithm(path: str | os.PathLike, device: str = "cpu", **kwargs: Any) -> Any:
    """
    Load an SB3 zip as ``VLMTD3`` (VLM policy) or ``TD3``.

    ``n_steps`` is loaded as 1: SB3 (>= 2.7) turns ``n_steps > 1`` into ``replay_buffer_class=NStepReplayBuffer``
    with ``replay_buffer_kwargs={"n_steps": ..., "gamma": ...}`` when the model is built and saves all three, and on
    load it would warn that ``n_steps`` is ignored next to the custom buffer class. The saved buffer kwargs keep the
    n-step returns.

    :param path: The ``.zip`` file.
    :param device: Torch device.
    :param kwargs: Other ``load`` arguments (``env``, ``tensorboard_log``, ...).
    """
    from stable_baselines3 import TD3

    from sb3_vlm.td3.td3 import VLMTD3

    algo = VLMTD3 if is_vlm_zip(path) else TD3
    custom_objects = {"n_steps": 1, **kwargs.pop("custom_objects", {})}
    return algo.load(Path(path), device=device, custom_objects=custom_objects, **kwargs)
