"""VLMJudge and its reward wrappers against a real HTTP server on 127.0.0.1, through the official openai client."""

import base64
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("openai")

from _helpers import free_port  # noqa: E402
from _judge_server import Reply, judge_server  # noqa: E402
from _laser_env import dict_image_env, image_env  # noqa: E402

from sb3_vlm.callbacks import JudgeLogCallback  # noqa: E402
from sb3_vlm.rewards import VecVLMJudgeReward, VLMJudge, VLMJudgeReward  # noqa: E402
from sb3_vlm.rewards.judge import JudgeSettings  # noqa: E402


@pytest.fixture
def server():
    with judge_server() as s:
        yield s


def _frames(n, size=(12, 16)):
    return [np.full((*size, 3), i, dtype=np.uint8) for i in range(n)]


def _pixels(part):
    url = part["image_url"]["url"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _judge(url, **kwargs):
    kwargs = {"timeout": 2.0, "max_retries": 0, **kwargs}
    return VLMJudge(JudgeSettings(url, "judge-test", **kwargs))


# ---------------------------------------------------------------------------------------------------- the request
def test_request_is_openai_chat_with_evenly_sampled_frames(server, monkeypatch, caplog):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-secret-123")
    caplog.set_level(logging.DEBUG)
    judge = _judge(server.url, api_key_env="JUDGE_TEST_KEY", task="park nicely", temperature=0.2, max_tokens=32)
    result = judge.score(_frames(22))
    assert result.ok and result.score == 7.0 and result.text == "[SCORE] 7" and not result.cached
    (request,) = server.completions()
    body = request.body
    assert body["model"] == "judge-test" and body["temperature"] == 0.2 and body["max_tokens"] == 32
    (message,) = body["messages"]
    assert message["role"] == "user"
    text, *images = message["content"]
    assert text["type"] == "text" and "park nicely" in text["text"] and "8 images" in text["text"]
    assert [p["type"] for p in images] == ["image_url"] * 8
    assert [int(_pixels(p)[0, 0, 0]) for p in images] == [0, 3, 6, 9, 12, 15, 18, 21]
    assert request.headers["authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in repr(judge) and "sk-secret-123" not in caplog.text
    assert not any("sk-secret-123" in str(v) for v in vars(judge).values())
    judge.close()


def test_image_size_and_jpeg(server):
    judge = _judge(server.url, image_size=(28, 42), image_format="jpeg", num_frames=2)
    assert judge.score(_frames(5, size=(56, 84))).ok
    images = server.completions()[0].body["messages"][0]["content"][1:]
    assert len(images) == 2 and all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in images)
    assert _pixels(images[0]).shape == (28, 42, 3)


@pytest.mark.parametrize(
    "text, score", [("[SCORE] 3", 3.0), ("[SCORE]: 4.5", 4.5), ("Fine run. 9/10", 9.0), ("[SCORE] 42", 10.0)]
)
def test_scores_parsed_from_the_answer(server, text, score):
    server.default = Reply(text)
    assert _judge(server.url).score(_frames(3)).score == score


# ------------------------------------------------------------------------------------------------------- the cache
def test_cache_same_frames_scored_once(server):
    judge = _judge(server.url)
    frames = _frames(10)
    first, second = judge.score(frames), judge.score([f.copy() for f in frames])
    assert (first.cached, second.cached) == (False, True) and second.score == first.score
    assert len(server.completions()) == 1
    judge.score(_frames(11))  # other frames: a new request
    other = _judge(server.url, task="another task")  # other prompt: a new request even with the same frames
    other.score(frames)
    assert len(server.completions()) == 3
    stats = judge.stats()
    assert (stats.requests, stats.cache_hits, stats.scored, stats.failures) == (2, 1, 3, 0)


def test_identical_requests_in_flight_share_one_call(server):
    server.default = Reply(delay=0.3)
    judge = _judge(server.url)
    futures = [judge.submit(_frames(6)) for _ in range(4)]
    assert {f.result().score for f in futures} == {7.0}
    assert len(server.completions()) == 1


def test_concurrency_limit(server):
    server.default = Reply(delay=0.25)
    judge = _judge(server.url, max_concurrency=2)
    start = time.perf_counter()
    futures = [judge.submit(_frames(3 + k)) for k in range(6)]
    assert all(f.result().ok for f in futures)
    assert server.peak_active == 2
    assert 0.7 < time.perf_counter() - start < 2.0  # 3 rounds of 2, not 6 in a row nor 6 at once


# ------------------------------------------------------------------------------------------------------- failures
def test_slow_server_times_out(server):
    server.default = Reply(delay=3.0)
    judge = _judge(server.url, timeout=0.3)
    start = time.perf_counter()
    result = judge.score(_frames(4))
    assert result.failure == "timeout" and result.score is None
    assert time.perf_counter() - start < 1.5
    assert judge.stats().failures_by_kind["timeout"] == 1


def test_5xx_retried_with_backoff(server):
    wait = {"retry-after-ms": "100"}  # the server's delay, honoured by the client (else 0.5 s doubling)
    server.script = [Reply(status=503, headers=wait), Reply(status=500, headers=wait)]
    judge = _judge(server.url, max_retries=2)
    start = time.perf_counter()
    result = judge.score(_frames(4))
    assert result.ok and result.score == 7.0 and time.perf_counter() - start >= 0.2
    assert len(server.completions()) == 3
    assert judge.stats().failures == 0


def test_5xx_after_retries_is_an_http_failure(server):
    server.default = Reply(status=500, headers={"retry-after-ms": "10"})
    judge = _judge(server.url, max_retries=1)
    assert judge.score(_frames(4)).failure == "http"
    assert len(server.completions()) == 2


def test_unparsable_answer(server):
    server.default = Reply("What a lovely robot!")
    judge = _judge(server.url)
    result = judge.score(_frames(4))
    assert result.failure == "unparsable" and result.text == "What a lovely robot!"
    server.default = Reply(None)  # content: null
    assert judge.score(_frames(5)).failure == "unparsable"
    assert judge.stats().failures_by_kind["unparsable"] == 2
    assert judge.score(_frames(4)).failure == "unparsable"  # failures are not cached: asked again
    assert len(server.completions()) == 3


def test_closed_port_and_breaker():
    judge = _judge(f"http://127.0.0.1:{free_port()}/v1", breaker_failures=2, breaker_cooldown=60)
    assert [judge.score(_frames(3 + k)).failure for k in range(4)] == ["connection", "connection", "breaker", "breaker"]
    stats = judge.stats()
    assert stats.requests == 2 and stats.failures == 4


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"prompt_template": "{nope}"}, "prompt_template"),
        ({"score_range": (5, 5)}, r"JudgeSettings: score_range must be \(low, high\) with low < high, got \(5, 5\)"),
        ({"num_frames": 0}, "JudgeSettings: num_frames must be a positive int, got 0"),
        ({"image_format": "gif"}, "JudgeSettings: image_format must be 'png' or 'jpeg', got 'gif'"),
        ({"image_size": (28, 0)}, r"JudgeSettings: image_size must be None or \(height, width\) positive ints"),
        ({"timeout": 0}, "JudgeSettings: timeout must be > 0 s, got 0"),
        ({"max_retries": -1}, "JudgeSettings: max_retries must be an int >= 0, got -1"),
        ({"max_concurrency": 0}, "JudgeSettings: max_concurrency must be a positive int, got 0"),
    ],
)
def test_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        JudgeSettings("http://127.0.0.1:1/v1", "m", **bad)


