"""Where a VLM policy looks: the DPT head's attention pooling over the image tokens of costmap frames
(what ``sb3-vlm viz`` draws)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from gymnasium import spaces  # noqa: E402

from envs import BarnNavVecEnv  # noqa: E402
from envs.planners import DWA_PARAMS  # noqa: E402
from sb3_vlm._constants import TINY  # noqa: E402
from sb3_vlm.model.extractor import VLMDPTExtractor  # noqa: E402
from sb3_vlm.policies import VLMDirectoryPolicy, load_policy  # noqa: E402

__all__ = ["attention_figure", "image_attention", "load_extractor"]


def load_extractor(model: str, image_size: tuple[int, int]) -> VLMDPTExtractor:
    """The features extractor of a VLM policy (zip, policy or FTRL checkpoint directory), a local Qwen2.5-VL
    directory, or the tiny default."""
    if model != TINY and not (Path(model) / "config.json").is_file():
        policy = load_policy(model, params=DWA_PARAMS, image_size=image_size)
        if isinstance(policy, VLMDirectoryPolicy):
            return policy.extractor
        extractor = getattr(getattr(getattr(policy, "model", None), "policy", None), "features_extractor", None)
        if not isinstance(extractor, VLMDPTExtractor):
            raise ValueError(f"viz draws a VLM policy's attention, got {model!r} ({policy.kind}, no VLM extractor)")
        return extractor
    return VLMDPTExtractor(spaces.Box(0, 255, (3, *image_size), np.uint8), backbone=model)


def image_attention(extractor: VLMDPTExtractor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Attention-pooling weights on the image tokens of uint8 images ``[B, H, W, 3]``.

    :return: weights ``[B, gh, gw]`` over the merged-patch grid (each map sums to 1) and the share of the total
        attention that falls on image tokens ``[B]`` (the rest goes to prompt/special tokens).
    """
    chw = th.as_tensor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    with th.no_grad():
        weights = extractor.attention_weights(chw)
        inputs = extractor.backbone.build_inputs(chw)
    is_image = inputs["mm_token_type_ids"].bool()
    merge = extractor.backbone.config.vision_config.spatial_merge_size
    _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
    # Qwen2.5-VL orders merged image tokens row-major over the (gh / merge, gw / merge) grid.
    grid = weights[is_image].reshape(len(images), gh // merge, gw // merge)
    share = grid.sum(dim=(1, 2))
    return (grid / share[:, None, None]).numpy(), share.numpy()


def attention_figure(
    model: str, worlds: list[int], steps: int, size: tuple[int, int], barn_dir: Path | None, out: Path
) -> Path:
    """Draw the attention maps of ``model`` on one frame per world (taken after ``steps`` default-DWA steps of 0.5 s)
    into the PNG ``out``; returns ``out``."""
    extractor = load_extractor(model, size)
    venv = BarnNavVecEnv(len(worlds), observation="costmap", image_size=size, barn_dir=barn_dir, worlds=worlds)
    venv.seed(0)
    venv.set_options([{"world_id": w} for w in worlds])
    images = venv.reset()
    for _ in range(steps):
        images, *_ = venv.step(np.tile(venv.batch.params.default, (venv.num_envs, 1)))
    venv.close()
    maps, share = image_attention(extractor, images)
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 3.2), squeeze=False)
    for ax, image, heat, s, w in zip(axes[0], images, maps, share, worlds, strict=True):
        ax.imshow(image)
        ax.imshow(
            heat, cmap="inferno", alpha=0.55, extent=(-0.5, size[1] - 0.5, size[0] - 0.5, -0.5), interpolation="nearest"
        )
        ax.set_title(f"world {w}: {100 * s:.0f}% of attention on image tokens", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"DPT attention pooling over the costmap image ({model})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"attention maps -> {out}")
    return out
