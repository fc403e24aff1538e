"""The judge's pure parts: score parser, frame sampling, episode frame buffer, image encoding, prompt template."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from sb3_vlm.rewards.scoring import DEFAULT_PROMPT, encode_image, parse_score, render_prompt, sample_frames
from sb3_vlm.rewards.wrappers import EpisodeFrames


@pytest.mark.parametrize(
    "text, score",
    [
        ("[SCORE] 7", 7.0),
        ("[SCORE]: 7.5", 7.5),
        ("[score] = 3", 3.0),
        ("**[SCORE]**: 9", 9.0),
        ("The robot hesitates twice near the wall.\n[SCORE] 6", 6.0),
        ("I answer as [SCORE] <number>.\nThe run is clean.\n[SCORE] 4", 4.0),  # the last tag counts
        ("[SCORE] 0.7/1", 7.0),  # a fraction after the tag
        ("8/10", 8.0),
        ("Overall: 8 / 10", 8.0),
        ("I'd give it 4 out of 5", 8.0),
        ("7", 7.0),
        (" 6.5. ", 6.5),
        ("[SCORE] 15", 10.0),  # clipped
        ("[SCORE] -3", 0.0),
        ("", None),
        (None, None),
        ("a careful, smooth run", None),
        ("[SCORE] high", None),
        ("3/0", None),  # no denominator
    ],
)
def test_parse_score_documented_formats(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize(
    "text, low, high, score",
    [("7/10", 0.0, 1.0, 0.7), ("[SCORE] 0.25", 0.0, 1.0, 0.25), ("[SCORE] 3", -1.0, 1.0, 1.0), ("1/4", -1, 1, -0.5)],
)
def test_parse_score_custom_range(text, low, high, score):
    assert parse_score(text, low, high) == pytest.approx(score)


def test_sample_frames_even_first_and_last():
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(22)]
    picked = [int(f[0, 0, 0]) for f in sample_frames(frames, 8)]
    assert picked == [0, 3, 6, 9, 12, 15, 18, 21]
    assert len(sample_frames(frames[:5], 8)) == 5


@pytest.mark.parametrize("length", [1, 7, 64, 65, 200, 1000])
def test_episode_frames_keep_an_even_sample_in_bounded_memory(length):
    def frame(t):
        return np.array([[[t // 256, t % 256, 0]]], np.uint8)

    buf = EpisodeFrames("terminal", window=4, capacity=64)
    buf.reset(frame(0))
    for t in range(1, length):
        buf.add(frame(t))
        assert len(buf.kept) <= 64
    got = [256 * int(f[0, 0, 0]) + int(f[0, 0, 1]) for f in buf.frames()]
    assert got[0] == 0 and got[-1] == length - 1 and got == sorted(set(got))
    if length >= 64:
        assert 32 <= len(got) <= 65
        stride = np.diff(got[:-1])
        assert (stride == stride[0]).all() and got[-1] - got[-2] <= stride[0]  # evenly spaced, plus the latest


def test_episode_frames_window():
    buf = EpisodeFrames("window", window=3, capacity=64)
    buf.reset(np.zeros((1, 1, 3), np.uint8))
    due = []
    for t in range(1, 8):
        buf.add(np.full((1, 1, 3), t, np.uint8))
        if buf.window_due():
            due.append([int(f[0, 0, 0]) for f in buf.frames()])
    assert due == [[1, 2, 3], [4, 5, 6]]


def test_added_frames_are_copies():
    buf = EpisodeFrames("terminal", window=4, capacity=8)
    frame = np.zeros((1, 1, 3), np.uint8)
    buf.reset(frame)
    frame[:] = 9  # an env reusing its observation buffer must not change what is judged
    assert int(buf.frames()[0][0, 0, 0]) == 0


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_encode_image_data_url(fmt):
    frame = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    url = encode_image(frame, (28, 56), fmt)
    prefix = f"data:image/{fmt};base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == fmt.upper() and image.size == (56, 28)
    same = Image.open(io.BytesIO(base64.b64decode(encode_image(frame, None, "png")[22:])))
    assert np.array_equal(np.asarray(same), frame)  # PNG at its own size: the pixels themselves


def test_encode_image_channels_first_and_float():
    frame = np.random.default_rng(1).integers(0, 256, (3, 10, 12), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(encode_image(frame, None, "png")[22:]))))
    assert np.array_equal(decoded, frame.transpose(1, 2, 0))
    grey = encode_image(np.ones((5, 5), np.float32) * 0.5, None, "png")
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(grey[22:]))))[0, 0, 0] == 128
    with pytest.raises(ValueError, match="got shape"):
        encode_image(np.zeros((2, 3, 5, 5), np.uint8), None, "png")


def test_prompt_template():
    text = render_prompt(DEFAULT_PROMPT, "stay on the path", 8, 0.0, 10.0)
    assert "stay on the path" in text and "8 images" in text and "from 0 (worst) to 10 (best)" in text
    assert "[SCORE]" in text
    with pytest.raises(ValueError, match="prompt_template"):
        render_prompt("Rate {speed}", "t", 8, 0, 10)