def test_settings_from_json_lists_and_the_old_call_form():
    settings = JudgeSettings("http://127.0.0.1:1/v1", "m", image_size=[28, 42], score_range=[0, 1])
    assert (settings.image_size, settings.score_range) == ((28, 42), (0.0, 1.0))
    with pytest.deprecated_call(match="VLMJudge: .* pass a JudgeSettings"):  # the call form of sb3-vlm 0.1
        judge = VLMJudge("http://127.0.0.1:1/v1", "m", num_frames=3)
    assert judge.settings == JudgeSettings("http://127.0.0.1:1/v1", "m", num_frames=3) and judge.num_frames == 3
    judge.close()


# ---------------------------------------------------------------------------------------------- gymnasium wrapper
def _run_episode(env, seed=0):
    obs, _ = env.reset(seed=seed)
    seen, rewards, infos, done = [obs], [], [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        seen.append(obs)
        rewards.append(reward)
        infos.append(info)
        done = terminated or truncated
    return seen, rewards, infos


def test_terminal_mode_adds_the_score_to_the_last_reward(server):
    judge = _judge(server.url)
    plain, wrapped = image_env(horizon=10), VLMJudgeReward(image_env(horizon=10), judge, judge_weight=0.5)
    plain.action_space.seed(0)
    wrapped.action_space.seed(0)
    _, base, _ = _run_episode(plain)
    seen, rewards, infos = _run_episode(wrapped)
    assert rewards[:-1] == pytest.approx(base[:-1]) and rewards[-1] == pytest.approx(base[-1] + 0.5 * 7.0)
    assert infos[-1]["judge_score"] == 7.0 and infos[-1]["judge_failures"] == 0
    assert not any("judge_score" in i for i in infos[:-1])
    (request,) = server.completions()
    images = [_pixels(p) for p in request.body["messages"][0]["content"][1:]]
    assert len(images) == 8
    assert np.array_equal(images[0], seen[0]) and np.array_equal(images[-1], seen[-1])  # reset and final frames


def test_window_mode_and_dict_observation(server):
    judge = _judge(server.url)
    env = VLMJudgeReward(dict_image_env(horizon=10), judge, mode="window", window=4, env_weight=0.0)
    seen, rewards, infos = _run_episode(env)
    judged = [t for t, info in enumerate(infos) if "judge_score" in info]
    assert judged == [3, 7, 9]  # after steps 4 and 8, then the episode's end
    assert [rewards[t] for t in judged] == [7.0, 7.0, 7.0] and sum(rewards) == 21.0
    sizes = [len(r.body["messages"][0]["content"]) - 1 for r in server.completions()]
    assert sizes == [4, 4, 4]
    last = [_pixels(p) for p in server.completions()[-1].body["messages"][0]["content"][1:]]
    assert all(np.array_equal(a, s["image"]) for a, s in zip(last, seen[-4:], strict=True))


def test_failure_keeps_the_env_reward(server):
    server.default = Reply("no score here")
    judge = _judge(server.url)
    plain, wrapped = image_env(horizon=5), VLMJudgeReward(image_env(horizon=5), judge)
    plain.action_space.seed(0)
    wrapped.action_space.seed(0)
    _, base, _ = _run_episode(plain)
    _, rewards, infos = _run_episode(wrapped)
    assert rewards == pytest.approx(base)
    assert infos[-1]["judge_failure"] == "unparsable" and infos[-1]["judge_failures"] == 1 and wrapped.failures == 1
    with_default = VLMJudgeReward(image_env(horizon=5), judge, failure_score=5.0, judge_weight=2.0)
    with_default.action_space.seed(0)
    _, rewards, _ = _run_episode(with_default)
    assert rewards[-1] == pytest.approx(base[-1] + 10.0)


def test_barn_nav_top_down_frames(server):
    import gymnasium as gym

    import envs  # noqa: F401

    env = VLMJudgeReward(gym.make("BarnNav-v0", render_mode="rgb_array", max_steps=4), _judge(server.url))
    _, _, infos = _run_episode(env)
    assert infos[-1]["judge_score"] == 7.0
    images = [_pixels(p) for p in server.completions()[0].body["messages"][0]["content"][1:]]
    assert len(images) == 5 and images[0].shape == env.render().shape  # reset + 4 steps, top-down view
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        VLMJudgeReward(gym.make("BarnNav-v0"), _judge(server.url))


def test_wrapper_bad_arguments(server):
    judge = _judge(server.url)
    with pytest.raises(ValueError, match="mode"):
        VLMJudgeReward(image_env(), judge, mode="every")
    with pytest.raises(ValueError, match="window"):
        VLMJudgeReward(image_env(), judge, mode="window", window=0)
    with pytest.raises(TypeError, match="VLMJudge"):
        VLMJudgeReward(image_env(), "http://localhost:8000/v1")


# ------------------------------------------------------------------------------------------------- VecEnv wrapper
def _vec(n, judge, **kwargs):
    from envs import BarnNavVecEnv

    venv = BarnNavVecEnv(n, observation="costmap", max_steps=kwargs.pop("max_steps", 5))
    venv.seed(0)
    return VecVLMJudgeReward(venv, judge, **kwargs)


def _step_to_end(venv):
    venv.reset()
    action = np.tile(venv.action_space.low + 0.5 * (venv.action_space.high - venv.action_space.low), (venv.num_envs, 1))
    while True:
        start = time.perf_counter()
        obs, rewards, dones, infos = venv.step(action)
        if dones.any():
            return rewards, dones, infos, time.perf_counter() - start


def test_vec_terminal_mode_judges_all_envs_together(server):
    server.default = Reply(delay=0.3)
    venv = _vec(4, _judge(server.url), env_weight=0.0)
    rewards, dones, infos, seconds = _step_to_end(venv)
    assert dones.all() and rewards.tolist() == [7.0] * 4
    assert all(info["judge_score"] == 7.0 for info in infos)
    assert server.peak_active == 4 and seconds < 0.9  # four concurrent requests: one delay, not four
    for request in server.completions():
        assert len(request.body["messages"][0]["content"]) == 1 + 6  # prompt, reset frame + 5 steps
    finals = {_pixels(r.body["messages"][0]["content"][-1]).tobytes() for r in server.completions()}
    assert finals == {info["terminal_observation"].tobytes() for info in infos}


def test_vec_slow_judge_never_blocks_longer_than_max_wait(server):
    server.default = Reply(delay=5.0)
    judge = _judge(server.url, timeout=10.0)
    venv = _vec(3, judge, max_wait=0.3)
    rewards, dones, infos, seconds = _step_to_end(venv)
    assert seconds < 0.8
    assert [info["judge_failure"] for info in infos] == ["deadline"] * 3
    assert judge.stats().failures_by_kind["deadline"] == 3 and venv.failures == 3


def test_vec_window_mode(server):
    venv = _vec(2, _judge(server.url), mode="window", window=2, env_weight=0.0, max_steps=5)
    venv.reset()
    action = np.tile(venv.action_space.high, (2, 1))
    per_step = [venv.step(action)[1].tolist() for _ in range(5)]
    assert per_step == [[0.0, 0.0], [7.0, 7.0], [0.0, 0.0], [7.0, 7.0], [7.0, 7.0]]


def test_vec_render_frames(server):
    from envs import BarnNavVecEnv

    venv = BarnNavVecEnv(2, observation="laser", max_steps=3)
    venv.seed(0)
    wrapped = VecVLMJudgeReward(venv, _judge(server.url))
    assert wrapped.frame_source == "render"
    _, _, infos, _ = _step_to_end(wrapped)
    images = [_pixels(p) for p in server.completions()[0].body["messages"][0]["content"][1:]]
    assert len(images) == 3 and images[0].shape == venv.get_images()[0].shape  # reset + 2 steps (see the doc)
    with pytest.raises(ValueError, match="image observation"):
        VecVLMJudgeReward(venv, _judge(server.url), frame_source="observation")


# ------------------------------------------------------------------------------------------------- SB3 training
def _train(url, tmp_path, steps=300, **judge_kwargs):
    import torch
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import configure

    from envs import BarnNavVecEnv

    judge = VLMJudge(JudgeSettings(url, "judge-test", **{"timeout": 0.5, "max_retries": 0, **judge_kwargs}))
    venv = BarnNavVecEnv(2, observation="laser", max_steps=15)
    env = VecVLMJudgeReward(venv, judge, env_weight=0.0, max_wait=0.5)
    model = TD3("MlpPolicy", env, learning_starts=50, batch_size=16, policy_kwargs={"net_arch": [16]}, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv", "tensorboard"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: extra threads only contend with the other tests' processes
    try:
        model.learn(steps, callback=JudgeLogCallback(judge), log_interval=1)
    finally:
        torch.set_num_threads(threads)
        judge.close()
    rows = [row.split(",") for row in (tmp_path / "progress.csv").read_text().splitlines()]
    # SB3 dumps once per finished episode and clears the values: take each judge/ key's last written value
    logged = {k: row[j] for row in rows[1:] for j, k in enumerate(rows[0]) if k.startswith("judge/") and row[j]}
    n = model.replay_buffer.pos
    return model, env, judge, logged, model.replay_buffer.rewards[:n], model.replay_buffer.dones[:n]


def test_td3_trains_with_the_judge_answering(server, tmp_path):
    model, env, judge, logged, rewards, dones = _train(server.url, tmp_path)
    assert model.num_timesteps == 300 and len(rewards) == 150  # 2 envs: no transition lost
    assert set(rewards[dones == 1].tolist()) == {7.0} and not rewards[dones == 0].any()  # judge reward only
    stats = judge.stats()
    assert stats.failures == 0 and stats.requests + stats.cache_hits == int(dones.sum())
    assert float(logged["judge/failures"]) == 0 and float(logged["judge/requests"]) > 0 and "judge/latency_ms" in logged
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert {"judge/failures", "judge/latency_ms", "judge/cache_hits"} <= set(accumulator.Tags()["scalars"])


@pytest.mark.parametrize("state", ["dead", "late", "garbage", pytest.param("flaky", marks=pytest.mark.slow)])
def test_td3_training_survives_a_failing_judge(server, tmp_path, state):
    url = server.url
    if state == "dead":
        url = f"http://127.0.0.1:{free_port()}/v1"
    elif state == "late":
        server.default = Reply(delay=1.0)
    elif state == "garbage":
        server.default = Reply("I cannot rate videos.")
    else:
        server.default = lambda body: Reply(status=500) if len(body["messages"][0]["content"]) % 2 else Reply()
    model, env, judge, logged, rewards, dones = _train(url, tmp_path, steps=200, timeout=0.1, breaker_failures=0)
    assert model.num_timesteps == 200 and len(rewards) == 100
    stats = judge.stats()
    kind = {"dead": "connection", "late": "timeout", "garbage": "unparsable", "flaky": "http"}[state]
    assert stats.failures_by_kind[kind] >= 1 and float(logged["judge/failures"]) == stats.failures
    assert float(logged[f"judge/failures_{kind}"]) >= 1
    assert env.failures == int(dones.sum()) - stats.scored
    if state != "flaky":
        assert not rewards.any()  # env_weight 0 and no score: the episodes keep their (zero-weighted) env reward


def test_judge_from_many_threads(server):
    judge = _judge(server.url, max_concurrency=4)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda k: judge.score(_frames(2 + k % 5)), range(40)))
    assert all(r.score == 7.0 for r in results)
    assert len(server.completions()) == judge.stats().requests == 5  # from the cache or an identical call in flight


