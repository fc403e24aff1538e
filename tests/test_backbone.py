"""VLMBackbone: tiny model, tensor patchify, hidden states, prompts of tokenizer-equipped models, LoRA, nf4/int8."""

import sys

import numpy as np
import pytest
import torch as th
from _tiny_ckpt import build_tiny_model_dir
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from sb3_vlm.model.backbone import VLMBackbone, build_tiny_model, ftrl_lora_targets, patchify

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def images(batch: int = 3, height: int = 56, width: int = 84, seed: int = 0) -> th.Tensor:
    g = th.Generator().manual_seed(seed)
    return th.randint(0, 256, (batch, 3, height, width), dtype=th.uint8, generator=g)


@pytest.fixture(scope="module")
def tiny():
    return VLMBackbone.from_pretrained()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("qwen") / "tiny-qwen")


@pytest.mark.parametrize("height,width", [(56, 84), (84, 84), (112, 56)])
@pytest.mark.parametrize("as_float", [False, True])
def test_patchify_matches_the_pil_processor(height, width, as_float):
    x = images(height=height, width=width)
    reference = Qwen2VLImageProcessorPil()(
        [Image.fromarray(i.permute(1, 2, 0).numpy()) for i in x], return_tensors="pt"
    )
    pixel_values, grid = patchify(x.float() / 255 if as_float else x)
    assert th.equal(grid, reference["image_grid_thw"])
    th.testing.assert_close(pixel_values, reference["pixel_values"], atol=1e-5, rtol=0)


