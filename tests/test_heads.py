"""DPTHead and HistoryEncoder: FTRL state-dict layout, parameter counts, forward semantics, padding mask."""

import pytest
import torch as th
import torch.nn.functional as F

from sb3_vlm import DPTHead, HistoryEncoder
from sb3_vlm.model.heads import history_transform


def ftrl_head_shapes(h: int, p: int, use_history: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape table of ftrl_reference §1.1 (F = 256)."""
    f = 256
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(4):
        shapes |= {
            f"projections.{i}.0.weight": (f, h),
            f"projections.{i}.0.bias": (f,),
            f"projections.{i}.1.weight": (f,),
            f"projections.{i}.1.bias": (f,),
        }
    for i in range(3):
        shapes |= {
            f"fusion_blocks.{i}.resample.weight": (f, f, 1),
            f"fusion_blocks.{i}.conv1.weight": (f, f, 3),
            f"fusion_blocks.{i}.conv1.bias": (f,),
            f"fusion_blocks.{i}.conv2.weight": (f, f, 3),
            f"fusion_blocks.{i}.conv2.bias": (f,),
        }
    shapes |= {
        "spatial_attention.0.weight": (64, f),
        "spatial_attention.0.bias": (64,),
        "spatial_attention.2.weight": (1, 64),
        "spatial_attention.2.bias": (1,),
    }
    if use_history:
        shapes |= {
            "history_fusion.0.weight": (f, 512),
            "history_fusion.0.bias": (f,),
            "history_fusion.1.weight": (f,),
            "history_fusion.1.bias": (f,),
        }
    shapes |= {
        "mlp.0.weight": (512, f),
        "mlp.0.bias": (512,),
        "mlp.3.weight": (256, 512),
        "mlp.3.bias": (256,),
        "mlp.6.weight": (p, 256),
        "mlp.6.bias": (p,),
    }
    return shapes


def ftrl_history_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape table of ftrl_reference §1.4."""
    shapes = {
        "img_encoder.0.weight": (32, 3, 7, 7),
        "img_encoder.0.bias": (32,),
        "img_encoder.2.weight": (64, 32, 3, 3),
        "img_encoder.2.bias": (64,),
        "img_encoder.4.weight": (128, 64, 3, 3),
        "img_encoder.4.bias": (128,),
        "img_encoder.8.weight": (256, 2048),
        "img_encoder.8.bias": (256,),
        "pos_embedding": (1, 2, 256),
    }
    for i in range(2):
        layer = f"temporal_transformer.layers.{i}"
        shapes |= {
            f"{layer}.self_attn.in_proj_weight": (768, 256),
            f"{layer}.self_attn.in_proj_bias": (768,),
            f"{layer}.self_attn.out_proj.weight": (256, 256),
            f"{layer}.self_attn.out_proj.bias": (256,),
            f"{layer}.linear1.weight": (512, 256),
            f"{layer}.linear1.bias": (512,),
            f"{layer}.linear2.weight": (256, 512),
            f"{layer}.linear2.bias": (256,),
            f"{layer}.norm1.weight": (256,),
            f"{layer}.norm1.bias": (256,),
            f"{layer}.norm2.weight": (256,),
            f"{layer}.norm2.bias": (256,),
        }
    return shapes


def hidden(batch: int = 2, length: int = 7, h: int = 32, seed: int = 0) -> list[th.Tensor]:
    g = th.Generator().manual_seed(seed)
    return [th.randn(batch, length, h, generator=g) for _ in range(4)]


@pytest.mark.parametrize("use_history", [True, False])
@pytest.mark.parametrize("h,p", [(2048, 9), (128, 8), (3584, 10)])
def test_dpt_head_state_dict_is_ftrl(h, p, use_history):
    state = DPTHead(h, p, use_history=use_history).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == ftrl_head_shapes(h, p, use_history)
    assert len(state) == (45 if use_history else 41)


@pytest.mark.parametrize("p", [8, 9, 10])
def test_dpt_head_parameter_count_matches_ftrl(p):
    with_history = sum(t.numel() for t in DPTHead(2048, p, use_history=True).parameters())
    without = sum(t.numel() for t in DPTHead(2048, p).parameters())
    assert with_history == 3_889_281 + 257 * p
    assert without == with_history - 131_840


def test_history_encoder_state_dict_is_ftrl():
    encoder = HistoryEncoder()
    state = encoder.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == ftrl_history_shapes()
    assert len(state) == 33
    assert sum(t.numel() for t in encoder.parameters()) == 1_676_352


@pytest.mark.parametrize("use_history", [True, False])
def test_from_state_dict_infers_sizes_and_loads_strict(use_history):
    source = DPTHead(48, 7, use_history=use_history).eval()
    head = DPTHead.from_state_dict(source.state_dict()).eval()
    assert (head.hidden_size, head.num_params, head.use_history) == (48, 7, use_history)
    hs, history = hidden(h=48), th.randn(2, 256)
    assert th.equal(head(hs, history), source(hs, history))


def test_from_state_dict_names_a_missing_key():
    state = DPTHead(32, 5).state_dict()
    del state["mlp.6.weight"]
    with pytest.raises(KeyError, match="mlp.6.weight"):
        DPTHead.from_state_dict(state)


def ftrl_pool(head: DPTHead, hs: list[th.Tensor], history: th.Tensor | None) -> th.Tensor:
    """Steps 1–4 of ftrl_reference §1.2, written out without the head's helpers."""
    p = [head.projections[i](hs[i]).transpose(1, 2) for i in range(4)]

    def block(i, x, skip):
        b = head.fusion_blocks[i]
        y = F.relu(b.conv1(x + b.resample(skip)))
        return F.relu(b.conv2(y) + x)

    f = block(0, block(1, block(2, p[3], p[2]), p[1]), p[0]).transpose(1, 2)
    a = th.softmax(head.spatial_attention[2](F.relu(head.spatial_attention[0](f))), dim=1)
    pooled = (a * f).sum(dim=1)
    if history is not None:
        pooled = head.history_fusion(th.cat([pooled, history], dim=-1))
    return pooled


@pytest.mark.parametrize("use_history", [True, False])
def test_pool_and_forward_follow_ftrl(use_history):
    head = DPTHead(32, 6, use_history=use_history).eval()
    hs = hidden(h=32)
    history = th.randn(2, 256) if use_history else None
    expected = ftrl_pool(head, hs, history)
    th.testing.assert_close(head.pool(hs, history), expected)
    th.testing.assert_close(head(hs, history), head.mlp(expected))
    assert head.pool(hs, history).shape == (2, 256)


def test_attention_weights_are_a_distribution_over_tokens():
    head = DPTHead(32, 6).eval()
    weights = head.attention_weights(hidden(batch=3, length=11, h=32))
    assert weights.shape == (3, 11)
    th.testing.assert_close(weights.sum(dim=1), th.ones(3))
    assert (weights > 0).all()


def test_mask_makes_right_padding_invisible():
    head = DPTHead(32, 6).eval()
    short, long = hidden(batch=1, length=5, h=32, seed=1), hidden(batch=1, length=9, h=32, seed=2)
    padded = [th.cat([s, th.full((1, 4, 32), 3.0)], dim=1) for s in short]  # padding carries garbage values
    batch = [th.cat([p, lg], dim=0) for p, lg in zip(padded, long, strict=True)]
    mask = th.tensor([[1] * 5 + [0] * 4, [1] * 9])
    pooled = head.pool(batch, attention_mask=mask)
    th.testing.assert_close(pooled[0], head.pool(short)[0], atol=1e-5, rtol=1e-5)
    th.testing.assert_close(pooled[1], head.pool(long)[0], atol=1e-5, rtol=1e-5)
    weights = head.attention_weights(batch, attention_mask=mask)
    assert th.all(weights[0, 5:] == 0)


def test_dpt_head_rejects_bad_input():
    head = DPTHead(32, 6)
    with pytest.raises(ValueError, match="expects 4 hidden states"):
        head(hidden(h=32)[:3])
    with pytest.raises(ValueError, match="num_params must be a positive int, got 0"):
        DPTHead(32, 0)


def test_history_encoder_returns_last_time_index():
    encoder = HistoryEncoder().eval()
    frames = th.randn(3, 2, 3, 56, 56)
    out = encoder(frames)
    assert out.shape == (3, 256)
    assert not th.allclose(out, encoder(frames.flip(1)))
    with pytest.raises(ValueError, match="got 3"):
        encoder(th.randn(1, 3, 3, 56, 56))
    with pytest.raises(ValueError, match=r"\[B, T, 3, h, w\]"):
        encoder(th.randn(2, 3, 56, 56))


def test_history_transform_resizes_and_normalises():
    frames = th.full((2, 3, 3, 40, 60), 0.5)
    out = history_transform(frames, 56)
    assert out.shape == (2, 3, 3, 56, 56)
    th.testing.assert_close(
        out[0, 0, :, 0, 0], (0.5 - th.tensor([0.485, 0.456, 0.406])) / th.tensor([0.229, 0.224, 0.225])
    )
