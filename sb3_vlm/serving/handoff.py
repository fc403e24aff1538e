"""Learner-side hand-off: write the policy atomically where the inference servers read it, then make them reload it
(docs/guide/ftrl_workflow.md "Hand-off from the learner")."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vlm._constants import POLICY_METADATA_KEY, SB3_VLM_CONFIG
from sb3_vlm.formats.checkpoint import atomic_directory
from sb3_vlm.formats.ftrl_files import write_exploration_noise
from sb3_vlm.td3.policies import VLMTD3Policy

__all__ = ["PublishResult", "policy_metadata", "publish_policy", "reload_servers"]

logger = logging.getLogger(__name__)


@dataclass
class PublishResult:
    """
    Outcome of :func:`publish_policy`.

    :param path: The policy directory.
    :param reloaded: URL -> the server's ``/reload`` answer, for the servers that reloaded.
    :param failed: URL -> error message, for the servers that did not.
    """

    path: Path
    reloaded: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every server reloaded."""
        return not self.failed


def policy_metadata(policy: VLMTD3Policy, parameter_names: Sequence[str] | None = None) -> dict[str, Any]:
    """
    What a server needs to rebuild ``policy`` from its directory (JSON-serialisable).

    :param policy: The policy.
    :param parameter_names: Name of each action dimension (e.g. ``DWA_PARAMS.names``), or None.
    :return: ``observation_space`` (``image_shape`` ``[3, H, W]``, ``velocity``), ``action_space`` (``low``,
        ``high``, physical units), ``parameter_names`` (if given), ``policy_kwargs`` (head architecture + ``vlm``).
    """
    obs_space = policy.observation_space
    image_space = obs_space["image"] if isinstance(obs_space, spaces.Dict) else obs_space
    action_space = policy.action_space
    if not isinstance(action_space, spaces.Box):
        raise TypeError(f"policy_metadata needs a Box action space, got {action_space}")
    if parameter_names is not None and len(parameter_names) != action_space.shape[0]:
        raise ValueError(
            f"parameter_names must name the {action_space.shape[0]} action dimensions, got {len(parameter_names)}"
        )
    policy_kwargs: dict[str, Any] = {
        "net_arch": {k: [int(n) for n in v] for k, v in policy.net_arch.items()},
        "activation_fn": policy.activation_fn.__name__,
        "n_critics": int(policy.critic_kwargs["n_critics"]),
        "vlm": policy.vlm_config.to_dict(),
    }
    metadata: dict[str, Any] = {
        "observation_space": {
            "image_shape": [int(s) for s in image_space.shape],
            "velocity": isinstance(obs_space, spaces.Dict) and "velocity" in obs_space.spaces,
        },
        "action_space": {
            "low": np.asarray(action_space.low, dtype=np.float64).tolist(),
            "high": np.asarray(action_space.high, dtype=np.float64).tolist(),
        },
        "policy_kwargs": policy_kwargs,
    }
    if parameter_names is not None:
        metadata["parameter_names"] = [str(n) for n in parameter_names]
    return metadata


def publish_policy(
    policy: VLMTD3Policy,
    directory: str | os.PathLike,
    servers: Sequence[str] = (),
    *,
    parameter_names: Sequence[str] | None = None,
    noise_std: float | None = None,
    timeout: float = 300.0,
) -> PublishResult:
    """
    Write ``policy`` to ``directory`` atomically, then POST ``/reload`` to each server.

    :param policy: The policy (its trainable parts are written: adapter, DPT head, history encoder,
        normalisation, actor and critic heads).
    :param directory: Policy directory the servers serve (replaced as a whole).
    :param servers: Server base URLs, e.g. ``["http://127.0.0.1:7000"]``.
    :param parameter_names: Name of each action dimension, recorded for the servers' ``parameters`` answer.
    :param noise_std: New exploration noise std for the servers (actor mode), also written as the folder's
        ``exploration_noise.pkl`` (FTRL's collectors read it there); None leaves the servers' own.
    :param timeout: Seconds to wait for each server's answer (a reload that rebuilds a real model takes a while).
    :return: The directory and which servers reloaded.
    """
    target = Path(directory)
    metadata = policy_metadata(policy, parameter_names)
    with atomic_directory(target) as staging:
        # save_pretrained writes atomically too: into <staging>/policy, from where its files move up unchanged.
        written = policy.save_pretrained(staging / "policy")
        for entry in written.iterdir():
            entry.rename(staging / entry.name)
        written.rmdir()
        config_file = staging / SB3_VLM_CONFIG
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        config[POLICY_METADATA_KEY] = metadata
        config_file.write_text(json.dumps(config, indent=2))
        if noise_std is not None:
            write_exploration_noise(staging, noise_std)
    result = PublishResult(path=target)
    if servers:
        result.reloaded, result.failed = reload_servers(servers, noise_std=noise_std, timeout=timeout)
    return result


def reload_servers(
    servers: Sequence[str], noise_std: float | None = None, timeout: float = 300.0
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """
    POST ``/reload`` to every server in parallel.

    :param servers: Server base URLs.
    :param noise_std: New exploration noise std (sent as ``{"noise_std": ...}``), or None (empty body, as FTRL).
    :param timeout: Seconds to wait for each answer.
    :return: URL -> answer for the servers that reloaded, and URL -> error message for the others.
    """
    body = b"" if noise_std is None else json.dumps({"noise_std": float(noise_std)}).encode()
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(servers)))) as pool:
        answers = list(pool.map(lambda url: _post_reload(url, body, timeout), servers))
    reloaded: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for url, (answer, error) in zip(servers, answers, strict=True):
        if error is None and answer is not None:
            reloaded[url] = answer
        else:
            failed[url] = error or "no answer"
            logger.warning("reload of %s failed: %s", url, failed[url])
    return reloaded, failed


def _post_reload(url: str, body: bytes, timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    endpoint = url.rstrip("/") + "/reload"
    request = urllib.request.Request(endpoint, data=body, method="POST")
    if body:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}: {e.read()[:300].decode('utf-8', 'replace')}"
    except (urllib.error.URLError, OSError) as e:
        return None, f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    except ValueError as e:
        return None, f"answer is not JSON: {e}"
    if not isinstance(answer, dict) or not answer.get("success"):
        return None, f"unexpected answer: {answer!r}"
    return answer, None