def test_patchify_resizes_other_sizes():
    pixel_values, grid = patchify(images(batch=2, height=50, width=70))
    h, w = smart_resize(50, 70)
    assert grid.tolist() == [[1, h // 14, w // 14]] * 2
    assert pixel_values.shape == (2 * (h // 14) * (w // 14), 3 * 2 * 14 * 14)
    _, grid = patchify(images(batch=1), size=(112, 168))
    assert grid.tolist() == [[1, 8, 12]]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: patchify(images()[0]), ValueError, r"got shape \(3, 56, 84\)"),
        (lambda: patchify(images(), size=(50, 84)), ValueError, "multiples of 28"),
        (lambda: patchify(np.zeros((1, 3, 56, 84))), TypeError, "got ndarray"),
    ],
    ids=["unbatched", "size-not-multiple-of-28", "numpy-array"],
)
def test_patchify_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_tiny_model_is_deterministic_and_leaves_the_global_rng_alone():
    state = th.random.get_rng_state()
    a, b = build_tiny_model(seed=0), build_tiny_model(seed=0)
    assert th.equal(th.random.get_rng_state(), state)
    assert all(th.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not th.equal(next(build_tiny_model(seed=1).parameters()), next(a.parameters()))


def test_hidden_states_are_the_last_four_with_3d_positions(tiny):
    x = images()
    with th.no_grad():
        out = tiny(x)
        inputs = tiny.build_inputs(x)
        direct = tiny.model.model(**inputs, output_hidden_states=True, use_cache=False)
        del inputs["mm_token_type_ids"]
        one_d = tiny.model.model(**inputs, output_hidden_states=True, use_cache=False)
    assert len(out.hidden_states) == 4 and out.attention_mask is None
    assert all(h.shape == (3, 6 + 2, 128) and h.dtype == th.float32 for h in out.hidden_states)
    assert inputs["input_ids"][0].tolist() == [252] + [250] * 6 + [253]
    for mine, theirs in zip(out.hidden_states, direct.hidden_states[-4:], strict=True):
        assert th.equal(mine, theirs)
    assert th.equal(out.hidden_states[-1], direct.last_hidden_state)  # post-final-norm
    # without mm_token_type_ids transformers 5 silently falls back to 1-D positions
    assert not th.allclose(out.hidden_states[-1], one_d.last_hidden_state)


def test_samples_do_not_interact_within_a_batch(tiny):
    x = images(batch=4)
    with th.no_grad():
        batch, alone = tiny(x).hidden_states[-1], tiny(x[2:3]).hidden_states[-1]
    th.testing.assert_close(batch[2:3], alone, atol=1e-5, rtol=1e-5)


def test_bfloat16_backbone_returns_float32_hidden_states():
    backbone = VLMBackbone.from_pretrained(dtype="bfloat16")
    assert backbone.dtype == th.bfloat16
    with th.no_grad():
        out = backbone(images(batch=2))
    assert out.hidden_states[0].dtype == th.float32
    with pytest.raises(ValueError, match="got 'float16'"):
        VLMBackbone.from_pretrained(dtype="float16")


def test_fresh_lora_trains_only_lora(tiny):
    backbone = VLMBackbone.from_pretrained(lora=dict(r=2))
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == backbone.lora_parameter_names() and trainable
    # FTRL's default targets: language and vision Linear layers, never lm_head
    targets = ftrl_lora_targets(build_tiny_model())
    assert any(t.endswith("self_attn.q_proj") for t in targets) and any(t.endswith("attn.qkv") for t in targets)
    assert not any("lm_head" in t for t in targets)
    assert any(".attn.qkv.lora_A" in n for n in trainable)
    assert not {n for n, p in tiny.named_parameters() if p.requires_grad}


def test_local_dir_without_a_hub_never_downloads(tmp_path):
    with pytest.raises(ValueError, match="nothing is downloaded"):
        VLMBackbone.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")
    with pytest.raises(ValueError, match="got 'fp8'"):
        VLMBackbone.from_pretrained(quantization="fp8")


def test_tokenizer_models_get_the_ftrl_prompt(model_dir):
    backbone = VLMBackbone.from_pretrained(model_dir, planner="dwa")
    velocity = th.tensor([[0.5, 0.25], [-0.5, 0.25]])
    inputs = backbone.build_inputs(images(batch=2), velocity)
    text = backbone.tokenizer.decode(inputs["input_ids"][1])
    assert text.startswith("<|im_start|>system\nYou are a navigation scene analyzer for Clearpath Jackal")
    assert "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>Current robot state:" in text
    assert "- Linear velocity: -0.500 m/s\n- Angular velocity: 0.250 rad/s\n\nTarget local planner: DWA" in text
    assert text.endswith("motion constraints.<|im_end|>\n")
    # the minus sign makes row 1 one token longer: row 0 is right-padded and masked
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    assert lengths[1] == lengths[0] + 1 == inputs["input_ids"].shape[1]
    no_velocity = backbone.tokenizer.decode(backbone.build_inputs(images(batch=1))["input_ids"][0])
    assert "Target local planner: DWA\n\nAnalyze the costmap" in no_velocity


def test_padded_prompts_give_the_hidden_states_of_unpadded_ones(model_dir):
    backbone = VLMBackbone.from_pretrained(model_dir)
    x, velocity = images(batch=2), th.tensor([[0.5, 0.25], [-0.5, -0.25]])
    with th.no_grad():
        batch = backbone(x, velocity)
        alone = backbone(x[:1], velocity[:1])
    length = alone.hidden_states[0].shape[1]
    assert batch.attention_mask[0].sum() == length
    for padded, single in zip(batch.hidden_states, alone.hidden_states, strict=True):
        th.testing.assert_close(padded[:1, :length], single, atol=1e-4, rtol=1e-4)


def test_quantization_without_bitsandbytes_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what a default install (no "quant" extra) has
    with pytest.raises(ImportError, match=r"pip install \"sb3-vlm\[quant\]\""):
        VLMBackbone.from_pretrained(quantization="nf4")


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_quantized_lora_trains_after_a_no_grad_eval_forward(quantization):
    bnb = pytest.importorskip("bitsandbytes", reason='optional extra "quant"')
    backbone = VLMBackbone.from_pretrained(quantization=quantization, lora=LORA)
    layer = bnb.nn.Linear4bit if quantization == "nf4" else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer) for m in backbone.modules())
    x = images(batch=2)
    backbone.eval()
    with th.no_grad():
        backbone(x)  # SB3 collects rollouts like this before training
    backbone.train()
    loss = sum(h.pow(2).mean() for h in backbone(x).hidden_states)
    loss.backward()
    grads = [p.grad for n, p in backbone.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and th.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
