"""The DPT fusion as matrix products (token-major im2col) is ``conv1d``'s: outputs and gradients, with padding."""

import pytest
import torch as th
import torch.nn.functional as F

from sb3_vlm.model.heads import DPTHead, FeatureRefinementBlock


def conv_block(block: FeatureRefinementBlock, x: th.Tensor, skip: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """FTRL's block with the real ``nn.Conv1d`` modules, ``[B, F, L]``."""
    residual, x = x, x + block.resample(skip)
    y = F.relu(block.conv1(x))
    y = y if mask is None else y * mask
    y = block.conv2(y)
    y = y if mask is None else y * mask
    return F.relu(y + residual)


@pytest.mark.parametrize("masked", [False, True])
def test_block_matches_conv1d_with_gradients(masked):
    th.manual_seed(0)
    block = FeatureRefinementBlock(16)
    x, skip = th.randn(3, 16, 7, requires_grad=True), th.randn(3, 16, 7, requires_grad=True)
    mask = th.tensor([[1.0] * 7, [1.0] * 5 + [0.0] * 2, [1.0] * 3 + [0.0] * 4])[:, None] if masked else None
    outputs = []
    for forward in (lambda: conv_block(block, x, skip, mask), lambda: block(x, skip, mask)):
        out = forward()
        weights = th.linspace(-1, 1, out.numel()).view_as(out)  # a loss whose gradient differs per entry
        grads = th.autograd.grad((out * weights).sum(), [x, skip, *block.parameters()])
        outputs.append((out, grads))
    (expected, expected_grads), (got, got_grads) = outputs
    th.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        th.testing.assert_close(g, e)


def test_head_state_dict_keys_are_unchanged():
    keys = set(DPTHead(32, 7).state_dict())
    assert {"fusion_blocks.0.resample.weight", "fusion_blocks.2.conv1.weight", "fusion_blocks.1.conv2.bias"} <= keys
    assert DPTHead(32, 7).state_dict()["fusion_blocks.0.conv1.weight"].shape == (256, 256, 3)
