"""RewardNet: predicts a control window's outcome from what is known when it starts, with no simulator.

Inputs: the frozen VLM's pooled feature of the scene image ``[B, 256]``, the chosen prompt (index into the network's
prompts), and the planner parameters the frozen policy answered for it, in ``[-1, 1]`` units ``[B, P]``. Outputs:
the window's BarnNav return (reward units) and the probability that the episode ends in success. Trained from
logged windows (:mod:`sb3_vlm.rewards.reward_training`); the prompt-selection env's ``reward="learned"`` is its
return prediction. Saved as ``model.safetensors`` + ``config.json`` (``save_pretrained`` / ``from_pretrained``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from safetensors.torch import load_file, save_file
from torch import nn

from sb3_vlm._constants import FEATURE_DIM, SAFETENSORS_WEIGHTS
from sb3_vlm._validation import check_int

__all__ = ["CONFIG_NAME", "RewardNet", "RewardNetConfig"]

CONFIG_NAME = "config.json"


@dataclass
class RewardNetConfig:
    """
    Architecture and input/output scaling of a :class:`RewardNet`.

    :param prompts: The prompt texts, in index order.
    :param param_names: The planner parameters, in order.
    :param feature_dim: Size of the image feature.
    :param hidden: Widths of the hidden layers (ReLU).
    :param return_mean: Mean of the training windows' returns (the output is de-normalised with it).
    :param return_std: Their standard deviation.
    """

    prompts: tuple[str, ...] = field(metadata={"help": "prompt texts, in index order"})
    param_names: tuple[str, ...] = field(metadata={"help": "planner parameter names"})
    feature_dim: int = field(default=FEATURE_DIM, metadata={"help": "image feature size"})
    hidden: tuple[int, ...] = field(default=(256, 128), metadata={"help": "hidden layer widths"})
    return_mean: float = field(default=0.0, metadata={"help": "training return mean (reward units)"})
    return_std: float = field(default=1.0, metadata={"help": "training return std (reward units)"})

    def __post_init__(self) -> None:
        self.prompts = tuple(str(p) for p in self.prompts)
        self.param_names = tuple(str(p) for p in self.param_names)
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.prompts or not self.param_names:
            raise ValueError(f"RewardNetConfig: needs prompts and param_names, got {self.prompts}, {self.param_names}")
        check_int(self.feature_dim, "feature_dim", owner="RewardNetConfig")
        for i, width in enumerate(self.hidden):
            check_int(width, f"hidden[{i}]", owner="RewardNetConfig")
        if not (np.isfinite(self.return_std) and self.return_std > 0):
            raise ValueError(f"RewardNetConfig: return_std must be > 0, got {self.return_std}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "RewardNetConfig") -> RewardNetConfig:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"{where}: unknown keys {sorted(set(data) - known)}, expected some of {sorted(known)}")
        return cls(**data)


class RewardNet(nn.Module):
    """
    MLP ``[feature (standardised), one-hot prompt, params] -> [normalised window return, success logit]``.

    :param config: Sizes and scaling.
    """

    def __init__(self, config: RewardNetConfig):
        super().__init__()
        self.config = config
        in_dim = config.feature_dim + len(config.prompts) + len(config.param_names)
        layers: list[nn.Module] = []
        for width in config.hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(in_dim, 2)
        # Feature standardisation, fitted on the training windows (saved with the weights).
        self.register_buffer("feature_mean", th.zeros(config.feature_dim))
        self.register_buffer("feature_std", th.ones(config.feature_dim))

    @property
    def num_prompts(self) -> int:
        return len(self.config.prompts)

    def forward(self, features: th.Tensor, prompts: th.Tensor, params: th.Tensor) -> th.Tensor:
        """
        :param features: ``[B, F]`` image features.
        :param prompts: ``[B]`` long prompt indices.
        :param params: ``[B, P]`` parameters in ``[-1, 1]`` units.
        :return: ``[B, 2]``: normalised return, success logit.
        """
        if features.shape[-1] != self.config.feature_dim or params.shape[-1] != len(self.config.param_names):
            raise ValueError(
                f"RewardNet: expected features [B, {self.config.feature_dim}] and params "
                f"[B, {len(self.config.param_names)}], got {tuple(features.shape)} and {tuple(params.shape)}"
            )
        if prompts.numel() and (int(prompts.min()) < 0 or int(prompts.max()) >= self.num_prompts):
            raise ValueError(f"RewardNet: prompt indices must be in [0, {self.num_prompts}), got {prompts.tolist()}")
        one_hot = nn.functional.one_hot(prompts.long(), self.num_prompts).float()
        x = th.cat([(features - self.feature_mean) / self.feature_std, one_hot, params.float()], dim=-1)
        return self.head(self.body(x))

    @th.no_grad()
    def predict(self, features: Any, prompts: Any, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """
        Numpy in, numpy out (see :meth:`forward` for shapes).

        :return: Window return ``[B]`` (reward units) and success probability ``[B]``.
        """
        out = self(
            th.as_tensor(np.asarray(features), dtype=th.float32),
            th.as_tensor(np.asarray(prompts)),
            th.as_tensor(np.asarray(params), dtype=th.float32),
        )
        ret = out[:, 0].double() * self.config.return_std + self.config.return_mean
        return ret.numpy(), th.sigmoid(out[:, 1]).double().numpy()

    def score(self, features: Any, prompts: Any, params: Any) -> np.ndarray:
        """The learned reward: predicted window return ``[B]`` (reward units)."""
        return self.predict(features, prompts, params)[0]

    def save_pretrained(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
        """
        Write ``model.safetensors`` and ``config.json`` (the config, plus ``metadata`` under ``"metadata"``).

        :return: The directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / SAFETENSORS_WEIGHTS)
        payload = {**self.config.to_dict(), **({"metadata": metadata} if metadata else {})}
        (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> RewardNet:
        """Load what :meth:`save_pretrained` wrote; the network is in eval mode."""
        directory = Path(directory)
        config_file, weights_file = directory / CONFIG_NAME, directory / SAFETENSORS_WEIGHTS
        for f in (config_file, weights_file):
            if not f.is_file():
                raise FileNotFoundError(f"RewardNet: {f} not found (a directory written by RewardNet.save_pretrained)")
        data = json.loads(config_file.read_text())
        data.pop("metadata", None)
        net = cls(RewardNetConfig.from_dict(data, where=str(config_file)))
        state = load_file(weights_file)
        missing, unexpected = set(net.state_dict()) - set(state), set(state) - set(net.state_dict())
        if missing or unexpected:
            raise ValueError(f"{weights_file}: missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}")
        net.load_state_dict(state)
        return net.eval()

    @staticmethod
    def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
        """The ``metadata`` saved with a network (training data and metrics), or ``{}``."""
        return json.loads((Path(directory) / CONFIG_NAME).read_text()).get("metadata", {})
