"""DPT regression head and history encoder, state-dict compatible with FTRL checkpoints.

Module names, layer order and shapes follow FTRL's ``qwen2_5_vl_dpt_regression.py`` (docs/compat/ftrl.md §1.1, §1.4), so
``regression_head/pytorch_model.bin`` and ``history_encoder/pytorch_model.bin`` load with ``strict=True``.
One deliberate extension: an optional ``attention_mask`` makes the head ignore right padding (FTRL pools over every
position); without a mask the computation is FTRL's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch as th
import torch.nn.functional as F
from torch import nn

from sb3_vlm._constants import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD
from sb3_vlm._validation import check_int

__all__ = ["DPTHead", "FeatureRefinementBlock", "HistoryEncoder", "history_transform"]


class FeatureRefinementBlock(nn.Module):
    """
    Residual 1-D convolution block of the DPT top-down fusion (FTRL ``FeatureRefinementBlock(use_bn=False)``).

    :param features: Channels ``F``.
    """

    def __init__(self, features: int):
        super().__init__()
        self.resample = nn.Conv1d(features, features, kernel_size=1, bias=False)
        self.conv1 = nn.Conv1d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(features, features, kernel_size=3, padding=1)

    def forward(self, x: th.Tensor, skip: th.Tensor | None = None, mask: th.Tensor | None = None) -> th.Tensor:
        """
        :param x: ``[B, F, L]`` coarser (deeper) features; zero at padded positions when ``mask`` is given.
        :param skip: ``[B, F, L]`` lateral features of the next shallower layer, or None.
        :param mask: ``[B, 1, L]`` float, 1 for real tokens, 0 for padding, or None (no padding).
        :return: ``[B, F, L]``; the residual is the pre-skip ``x`` (as in FTRL).
        """
        tokens = self.forward_tokens(
            x.transpose(1, 2),
            None if skip is None else skip.transpose(1, 2),
            None if mask is None else mask.transpose(1, 2),
        )
        return tokens.transpose(1, 2)

    def forward_tokens(self, x: th.Tensor, skip: th.Tensor | None = None, mask: th.Tensor | None = None) -> th.Tensor:
        """
        :meth:`forward` in the token-major layout of :class:`DPTHead` (no transposes), each convolution one matrix
        product over the stacked neighbours of every token: the same weights and result to float rounding; as fast
        as ``conv1d`` in fp32 on a CPU and ~1.5x faster under bf16 autocast.

        :param x: ``[B, L, F]``; zero at padded positions when ``mask`` is given.
        :param skip: ``[B, L, F]`` or None.
        :param mask: ``[B, L, 1]`` float (1 real, 0 padding) or None.
        :return: ``[B, L, F]``.
        """
        residual = x
        if skip is not None:
            x = x + F.linear(skip, self.resample.weight.squeeze(-1))
        y = F.relu(_conv3_tokens(self.conv1, x))
        if mask is not None:
            # Padding must look like the convolution's zero padding to its real neighbours.
            y = y * mask
        y = _conv3_tokens(self.conv2, y)
        if mask is not None:
            y = y * mask
        return F.relu(y + residual)


def _conv3_tokens(conv: nn.Conv1d, x: th.Tensor) -> th.Tensor:
    """``conv(x.transpose(1, 2)).transpose(1, 2)`` for a kernel-3, padding-1 ``conv``, as one matrix product.

    :param x: ``[B, L, F_in]``.
    :return: ``[B, L, F_out]``.
    """
    # [B, L + 2, F] -> windows [B, L, F, 3]: entry (i, k) is channel i of token l + k - 1, the order of the weight
    # [F_out, F_in, 3] flattened, so the weight is used as a view.
    windows = F.pad(x, (0, 0, 1, 1)).unfold(1, 3, 1)
    return F.linear(windows.flatten(2), conv.weight.flatten(1), conv.bias)


class DPTHead(nn.Module):
    """
    DPT-style head over the last ``num_layers`` hidden states of a language model (FTRL ``DPTHead``).

    Steps: project each layer to ``feature_dim`` (Linear + LayerNorm), fuse top-down with 1-D convolutions over the
    token sequence, attention-pool over the sequence to ``[B, feature_dim]``, optionally fuse a history feature, and
    regress ``num_params`` normalised planner parameters with an MLP.

    :param hidden_size: Hidden size ``H`` of the language model (2048 for Qwen2.5-VL-3B).
    :param num_params: Number of regressed parameters ``P``.
    :param feature_dim: Pooled feature size ``F`` (256 in every FTRL checkpoint).
    :param num_layers: Number of tapped hidden states (4 in FTRL).
    :param dropout: Dropout of the history fusion and the MLP.
    :param use_history: Whether the head has a ``history_fusion`` block.
    :param history_dim: Size of the history feature.
    """

    def __init__(
        self,
        hidden_size: int,
        num_params: int,
        feature_dim: int = FEATURE_DIM,
        num_layers: int = 4,
        dropout: float = 0.1,
        use_history: bool = False,
        history_dim: int = 256,
    ):
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("num_params", num_params), ("feature_dim", feature_dim)):
            check_int(value, name, owner="DPTHead")
        check_int(num_layers, "num_layers", 2, owner="DPTHead")
        self.hidden_size = hidden_size
        self.num_params = num_params
        self.feature_dim = feature_dim
        self.num_layers = num_layers
        self.use_history = use_history
        self.history_dim = history_dim

        f = feature_dim
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden_size, f), nn.LayerNorm(f)) for _ in range(num_layers)
        )
        self.fusion_blocks = nn.ModuleList(FeatureRefinementBlock(f) for _ in range(num_layers - 1))
        self.spatial_attention = nn.Sequential(nn.Linear(f, f // 4), nn.ReLU(), nn.Linear(f // 4, 1), nn.Softmax(dim=1))
        if use_history:
            self.history_fusion = nn.Sequential(
                nn.Linear(f + history_dim, f), nn.LayerNorm(f), nn.GELU(), nn.Dropout(dropout)
            )
        self.mlp = nn.Sequential(
            nn.Linear(f, 512),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(512, 256),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(256, num_params),
        )
        self.apply(_init_weights)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, th.Tensor], dropout: float = 0.1) -> DPTHead:
        """
        Build a head whose sizes match ``state_dict`` (``H`` from ``projections.0.0.weight``, ``P`` from
        ``mlp.6.weight``, history from ``history_fusion.0.weight``) and load it strictly.

        :param state_dict: An FTRL ``regression_head`` state dict (any dtype; loaded into float32).
        :param dropout: Dropout of the new module.
        :return: The loaded head.
        """
        for key in ("projections.0.0.weight", "mlp.6.weight"):
            if key not in state_dict:
                raise KeyError(f"DPTHead.from_state_dict: key {key!r} missing; got keys {sorted(state_dict)[:6]}...")
        feature_dim, hidden_size = state_dict["projections.0.0.weight"].shape
        num_layers = len({k.split(".")[1] for k in state_dict if k.startswith("projections.")})
        fusion = state_dict.get("history_fusion.0.weight")
        head = cls(
            hidden_size=hidden_size,
            num_params=state_dict["mlp.6.weight"].shape[0],
            feature_dim=feature_dim,
            num_layers=num_layers,
            dropout=dropout,
            use_history=fusion is not None,
            history_dim=fusion.shape[1] - feature_dim if fusion is not None else 256,
        )
        head.load_state_dict(state_dict, strict=True)
        return head

    def _fused(self, hidden_states: Sequence[th.Tensor], attention_mask: th.Tensor | None) -> th.Tensor:
        """Steps 1–2: projections and top-down fusion, ``[B, L, F]`` (zero at padded positions)."""
        if len(hidden_states) != self.num_layers:
            raise ValueError(f"DPTHead expects {self.num_layers} hidden states (low -> high), got {len(hidden_states)}")
        mask = None if attention_mask is None else attention_mask[:, :, None].to(hidden_states[0].dtype)
        projected = []
        for proj, h in zip(self.projections, hidden_states, strict=True):
            p = proj(h)  # [B, L, F]; the fusion convolutions slide over the token sequence
            projected.append(p if mask is None else p * mask)
        fused = projected[-1]
        for i in reversed(range(self.num_layers - 1)):
            fused = self.fusion_blocks[i].forward_tokens(fused, projected[i], mask)
        return fused

    def _attention(self, fused: th.Tensor, attention_mask: th.Tensor | None) -> th.Tensor:
        """Step 3 weights: ``[B, L, 1]``, softmax over the sequence (over real tokens only when masked)."""
        if attention_mask is None:
            return self.spatial_attention(fused)
        scores = self.spatial_attention[:-1](fused)
        scores = scores.masked_fill(~attention_mask.bool()[..., None], float("-inf"))
        return scores.softmax(dim=1)

    def attention_weights(
        self, hidden_states: Sequence[th.Tensor], attention_mask: th.Tensor | None = None
    ) -> th.Tensor:
        """
        Attention-pooling weights, for visualisation.

        :param hidden_states: ``num_layers`` tensors ``[B, L, H]``, low -> high.
        :param attention_mask: ``[B, L]`` (1 real, 0 padding) or None.
        :return: ``[B, L]``, each row sums to 1.
        """
        return self._attention(self._fused(hidden_states, attention_mask), attention_mask).squeeze(-1)

    def pool(
        self,
        hidden_states: Sequence[th.Tensor],
        history_feat: th.Tensor | None = None,
        attention_mask: th.Tensor | None = None,
    ) -> th.Tensor:
        """
        Steps 1–4: the pooled feature used by RL.

        :param hidden_states: ``num_layers`` tensors ``[B, L, H]``, low -> high (``hidden_states[-4:]``).
        :param history_feat: ``[B, history_dim]`` or None; fused only if the head has ``history_fusion``.
        :param attention_mask: ``[B, L]`` (1 real, 0 padding) or None.
        :return: ``[B, F]``.
        """
        fused = self._fused(hidden_states, attention_mask)
        pooled = (self._attention(fused, attention_mask) * fused).sum(dim=1)
        if self.use_history and history_feat is not None:
            pooled = self.history_fusion(th.cat([pooled, history_feat], dim=-1))
        return pooled

    def forward(self, *pool_args: Any) -> th.Tensor:
        """
        Full head: the regression MLP on :meth:`pool`'s feature.

        :param pool_args: :meth:`pool`'s arguments (``hidden_states``, ``history_feat``, ``attention_mask``).
        :return: ``[B, P]`` normalised parameters (de-normalise with ``pred * std + mean``).
        """
        return self.mlp(self.pool(*pool_args))


class HistoryEncoder(nn.Module):
    """
    CNN per frame + temporal transformer over ``T`` history frames (FTRL ``HistoryEncoder``).

    :param hidden_dim: Output feature size (256).
    :param num_frames: Frames ``T`` the positional embedding covers (2 in the released checkpoints).
    :param num_transformer_layers: Transformer encoder layers (2).
    """

    def __init__(self, hidden_dim: int = 256, num_frames: int = 2, num_transformer_layers: int = 2):
        super().__init__()
        check_int(num_frames, "num_frames", owner="HistoryEncoder")
        self.hidden_dim = hidden_dim
        self.num_frames = num_frames
        self.img_encoder = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=7, stride=4, padding=3),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, hidden_dim),
        )
        layer = nn.TransformerEncoderLayer(
            d_model=hidden_dim, nhead=4, dim_feedforward=hidden_dim * 2, dropout=0.1, batch_first=True
        )
        self.temporal_transformer = nn.TransformerEncoder(
            layer, num_layers=num_transformer_layers, enable_nested_tensor=False
        )
        self.pos_embedding = nn.Parameter(th.randn(1, num_frames, hidden_dim) * 0.02)

    def forward(self, frames: th.Tensor) -> th.Tensor:
        """
        :param frames: ``[B, T, 3, h, w]`` float, normalised by :func:`history_transform`, ``T <= num_frames``.
        :return: ``[B, hidden_dim]``, the transformer output at the last time index.
        """
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"HistoryEncoder expects frames [B, T, 3, h, w], got shape {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        if t > self.num_frames:
            raise ValueError(f"HistoryEncoder was built for <= {self.num_frames} frames, got {t}")
        x = self.img_encoder(frames.flatten(0, 1)).view(b, t, -1)
        x = self.temporal_transformer(x + self.pos_embedding[:, :t])
        return x[:, -1]


def history_transform(frames: th.Tensor, size: int) -> th.Tensor:
    """
    FTRL's history preprocessing on tensors: resize to ``size x size`` (aspect not kept; bilinear with antialias,
    close to torchvision's PIL ``Resize``) and ImageNet normalisation.

    :param frames: ``[..., 3, h, w]`` float in [0, 1].
    :param size: Output side in pixels (``history_image_size``, 224 in FTRL).
    :return: ``[..., 3, size, size]`` float32.
    """
    lead = frames.shape[:-3]
    x = frames.reshape(-1, *frames.shape[-3:]).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).reshape(*lead, 3, size, size)


def _init_weights(module: nn.Module) -> None:
    """FTRL's initialisation of the DPT head (only matters for a fresh head)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv1d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
