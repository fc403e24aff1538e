"""VLMDPTExtractor: FTRL checkpoint loading through the public API, observation handling, freezing."""

import json

import numpy as np
import pytest
import torch as th
from _tiny_ckpt import build_tiny_checkpoint, build_tiny_model_dir
from gymnasium import spaces
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from sb3_vlm import VLMDPTExtractor, VLMTD3Policy
from sb3_vlm.formats.checkpoint import CheckpointError
from sb3_vlm.model.config import VLMConfig
from sb3_vlm.model.heads import history_transform

IMAGE = spaces.Box(0, 255, (3, 56, 84), np.uint8)
VELOCITY = spaces.Box(np.array([-0.5, -3.14], np.float32), np.array([2.0, 3.14], np.float32))
DICT = spaces.Dict({"image": IMAGE, "velocity": VELOCITY})


def images(batch: int = 4, seed: int = 0) -> th.Tensor:
    return th.randint(0, 256, (batch, 3, 56, 84), dtype=th.uint8, generator=th.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint-5000")


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    """Features and SFT predictions computed directly with PEFT, the PIL processor and the FTRL modules."""
    x = images()
    inputs = Qwen2VLImageProcessorPil()([Image.fromarray(i.permute(1, 2, 0).numpy()) for i in x], return_tensors="pt")
    n = int(inputs["image_grid_thw"][0].prod()) // 4
    ids = th.tensor([[252] + [250] * n + [253]] * len(x))
    with th.no_grad():
        hidden = tiny_ckpt.peft_model.base_model.model.model(
            input_ids=ids, mm_token_type_ids=(ids == 250).int(), output_hidden_states=True, **inputs
        ).hidden_states[-4:]
        frames = history_transform(x.float() / 255, 56)[:, None].expand(-1, 2, -1, -1, -1)
        history = tiny_ckpt.history(frames)
        features = tiny_ckpt.head.pool(list(hidden), history)
        predictions = tiny_ckpt.head.mlp(features).double().numpy() * tiny_ckpt.param_std + tiny_ckpt.param_mean
    return x, features, predictions


def test_checkpoint_gives_identical_features_and_sft_predictions(tiny_ckpt, reference):
    x, features, predictions = reference
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_vlm=False)  # adapter kept as LoRA
    with th.no_grad():
        assert th.equal(extractor(x), features)
    np.testing.assert_allclose(extractor.predict_parameters(x).numpy(), predictions, rtol=1e-6, atol=1e-6)
    assert extractor.features_dim == 256


def test_frozen_checkpoint_merges_the_adapter(tiny_ckpt, reference):
    x, features, predictions = reference
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_vlm=True)
    assert not extractor.backbone.has_lora and extractor.backbone.has_adapter
    with th.no_grad():
        th.testing.assert_close(extractor(x), features, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(extractor.predict_parameters(x).numpy(), predictions, rtol=1e-5, atol=1e-5)


def test_policy_loads_the_checkpoint_through_policy_kwargs(tiny_ckpt, reference):
    x, features, _ = reference
    policy = VLMTD3Policy(IMAGE, spaces.Box(-1, 1, (7,)), lambda _: 1e-4, backbone=tiny_ckpt.path, freeze_vlm=False)
    with th.no_grad():
        assert th.equal(policy.features(x), features)


def test_attention_weights_cover_the_token_sequence(tiny_ckpt):
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path)
    weights = extractor.attention_weights(images(batch=2))
    assert weights.shape == (2, 8)  # vision start + 6 image tokens + vision end
    th.testing.assert_close(weights.sum(dim=1), th.ones(2))


def test_save_pretrained_round_trips(tiny_ckpt, reference, tmp_path):
    x, features, predictions = reference
    VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_vlm=False).save_pretrained(tmp_path / "copy")
    saved = json.loads((tmp_path / "copy" / "sb3_vlm_config.json").read_text())
    assert saved["base_model"] == "tiny" and saved["vlm"] == VLMConfig(freeze_vlm=False).to_dict()
    extractor = VLMDPTExtractor(IMAGE, backbone=tmp_path / "copy", freeze_vlm=False)
    with th.no_grad():
        assert th.equal(extractor(x), features)
    np.testing.assert_allclose(extractor.predict_parameters(x).numpy(), predictions, rtol=1e-6, atol=1e-6)


def test_uint8_and_normalised_float_images_agree():
    extractor = VLMDPTExtractor(IMAGE)
    x = images(batch=2)
    with th.no_grad():
        th.testing.assert_close(extractor(x), extractor(x.float() / 255), atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="got float values up to 2"):
            extractor(x.float())