# ------------------------------------------------------------------------------------------ collector records, CLI
def test_judge_ftrl_episode_records(server):
    from sb3_vlm.rewards import judge_ftrl_episode

    records = [[np.zeros((1, 2)), np.zeros(7), -1.0, t == 2, {"status": "running"}, 0.0, 0.0] for t in range(3)]
    result = judge_ftrl_episode(records, _frames(4), _judge(server.url), judge_weight=2.0)
    assert result.ok and records[-1][4]["judge_score"] == 7.0 and records[-1][2] == 13.0
    assert [r[2] for r in records[:-1]] == [-1.0, -1.0] and "judge_score" not in records[0][4]
    server.default = Reply(delay=2.0)
    records[-1][2] = -1.0
    judge_ftrl_episode(records, _frames(5), _judge(server.url, timeout=5.0), max_wait=0.2)
    assert records[-1][4]["judge_failure"] == "deadline" and records[-1][2] == -1.0


def test_cli_judge_options(server, tmp_path):
    import argparse
    import json

    from envs import BarnNavVecEnv
    from sb3_vlm.cli import judge_options
    from sb3_vlm.rewards.build import judge_reward

    parser = argparse.ArgumentParser()
    judge_options.add_arguments(parser)
    venv = BarnNavVecEnv(1, observation="costmap", max_steps=3)
    assert judge_options.judge_settings(parser.parse_args([])) is None
    assert judge_reward(venv, None) == (venv, [])
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Task: {task}. {num_frames} frames. Score {low}-{high}: [SCORE] n")
    argv = ["--judge-url", server.url, "--judge-model", "judge-test", "--judge-task", "no zigzag", "--judge-mode"]
    argv += ["window", "--judge-window", "2", "--judge-env-weight", "0", "--judge-image-size", "28x42"]
    argv += ["--judge-prompt-file", str(prompt), "--judge-score-range", "0", "1", "--judge-frames", "4"]
    settings = judge_options.judge_settings(parser.parse_args(argv))
    settings = json.loads(json.dumps(settings))  # what run_config.json keeps for a resumed run
    wrapped, callbacks = judge_reward(venv, settings)
    assert isinstance(wrapped, VecVLMJudgeReward) and isinstance(callbacks[0], JudgeLogCallback)
    assert wrapped.judge.image_size == (28, 42) and (wrapped.judge.low, wrapped.judge.high) == (0.0, 1.0)
    wrapped.reset()
    server.default = Reply("[SCORE] 0.5")
    rewards = [wrapped.step(np.tile(venv.action_space.high, (1, 1)))[1][0] for _ in range(2)]
    assert rewards == [0.0, 0.5]
    text = server.completions()[0].body["messages"][0]["content"][0]["text"]
    assert text == "Task: no zigzag. 2 frames. Score 0.0-1.0: [SCORE] n"
    render = judge_options.judge_settings(parser.parse_args([*argv, "--judge-frame-source", "render"]))
    assert judge_reward(venv, render)[0].frame_source == "render"
    with pytest.raises(ValueError, match="--judge-model"):
        judge_options.judge_settings(parser.parse_args(["--judge-url", server.url]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--judge-image-size", "big"])


def test_collect_writes_judge_scores_into_the_pickles(server, tmp_path):
    from sb3_vlm.cli import main
    from sb3_vlm.formats.safe_pickle import safe_load

    buffer = tmp_path / "buffer"
    base = ["collect", "--buffer", str(buffer), "--episodes", "1", "--max-steps", "4", "--max-save-time", "0"]
    base += ["--no-progress-bar", "--seed", "3"]
    assert main([*base, "--actor-id", "0"]) == 0  # no judge: the reference rewards
    assert main([*base, "--actor-id", "1", "--worlds", "0", "--judge-url", server.url, "--judge-model", "m"]) == 0
    plain, judged = (safe_load(buffer / f"actor_{a}" / "traj_1.pickle") for a in (0, 1))
    assert [r[2] for r in judged[:-1]] == [r[2] for r in plain[:-1]]
    assert judged[-1][2] == pytest.approx(plain[-1][2] + 7.0) and judged[-1][4]["judge_score"] == 7.0
    (request,) = server.completions()
    images = [_pixels(p) for p in request.body["messages"][0]["content"][1:]]
    assert len(images) == 5 and images[0].shape == (400, 600, 3)  # reset + 4 steps, FTRL's scene frames
    server.default = Reply("no idea")
    argv = [*base, "--actor-id", "2", "--worlds", "0", "--judge-url", server.url, "--judge-model", "m"]
    assert main([*argv, "--judge-weight", "3"]) == 0
    failed = safe_load(buffer / "actor_2" / "traj_1.pickle")
    assert failed[-1][4]["judge_failure"] == "unparsable" and failed[-1][2] == pytest.approx(plain[-1][2])


@pytest.mark.slow
def test_train_cli_judge_reward_in_tensorboard_and_run_config(server, tmp_path):
    import json

    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sb3_vlm.cli import main
    from sb3_vlm.zoo import default_conf

    conf = yaml.safe_load(default_conf("applr").read_text())
    conf["BarnNav-v0"].update(n_timesteps=120, n_envs=2, learning_starts=40, batch_size=16, buffer_size=500)
    conf["BarnNav-v0"].update(policy_kwargs="dict(net_arch=[16])")
    conf["BarnNav-v0"]["env_kwargs"]["max_steps"] = 10
    path = tmp_path / "applr_tiny.yml"
    path.write_text(yaml.safe_dump(conf))
    argv = ["train", "--conf-file", str(path), "--log-dir", str(tmp_path / "runs"), "--no-progress-bar"]
    argv += ["--checkpoint-freq", "1000", "--torch-threads", "1", "--judge-url", server.url, "--judge-model", "m"]
    assert main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run / "run_config.json").read_text())["judge"]
    assert saved["judge"]["base_url"] == server.url and saved["reward"]["mode"] == "terminal"
    events = next((run / "tb").rglob("events.out.tfevents*")).parent
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert {"judge/requests", "judge/failures", "judge/cache_hits", "judge/latency_ms", "judge/score_mean"} <= set(
        scalars
    )
    assert accumulator.Scalars("judge/requests")[-1].value >= 2 and accumulator.Scalars("judge/failures")[-1].value == 0
    assert len(server.completions()) >= 2
