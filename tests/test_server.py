"""The real inference server (uvicorn on 127.0.0.1) against the in-process model, and the learner's hand-off."""

from __future__ import annotations

import json
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch as th
from _helpers import b64, free_port, png, post, running
from _tiny_ckpt import TinyCheckpoint, build_tiny_checkpoint
from gymnasium import spaces

from envs.planners import DWA_PARAMS, TEB_PARAMS
from sb3_vlm import VLMDPTExtractor, VLMTD3Policy
from sb3_vlm.cli.serve import add_arguments as add_serve_arguments
from sb3_vlm.cli.serve import max_body_bytes, server_settings
from sb3_vlm.formats.checkpoint import atomic_directory
from sb3_vlm.formats.trajectories import resize_image
from sb3_vlm.serving.app import build_app
from sb3_vlm.serving.client import QwenClient
from sb3_vlm.serving.handoff import publish_policy
from sb3_vlm.serving.server import PolicyServer, RequestError, ServerSettings

H, W = 56, 84
MAX_BODY = 256 * 1024
DWA_NAMES = list(DWA_PARAMS.names)
SFT_NAMES = [*DWA_NAMES, "next_linear_vel", "next_angular_vel"]
OBS_SPACE = spaces.Dict(
    {
        "image": spaces.Box(0, 255, (3, H, W), np.uint8),
        "velocity": spaces.Box(-np.inf, np.inf, (2,), np.float32),
    }
)
ACTION_SPACE = spaces.Box(DWA_PARAMS.low, DWA_PARAMS.high, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------- helpers


def obs_of(arrays: list[np.ndarray], velocities: list[tuple[float, float]]) -> dict[str, th.Tensor]:
    images = th.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays]))
    return {"image": images, "velocity": th.tensor(velocities, dtype=th.float32)}