def test_dict_observation_velocity_reaches_the_prompt_only_with_a_tokenizer(tmp_path):
    x = images(batch=2)
    slow, fast = th.tensor([[0.1, 0.0], [0.1, 0.0]]), th.tensor([[1.5, -0.5], [1.5, -0.5]])
    tiny = VLMDPTExtractor(DICT)
    with th.no_grad():
        assert th.equal(tiny({"image": x, "velocity": slow}), tiny({"image": x, "velocity": fast}))
    with_tokenizer = VLMDPTExtractor(DICT, backbone=build_tiny_model_dir(tmp_path / "qwen"))
    mixed = th.tensor([[0.5, 0.1], [-0.5, 0.1]])  # different prompt lengths: padded and masked
    with th.no_grad():
        assert not th.allclose(
            with_tokenizer({"image": x, "velocity": slow}), with_tokenizer({"image": x, "velocity": fast})
        )
        batch = with_tokenizer({"image": x, "velocity": mixed})
        alone = with_tokenizer({"image": x[:1], "velocity": mixed[:1]})
    th.testing.assert_close(batch[:1], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs,trainable",
    [
        (dict(), {"dpt", "history"}),
        (dict(freeze_dpt=True), set()),
        (dict(freeze_dpt=True, freeze_history=False), {"history"}),
        (dict(freeze_vlm=False), {"backbone", "dpt", "history"}),
    ],
)
def test_freeze_options(tiny_ckpt, kwargs, trainable):
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, **kwargs)
    found = {n.split(".")[0] for n, p in extractor.named_parameters() if p.requires_grad}
    assert found == trainable
    if "backbone" in trainable:
        assert all("lora_" in n for n, p in extractor.backbone.named_parameters() if p.requires_grad)


def test_frozen_backbone_stays_in_eval_mode_and_builds_no_graph(tiny_ckpt):
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_vlm=True)
    extractor.train()
    assert extractor.dpt.training and extractor.history.training
    assert not any(m.training for m in extractor.backbone.modules())
    hidden = []
    handle = extractor.backbone.register_forward_hook(lambda m, i, out: hidden.extend(out.hidden_states))
    extractor(images(batch=2)).sum().backward()
    handle.remove()
    assert not any(h.requires_grad for h in hidden)  # no_grad, yet usable by the trainable head (no inference_mode)
    assert extractor.dpt.projections[0][0].weight.grad is not None
    assert all(p.grad is None for p in extractor.backbone.parameters())


def test_fully_frozen_extractor_returns_plain_tensors(tiny_ckpt):
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_dpt=True)
    assert not extractor(images(batch=1)).requires_grad


def test_rejects_bad_configurations(tiny_ckpt, tmp_path):
    with pytest.raises(TypeError, match="image Box"):
        VLMDPTExtractor(spaces.Box(-1, 1, (721,)))
    with pytest.raises(ValueError, match="'image' key"):
        VLMDPTExtractor(spaces.Dict({"velocity": VELOCITY}))
    with pytest.raises(ValueError, match="channel-first"):
        VLMDPTExtractor(spaces.Box(0, 255, (56, 84, 3), np.uint8))
    with pytest.raises(ValueError, match="got lora=None"):
        VLMDPTExtractor(IMAGE, freeze_vlm=False)
    with pytest.warns(UserWarning, match="ignored with freeze_vlm=True"):
        VLMDPTExtractor(IMAGE, lora=dict(r=2))


def test_checkpoint_base_model_must_be_local(tiny_ckpt, tmp_path):
    copy = tmp_path / "hub-named"
    VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_vlm=False).save_pretrained(copy)
    (copy / "sb3_vlm_config.json").unlink()
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "Qwen/Qwen2.5-VL-3B"}))
    with pytest.raises(ValueError, match="pass base_model="):
        VLMDPTExtractor(IMAGE, backbone=copy)
    assert VLMDPTExtractor(IMAGE, backbone=copy, base_model="tiny").backbone.source == "tiny"


def test_head_of_another_model_size_is_named(tmp_path):
    ckpt = build_tiny_checkpoint(tmp_path / "ckpt", use_history=False)
    state = th.load(ckpt.path / "regression_head" / "pytorch_model.bin", weights_only=True)
    state["projections.0.0.weight"] = th.zeros(256, 2048)
    th.save(state, ckpt.path / "regression_head" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="expects hidden size 128 .* got 2048"):
        VLMDPTExtractor(IMAGE, backbone=ckpt.path)


def test_trainable_history_gets_gradients_under_a_frozen_dpt(tiny_ckpt):
    extractor = VLMDPTExtractor(IMAGE, backbone=tiny_ckpt.path, freeze_dpt=True, freeze_history=False)
    extractor.train()
    extractor(images(batch=2)).sum().backward()
    assert all(p.grad is not None for p in extractor.history.parameters())
    assert all(p.grad is None for p in extractor.dpt.parameters())
