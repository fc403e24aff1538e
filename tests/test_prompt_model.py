"""A text prompt through the VLM's input: the tiny model reads its bytes, a tokenizer model its FTRL user turn."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_vlm.model.backbone import VLMBackbone
from sb3_vlm.model.extractor import VLMDPTExtractor
from tests._tiny_ckpt import build_tiny_model_dir

PROMPTS = ["Move fast toward the goal.", "Keep clear."]


@pytest.fixture(scope="module")
def extractor():
    return VLMDPTExtractor(spaces.Box(0, 255, (3, 56, 84), np.uint8), num_params=7)


@pytest.fixture(scope="module")
def images():
    return th.randint(0, 256, (2, 3, 56, 84), dtype=th.uint8, generator=th.Generator().manual_seed(0))


def test_tiny_backbone_reads_the_prompt_bytes_after_the_image():
    backbone = VLMBackbone.from_pretrained()
    images = th.zeros(2, 3, 56, 84, dtype=th.uint8)
    plain = backbone.build_inputs(images)
    prompted = backbone.build_inputs(images, prompts=PROMPTS)
    n = plain["input_ids"].shape[1]
    assert th.equal(prompted["input_ids"][:, :n], plain["input_ids"])
    assert prompted["input_ids"][0, n:].tolist() == list(PROMPTS[0].encode())
    # Right padding of the shorter prompt is masked; image tokens are the same.
    assert prompted["attention_mask"][1].sum() == n + len(PROMPTS[1])
    assert th.equal(prompted["mm_token_type_ids"].sum(1), plain["mm_token_type_ids"].sum(1))


def test_prompt_changes_features_and_padding_is_invisible(extractor, images):
    with th.no_grad():
        plain = extractor(images)
        both = extractor(images, prompts=PROMPTS)
        alone = th.cat([extractor(images[i : i + 1], prompts=[p]) for i, p in enumerate(PROMPTS)])
    assert not th.allclose(plain, both, atol=1e-4)
    th.testing.assert_close(both, alone, atol=1e-5, rtol=1e-4)
    params = extractor.predict_parameters(images, prompts=[PROMPTS[0]] * 2)
    assert not th.allclose(params, extractor.predict_parameters(images, prompts=[PROMPTS[1]] * 2), atol=1e-5)


@pytest.mark.parametrize("prompts", ["one string", ["only one"], ["a", "b", "c"]])
def test_prompts_must_be_one_text_per_image(extractor, images, prompts):
    with pytest.raises(ValueError, match="one per image"):
        extractor(images, prompts=prompts)


def test_tokenizer_model_appends_the_prompt_to_the_user_turn(tmp_path):
    backbone = VLMBackbone.from_pretrained(build_tiny_model_dir(tmp_path / "m"))
    ids = backbone.build_inputs(th.zeros(1, 3, 56, 84, dtype=th.uint8), prompts=["Keep clear."])["input_ids"][0]
    text = backbone.tokenizer.decode(ids)
    assert "Target local planner: DWA" in text
    assert text.index("Instruction: Keep clear.") > text.index("<|vision_end|>")
    assert text.endswith("<|im_end|>\n")


def test_feature_cache_keys_images_with_their_prompts(images):
    space = spaces.Box(0, 255, (3, 56, 84), np.uint8)
    cached = VLMDPTExtractor(space, num_params=7, feature_cache_bytes=2**24)
    plain = VLMDPTExtractor(space, num_params=7)
    cached.dpt.load_state_dict(plain.dpt.state_dict())
    with th.no_grad():
        for prompts in (PROMPTS, PROMPTS[::-1], None, PROMPTS):
            th.testing.assert_close(cached(images, prompts=prompts), plain(images, prompts=prompts))
    stats = cached.feature_cache.stats()
    assert (stats.misses, stats.hits) == (6, 2)  # 2 images x 3 (prompt) keys; the repeated batch hits