def close(actual: list[float], expected: np.ndarray) -> bool:
    return np.allclose(np.asarray(actual), np.asarray(expected, dtype=np.float64), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sft_ckpt(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("sft") / "checkpoint-5000", num_params=9)


@pytest.fixture(scope="module")
def reference(sft_ckpt: TinyCheckpoint) -> VLMDPTExtractor:
    """The in-process model of the SFT checkpoint (adapter merged, as the extractor loads it by default)."""
    return VLMDPTExtractor(OBS_SPACE, backbone=sft_ckpt.path)


@pytest.fixture(scope="module")
def sft_url(sft_ckpt: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # image_path may read the tests' tmp_path directories (all under pytest's base temp), nothing else.
    roots = [tmp_path_factory.getbasetemp()]
    settings = ServerSettings(params=DWA_PARAMS, batch_delay=0.02, image_roots=roots)
    app = build_app(sft_ckpt.path, settings, max_body_bytes=MAX_BODY)
    with running(app) as url:
        yield url


# ------------------------------------------------------------------------------------------------------- SFT serving


def test_routes_and_predictions_equal_the_in_process_model(
    sft_url: str, sft_ckpt: TinyCheckpoint, reference: VLMDPTExtractor, tmp_path: Path
) -> None:
    client = QwenClient(sft_url, timeout=30)
    assert client.num_history_frames == 2  # from GET /config, as FTRL clients read it
    health = client.health()
    assert health["status"] == "ok" and health["model_loaded"] and health["algorithm"] == "DWA"
    assert health["policy_name"] == "dwa_qwen" and health["current_checkpoint"] == str(sft_ckpt.path)
    config = client.get_config()
    assert (config["num_params"], config["use_history"], config["history_dim"]) == (9, True, 256)
    assert config["parameter_names"] == SFT_NAMES and config["mode"] == "sft"
    assert client.list_algorithms() == {"algorithms": ["DWA", "TEB", "MPPI", "DDP"], "current": "DWA"}

    data, array = png(1)
    expected = reference.predict_parameters(obs_of([array], [(0.8, -0.1)]))[0].double().numpy()
    result = client.infer_from_image_bytes(data, 0.8, -0.1)
    assert result["success"] and close(client.get_parameters_array(result), expected)
    assert list(result["parameters"]) == SFT_NAMES
    assert close(list(result["parameters"].values()), expected)
    assert result["checkpoint"] == str(sft_ckpt.path) and result["inference_time"] > 0

    # A file path (FTRL's fallback), over plain HTTP; a name without frame numbers gets the current frame as history.
    frame = tmp_path / "scene.png"
    frame.write_bytes(data)
    status, answer = post(f"{sft_url}/infer", {"image_path": str(frame), "linear_vel": 0.8, "angular_vel": -0.1})
    assert status == 200 and answer["parameters_array"] == result["parameters_array"]
    assert client.infer_from_server(str(frame), 0.8, -0.1)["parameters_array"] == result["parameters_array"]

    # An image of another size is used at its own size (the processor's size rule), as in process.
    other, other_array = png(2, (70, 100))
    expected = reference.predict_parameters(obs_of([other_array], [(0.0, 0.0)]))[0].double().numpy()
    assert close(client.infer_from_image_bytes(other, 0.0, 0.0, algorithm="dwa")["parameters_array"], expected)


def test_image_path_reads_only_inside_the_image_roots(sft_url: str, sft_ckpt: TinyCheckpoint, tmp_path: Path) -> None:
    body = {"linear_vel": 0.0, "angular_vel": 0.0}
    status, answer = post(f"{sft_url}/infer", {**body, "image_path": "/etc/passwd"})
    assert status == 403 and "outside the server's image roots" in answer["detail"]
    (tmp_path / "passwd.png").symlink_to("/etc/passwd")  # a link inside the root to a file outside it
    status, answer = post(f"{sft_url}/infer", {**body, "image_path": str(tmp_path / "passwd.png")})
    assert status == 403
    status, answer = post(f"{sft_url}/infer", {**body, "image_path": str(tmp_path / "missing.png")})
    assert status == 400 and "cannot be read" in answer["detail"]

    no_roots = PolicyServer(sft_ckpt.path, ServerSettings(params=DWA_PARAMS))
    with pytest.raises(RequestError) as refused:
        no_roots.decode_request({**body, "image_path": str(tmp_path / "passwd.png")})
    assert refused.value.status_code == 403 and "--image-root" in refused.value.message
    with pytest.raises(ValueError, match="ServerSettings: image_roots must be existing directories"):
        ServerSettings(image_roots=[tmp_path / "nope"])


def test_history_frames_from_the_client(sft_url: str, reference: VLMDPTExtractor, tmp_path: Path) -> None:
    data, array = png(3)
    expected = reference.predict_parameters(obs_of([array], [(0.5, 0.2)]))[0].double().numpy()
    client = QwenClient(sft_url, timeout=30)
    # History frames equal to the current one: exactly the extractor's input (current frame repeated).
    same = client.infer_from_image_bytes(data, 0.5, 0.2, history_images=[data, data])
    assert close(same["parameters_array"], expected)
    # Real earlier frames (FTRL naming on disk) change the answer, deterministically.
    for k, seed in ((4, 4), (5, 5)):
        (tmp_path / f"FTRL_{k:06d}.png").write_bytes(png(seed)[0])
    (tmp_path / "FTRL_000006.png").write_bytes(data)
    first = client.infer_from_server(str(tmp_path / "FTRL_000006.png"), 0.5, 0.2)
    second = client.infer_from_server(str(tmp_path / "FTRL_000006.png"), 0.5, 0.2)
    assert first["parameters_array"] == second["parameters_array"]
    assert not close(first["parameters_array"], expected)


def test_bad_requests_get_4xx_and_the_server_keeps_serving(sft_url: str, reference: VLMDPTExtractor) -> None:
    data, array = png(7)
    good = {"image_base64": b64(data), "linear_vel": 0.3, "angular_vel": 0.0, "algorithm": "DWA"}
    expected = reference.predict_parameters(obs_of([array], [(0.3, 0.0)]))[0].double().numpy()
    not_png = b"this is not an image" * 10
    truncated = data[: len(data) // 2]
    bad: list[tuple[int, dict[str, Any] | bytes, str]] = [
        (400, {**good, "image_base64": "%%% not base64 %%%"}, "not valid base64"),
        (400, {**good, "image_base64": b64(not_png)}, "not a decodable image"),
        (400, {**good, "image_base64": b64(truncated)}, "not a decodable image"),
        (400, {**good, "history_images_base64": [b64(data), "@@"]}, "history_images_base64[1]"),
        (400, {"linear_vel": 0.1}, "need image_base64"),
        (403, {**good, "image_base64": None, "image_path": "/nonexistent/x.png"}, "outside the server's image roots"),
        (400, {**good, "algorithm": "TEB"}, "serves DWA"),
        (422, {**good, "linear_vel": "fast"}, "valid number"),
        (422, {**good, "angular_vel": True}, "valid number"),
        (422, {**good, "image_base64": 12345}, "valid string"),
        (422, {**good, "history_images_base64": [1, 2]}, "valid string"),
        (422, {**good, "history_images_base64": b64(data)}, "valid list"),
        (422, b'{"image_base64": "abc", "linear_vel": NaN}', "finite number"),
        (422, b'{"image_base64": ', "JSON"),
        (422, b"[1, 2, 3]", "valid dictionary"),
    ]
    for status, payload, message in bad:
        if isinstance(payload, bytes):
            code, answer = post(f"{sft_url}/infer", data=payload)
        else:
            code, answer = post(f"{sft_url}/infer", payload)
        assert code == status, (payload if isinstance(payload, bytes) else list(payload), answer)
        assert message in json.dumps(answer), answer
        # The next good request still gets the right answer.
        code, answer = post(f"{sft_url}/infer", good)
        assert code == 200 and close(answer["parameters_array"], expected)

    # Oversized bodies: by Content-Length (urllib) and streamed without one (chunked, httpx).
    huge = {**good, "history_images_base64": ["A" * MAX_BODY]}
    code, answer = post(f"{sft_url}/infer", huge)
    assert code == 413 and "exceeds the limit" in answer["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"image_base64": "'
        for _ in range(2 * MAX_BODY // 65536):
            yield b"A" * 65536
        yield b'"}'

    with httpx.Client(timeout=30) as http:
        response = http.post(f"{sft_url}/infer", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "exceeds the limit" in response.json()["detail"]
        response = http.post(f"{sft_url}/infer", json=good)
        assert response.status_code == 200 and close(response.json()["parameters_array"], expected)
        assert http.get(f"{sft_url}/health").json()["status"] == "ok"


def test_concurrent_requests_are_batched_and_correct(sft_url: str, reference: VLMDPTExtractor) -> None:
    sizes = [(H, W), (H, W), (70, 100)]  # two image sizes: batched in separate groups
    cases = []
    for i in range(12):
        data, array = png(100 + i, sizes[i % 3])
        velocity = (0.1 * i, -0.05 * i)
        expected = reference.predict_parameters(obs_of([array], [velocity]))[0].double().numpy()
        cases.append((data, velocity, expected))
    results: list[dict | None] = [None] * len(cases)
    barrier = threading.Barrier(6)

    def worker(rank: int) -> None:
        client = QwenClient(sft_url, timeout=60, num_history_frames=0)
        barrier.wait()
        for i in range(rank, len(cases), 6):
            data, velocity, _ = cases[i]
            results[i] = client.infer_from_image_bytes(data, *velocity)

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for (_, _, expected), result in zip(cases, results, strict=True):
        assert result is not None and close(result["parameters_array"], expected)
    assert max(result["batch_size"] for result in results) > 1


# --------------------------------------------------------------------------------------------- actor mode + hand-off


def actor_reference(policy: VLMTD3Policy, array: np.ndarray, velocity: tuple[float, float]) -> np.ndarray:
    obs = {"image": array.transpose(2, 0, 1)[None], "velocity": np.asarray([velocity], np.float32)}
    action, _ = policy.predict(obs, deterministic=True)
    return action[0]


def perturb(policy: VLMTD3Policy, seed: int) -> None:
    """Change the actor head, the DPT head and the LoRA weights in place."""
    generator = th.Generator().manual_seed(seed)
    ext = policy.features_extractor
    with th.no_grad():
        tensors = [*policy.actor.mu.parameters(), *ext.dpt.parameters()]
        tensors += [p for n, p in ext.backbone.named_parameters() if "lora_B" in n]
        for tensor in tensors:
            tensor.add_(0.2 * th.randn(tensor.shape, generator=generator))


def test_publish_policy_reloads_the_actor_server(sft_ckpt: TinyCheckpoint, tmp_path: Path) -> None:
    policy = VLMTD3Policy.from_pretrained(sft_ckpt.path, OBS_SPACE, ACTION_SPACE, freeze_vlm=False)
    policy.set_training_mode(False)
    directory = tmp_path / "buffer" / "policy"
    assert publish_policy(policy, directory, parameter_names=DWA_NAMES).ok
    data, array = png(11)
    resized, resized_source = png(12, (80, 120))  # resized to the policy's 56 x 84 like the replay images
    small = resize_image(resized_source, (H, W))

    # Ranges, names and observation size come from the published directory: no parameter table needed.
    actor_app = build_app(directory, ServerSettings(mode="actor", batch_delay=0.0))
    sft_app = build_app(directory, ServerSettings(params=DWA_PARAMS))  # FTRL: the SFT head on the RL-updated weights
    with running(actor_app) as actor_url, running(sft_app) as sft_url:
        client = QwenClient(actor_url, timeout=30)
        assert client.num_history_frames == 0  # actor mode repeats the current frame, as in training
        config = client.get_config()
        assert config["mode"] == "actor" and config["parameter_names"] == DWA_NAMES and config["use_history"]

        before = client.infer_from_image_bytes(data, 0.4, 0.1)
        assert list(before["parameters"]) == DWA_NAMES
        assert close(before["parameters_array"], actor_reference(policy, array, (0.4, 0.1)))
        assert np.all(np.abs(before["action"]) <= 1.0)
        answer = client.infer_from_image_bytes(resized, 0.4, 0.1)
        assert close(answer["parameters_array"], actor_reference(policy, small, (0.4, 0.1)))

        # Hand-off: new LoRA, DPT and actor weights; both servers (and one that is down) are asked to reload.
        perturb(policy, seed=1)
        dead = f"http://127.0.0.1:{free_port()}"
        result = publish_policy(policy, directory, [actor_url, sft_url, dead], parameter_names=DWA_NAMES, timeout=30)
        assert set(result.reloaded) == {actor_url, sft_url} and set(result.failed) == {dead}
        assert all(answer["reload"] == "in_place" for answer in result.reloaded.values())
        after = client.infer_from_image_bytes(data, 0.4, 0.1)
        expected = actor_reference(policy, array, (0.4, 0.1))
        assert close(after["parameters_array"], expected) and not close(before["parameters_array"], expected)
        assert client.health()["model_version"] == 1

        sft_expected = VLMDPTExtractor(OBS_SPACE, backbone=directory).predict_parameters(obs_of([array], [(0.4, 0.1)]))
        sft_answer = QwenClient(sft_url, num_history_frames=0).infer_from_image_bytes(data, 0.4, 0.1)
        assert close(sft_answer["parameters_array"], sft_expected[0].double().numpy())

        # Exploration noise, set by the learner at hand-off: in [-1, 1] action units, then physical.
        assert not (directory / "exploration_noise.pkl").exists()  # published without a noise: none written
        noisy = publish_policy(policy, directory, [actor_url], noise_std=0.5)
        assert noisy.ok and noisy.reloaded[actor_url]["noise_std"] == 0.5
        assert pickle.loads((directory / "exploration_noise.pkl").read_bytes()) == 0.5  # FTRL's collectors read it
        answers = [client.infer_from_image_bytes(data, 0.4, 0.1) for _ in range(3)]
        arrays = np.array([a["parameters_array"] for a in answers])
        assert not np.allclose(arrays[0], arrays[1]) and not np.allclose(arrays[0], expected)
        assert np.all(arrays >= DWA_PARAMS.low - 1e-5) and np.all(arrays <= DWA_PARAMS.high + 1e-5)
        for answer in answers:
            assert close(answer["parameters_array"], DWA_PARAMS.from_unit(np.asarray(answer["action"])))
        assert post(f"{actor_url}/reload", {"noise_std": 0.0})[0] == 200

        # Another actor architecture cannot load in place: the server rebuilds the model.
        wider = VLMTD3Policy.from_pretrained(
            sft_ckpt.path, OBS_SPACE, ACTION_SPACE, freeze_vlm=False, net_arch=dict(pi=[16])
        )
        wider.set_training_mode(False)
        rebuilt = publish_policy(wider, directory, [actor_url], parameter_names=DWA_NAMES)
        assert rebuilt.reloaded[actor_url]["reload"] == "rebuild"
        answer = client.infer_from_image_bytes(data, 0.4, 0.1)
        assert close(answer["parameters_array"], actor_reference(wider, array, (0.4, 0.1)))

        # A broken directory: the reload fails (500) and the previous model keeps serving.
        with atomic_directory(directory) as staging:
            (staging / "regression_head").mkdir()
        status, failure = post(f"{actor_url}/reload", data=b"")
        assert status == 500 and "reload failed" in failure["detail"]
        assert client.infer_from_image_bytes(data, 0.4, 0.1)["parameters_array"] == answer["parameters_array"]


# ------------------------------------------------------------------------------------------------ construction errors


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"mode": "critic"}, "ServerSettings: mode must be one of"),
        ({"noise_std": 0.1}, "noise_std > 0 needs mode='actor'"),
        ({"history": "all"}, "ServerSettings: history must be one of"),
        ({"max_batch_size": 0}, "ServerSettings: max_batch_size must be a positive int, got 0"),
        ({"batch_delay": -1}, "ServerSettings: batch_delay must be >= 0 s, got -1"),
    ],
)
def test_server_settings_check_themselves(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerSettings(**bad)


def test_bad_server_arguments(sft_ckpt: TinyCheckpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"no actor_head/ \(mode='actor'"):
        PolicyServer(sft_ckpt.path, ServerSettings(mode="actor", params=DWA_PARAMS))
    table = type("Table", (), {"names": DWA_PARAMS.names[:5], "low": 0, "high": 1})()
    with pytest.raises(ValueError, match="predicts 9 values but the parameter table has 5"):
        PolicyServer(sft_ckpt.path, ServerSettings(params=table))
    policy = VLMTD3Policy.from_pretrained(sft_ckpt.path, OBS_SPACE, ACTION_SPACE)
    plain = policy.save_pretrained(tmp_path / "plain")  # no hand-off metadata: ranges must be given
    with pytest.raises(ValueError, match=r"needs the physical parameter ranges: pass params="):
        PolicyServer(plain, ServerSettings(mode="actor"))
    with pytest.deprecated_call(match="PolicyServer: .* pass a ServerSettings"):  # the call form of sb3-vlm 0.1
        server = PolicyServer(plain, "actor", params=DWA_PARAMS)
    assert server.settings == ServerSettings(mode="actor", params=DWA_PARAMS)
    assert server.config()["parameter_names"] == DWA_NAMES and server.config()["num_history_frames"] == 0

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r'pip install "sb3-vlm\[serve\]"'):
        build_app(server=server)


def test_serve_arguments() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--lora_path", "ckpt", "--mode", "actor", "--input-size", "56x84", "--load_in_4bit"])
    assert (args.checkpoint, args.mode, args.input_size, args.quantization) == ("ckpt", "actor", (56, 84), "nf4")
    assert (args.host, args.port, args.history, args.image_root) == ("127.0.0.1", 5000, None, [])
    args = parser.parse_args(["--checkpoint", "c", "--image-root", "/data/a", "--image-root", "/data/b"])
    assert args.image_root == [Path("/data/a"), Path("/data/b")]
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoint", "c", "--input-size", "56"])
    args = parser.parse_args(["--checkpoint", "c", "--mode", "actor", "--algorithm", "teb", "--batch-delay-ms", "2"])
    settings = server_settings(args)
    assert (settings.mode, settings.algorithm, settings.params, settings.batch_delay) == (
        "actor",
        "TEB",
        TEB_PARAMS,
        0.002,
    )
    assert settings.history_source == "current" and max_body_bytes(args) == 8 << 20
