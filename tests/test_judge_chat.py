"""The judge endpoint (``sb3_vlm.serving.chat``): the official openai client against the tiny Qwen2.5-VL locally."""

import numpy as np
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from _helpers import b64, png, post, running  # noqa: E402

from sb3_vlm.rewards import VLMJudge  # noqa: E402
from sb3_vlm.rewards.judge import JudgeSettings  # noqa: E402
from sb3_vlm.serving.chat import ChatModel, build_chat_app  # noqa: E402


@pytest.fixture(scope="module")
def url():
    with running(build_chat_app(ChatModel.from_source("tiny"))) as base:
        yield base + "/v1"


def _frames(n):
    return [f"data:image/png;base64,{b64(png(k)[0])}" for k in range(n)]


def test_openai_client_gets_a_well_formed_answer_for_8_frames(url):
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=60)
    parts = [{"type": "text", "text": "Rate the run. [SCORE] <number>"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in _frames(8)]
    completion = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": parts}], max_tokens=6, temperature=0
    )
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and completion.model == "tiny"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length") and 1 <= completion.usage.completion_tokens <= 6
    # 8 images of 56 x 84 -> 2 x 3 merged patches each, plus the text
    assert completion.usage.prompt_tokens > 8 * 6
    again = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": parts}], max_tokens=6, temperature=0
    )
    assert again.choices[0].message.content == choice.message.content  # greedy: deterministic
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_text_only_and_system_messages(url):
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    messages = [{"role": "system", "content": "You judge robots."}, {"role": "user", "content": "Hello"}]
    completion = client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=3)
    assert isinstance(completion.choices[0].message.content, str)


@pytest.mark.parametrize(
    "extra, content, match",
    [
        ({}, [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}], "data:image"),
        ({}, [{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}], "base64 image"),
        ({}, [{"type": "audio"}], "text or image_url"),
        ({"max_tokens": 100000}, "hi", "max_tokens"),
        ({"n": 2}, "hi", "n must be 1"),
    ],
)
def test_bad_requests_are_400(url, extra, content, match):
    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.BadRequestError, match=match):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}], **extra)


def test_vlm_judge_round_trip(url):
    judge = VLMJudge(JudgeSettings(url, "tiny", max_tokens=4, timeout=60, max_retries=0))
    frames = [png(k)[1] for k in range(12)]
    result = judge.score(frames)
    # random weights: the text is gibberish, so the score is usually missing; the protocol is what counts
    assert isinstance(result.text, str) and result.failure in (None, "unparsable")
    assert judge.stats().requests == 1
    judge.close()
    assert np.all([f.dtype == np.uint8 for f in frames])


@pytest.mark.slow
def test_local_model_directory_with_a_tokenizer(tmp_path):
    from _tiny_ckpt import build_tiny_model_dir

    chat = ChatModel.from_source(str(build_tiny_model_dir(tmp_path / "qwen")))
    assert chat.name == "qwen" and chat.tokenizer.chat_template is not None  # ours: the directory brings none
    frame = f"data:image/png;base64,{b64(png(0)[0])}"
    content = [{"type": "text", "text": "Score?"}, {"type": "image_url", "image_url": {"url": frame}}]
    answer = chat.complete({"model": "qwen", "messages": [{"role": "user", "content": content}], "max_tokens": 3})
    assert answer["object"] == "chat.completion" and isinstance(answer["choices"][0]["message"]["content"], str)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="tokenizer"):
        ChatModel.from_source(str(tmp_path / "bare"))


@pytest.mark.slow
def test_serve_judge_adds_the_chat_routes_to_the_inference_server(tmp_path):
    from _tiny_ckpt import build_tiny_checkpoint

    from sb3_vlm.cli import build_parser
    from sb3_vlm.cli import serve as serve_cli

    ckpt = build_tiny_checkpoint(tmp_path / "checkpoint", num_params=9)
    args = build_parser("serve").parse_args(["serve", "--checkpoint", str(ckpt.path), "--judge", "--judge-name", "j"])
    with running(serve_cli.build_judge_app(args)) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="EMPTY", max_retries=0, timeout=60)
        parts = [{"type": "text", "text": "Score it."}]
        parts += [{"type": "image_url", "image_url": {"url": u}} for u in _frames(8)]
        completion = client.chat.completions.create(
            model="j", messages=[{"role": "user", "content": parts}], max_tokens=4
        )
        assert completion.model == "j" and isinstance(completion.choices[0].message.content, str)
        assert [m.id for m in client.models.list()] == ["j"]
        status, answer = post(f"{base}/infer", {"image_base64": b64(png(0)[0]), "linear_vel": 0.5, "angular_vel": 0})
        assert status == 200 and len(answer["parameters_array"]) == 9  # the policy routes are still there
