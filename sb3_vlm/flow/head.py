"""Flow-matching action expert: a conditional rectified flow over planner-parameter vectors (SmolVLA's action head,
on our 256-d VLM+DPT feature).

Convention of the rectified-flow paper (Liu et al. 2022, Alg. 1): noise ``x0 ~ N(0, I)`` at ``t = 0``, data ``x1`` at
``t = 1``, straight interpolation ``x_t = t x1 + (1 - t) x0`` and target velocity ``x1 - x0``; sampling integrates
``dx/dt = v(x_t, t | feature)`` from 0 to 1 with ``num_steps`` Euler steps. Actions are whatever vector the caller
trains on (the policy's normalised parameters, optionally a chunk of the next ``chunk`` steps' parameters, flattened);
an MSE head predicts the mean of several good vectors, this head samples one of them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch as th
from safetensors.torch import load_file, save_file
from torch import nn

from sb3_vlm._validation import check_int

CONFIG_NAME = "flow_head_config.json"
WEIGHTS_NAME = "flow_head.safetensors"
T_MIN = 1e-3
"""Training times are drawn from ``U[T_MIN, 1]`` (the reference code's choice)."""


@dataclass
class FlowHeadConfig:
    """Shape and sampler of a :class:`FlowMatchingHead` (saved as JSON beside its weights).

    :param action_dim: Parameters per step (P).
    :param chunk: Steps of parameters predicted together (the action vector has ``chunk * action_dim`` entries).
    :param feature_dim: Size of the conditioning feature (the extractor's 256).
    :param hidden: Width of the velocity network.
    :param time_dim: Size of the sinusoidal time embedding.
    :param num_steps: Euler steps of the default sampler.
    :param noise_seed: Seed of the fixed noise that makes :meth:`FlowMatchingHead.act` deterministic.
    """

    action_dim: int
    chunk: int = 1
    feature_dim: int = 256
    hidden: int = 256
    time_dim: int = 64
    num_steps: int = 10
    noise_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("action_dim", "chunk", "feature_dim", "hidden", "time_dim", "num_steps"):
            check_int(getattr(self, name), name, owner="FlowHeadConfig")
        if self.time_dim % 2:
            raise ValueError(f"FlowHeadConfig.time_dim must be even (sin and cos halves), got {self.time_dim}")

    @property
    def dim(self) -> int:
        """Entries of one action vector (``chunk * action_dim``)."""
        return self.chunk * self.action_dim


def time_embedding(t: th.Tensor, dim: int) -> th.Tensor:
    """Sinusoidal embedding ``[B, dim]`` of times ``t [B]`` in [0, 1] (frequencies 1 .. 1000, as transformers')."""
    half = dim // 2
    freqs = th.exp(-math.log(1000.0) * th.arange(half, device=t.device, dtype=t.dtype) / max(half - 1, 1))
    angles = t[:, None] * freqs[None, :] * 2 * math.pi
    return th.cat([th.sin(angles), th.cos(angles)], dim=1)


class FlowMatchingHead(nn.Module):
    """Velocity network ``v(x_t, t | feature)`` with a rectified-flow loss and an Euler sampler.

    :param config: Its :class:`FlowHeadConfig` (or pass its fields as keywords).
    """

    def __init__(self, config: FlowHeadConfig | None = None, **fields: int) -> None:
        super().__init__()
        self.config = config if config is not None else FlowHeadConfig(**fields)
        c = self.config
        self.net = nn.Sequential(
            nn.Linear(c.dim + c.time_dim + c.feature_dim, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, c.hidden),
            nn.SiLU(),
            nn.Linear(c.hidden, c.dim),
        )
        generator = th.Generator().manual_seed(c.noise_seed)
        self.register_buffer("fixed_noise", th.randn(c.dim, generator=generator), persistent=False)

    def velocity(self, x: th.Tensor, t: th.Tensor, features: th.Tensor) -> th.Tensor:
        """Velocity ``[B, D]`` at points ``x [B, D]``, times ``t [B]`` (or a scalar), features ``[B, F]``."""
        t = th.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.net(th.cat([x, time_embedding(t, self.config.time_dim), features], dim=1))

    def loss(
        self, actions: th.Tensor, features: th.Tensor, noise: th.Tensor | None = None, t: th.Tensor | None = None
    ) -> th.Tensor:
        """Rectified-flow loss ``E |(x1 - x0) - v(t x1 + (1 - t) x0, t)|^2`` for targets ``actions [B, D]``.

        :param noise: The coupled starting points ``x0 [B, D]`` (reflow passes the teacher's); fresh noise if None.
        :param t: Times ``[B]``; ``U[T_MIN, 1]`` if None.
        """
        noise = th.randn_like(actions) if noise is None else noise
        if t is None:
            t = T_MIN + (1 - T_MIN) * th.rand(actions.shape[0], device=actions.device, dtype=actions.dtype)
        x_t = t[:, None] * actions + (1 - t[:, None]) * noise
        return (actions - noise - self.velocity(x_t, t, features)).pow(2).sum(dim=1).mean()

    @th.no_grad()
    def sample(self, features: th.Tensor, noise: th.Tensor | None = None, num_steps: int | None = None) -> th.Tensor:
        """Actions ``[B, D]``: Euler integration of the flow from ``noise [B, D]`` (fresh if None) over
        ``num_steps`` (default: the config's) equal steps."""
        steps = num_steps or self.config.num_steps
        x = th.randn(features.shape[0], self.config.dim, device=features.device) if noise is None else noise.clone()
        for k in range(steps):
            x = x + self.velocity(x, th.tensor(k / steps, device=x.device), features) / steps
        return x

    def act(self, features: th.Tensor, num_steps: int | None = None) -> th.Tensor:
        """Deterministic actions ``[B, D]``: the flow from the head's fixed noise (for evaluation and TD3)."""
        return self.sample(features, self.fixed_noise.expand(features.shape[0], -1), num_steps)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``flow_head_config.json`` and ``flow_head.safetensors`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME))
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> FlowMatchingHead:
        """The head saved in directory ``path`` by :meth:`save_pretrained`."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path}: no {CONFIG_NAME} (not a flow head saved by save_pretrained)")
        config = json.loads((path / CONFIG_NAME).read_text())
        try:
            head = cls(FlowHeadConfig(**config))
        except TypeError as err:
            raise ValueError(f"{path / CONFIG_NAME}: unexpected fields ({err})") from err
        head.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
        return head
