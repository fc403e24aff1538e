"""Prompt selection: prompt files, the env (both checkers, masks, learned/true reward), MaskablePPO, the CLIs."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from envs.wrappers import make_costmap_env
from sb3_vlm.cli import main
from sb3_vlm.rewards.prompt_env import FrozenPromptPolicy, PromptSelection
from sb3_vlm.rewards.prompt_eval import compare_choosers, fixed_prompt, mean_ci, random_prompt
from sb3_vlm.rewards.reward_training import collect_windows, fit_reward_net
from sb3_vlm.sft.prompts import DEFAULT_PROMPTS, PromptSpec, load_prompts, prompt_mask, save_prompts

MASKED = (
    PromptSpec("Drive on."),
    PromptSpec("Only for TEB.", planners=("TEB",)),  # never valid with DWA
    PromptSpec("Only in the open.", min_clearance=1.0),  # valid only when nothing is within 1 m
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy():
    return FrozenPromptPolicy.from_pretrained("tiny", MASKED)


WORLDS = [1, 2, 3]  # few generated worlds: generating them is the slow part of a first reset


def make_env(policy, **kwargs):
    return PromptSelection(make_costmap_env(max_steps=16, worlds=WORLDS), policy, **kwargs)


def test_prompt_file_round_trip_and_errors(tmp_path):
    path = save_prompts(DEFAULT_PROMPTS, tmp_path / "p.yaml")
    assert load_prompts(path) == list(DEFAULT_PROMPTS)
    assert [s.text for s in load_prompts(path)] == [s.text for s in DEFAULT_PROMPTS]
    bad = {
        "{}": "expected a list of prompts, got dict",
        "[]": "the list of prompts is empty",
        "- text: ''": "entry 0: .*non-empty",
        "- text: a\n  reward: {speed: 2}": r"entry 0: .*unknown reward fields \['speed'\]",
        "- text: a\n  colour: red": r"entry 0 has unknown keys \['colour'\]",
        "- a\n- a": "distinct",
        "- text: a\n  min_clearance: -1": "min_clearance",
    }
    for content, message in bad.items():
        (tmp_path / "bad.yaml").write_text(content)
        with pytest.raises(ValueError, match=message) as info:
            load_prompts(tmp_path / "bad.yaml")
        assert "bad.yaml" in str(info.value)


def test_prompt_mask_by_planner_and_clearance():
    assert prompt_mask(MASKED, "DWA", 0.5).tolist() == [True, False, False]
    assert prompt_mask(MASKED, "DWA", 2.0).tolist() == [True, False, True]
    assert prompt_mask(MASKED, "teb", 0.5).tolist() == [True, True, False]


def test_env_passes_both_checkers(policy):
    env = make_env(policy)
    with warnings.catch_warnings():
        # The feature is unbounded (Box(-inf, inf)); the checkers warn about that and about checking a wrapper.
        warnings.filterwarnings("ignore", message=".*(infinity|unwrapped|is different from).*")
        gym_check_env(env, skip_render_check=True)
    sb3_check_env(make_env(policy), warn=False)


def test_step_runs_a_window_and_masks_invalid_prompts(policy):
    env = make_env(policy, window=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (256,) and obs.dtype == np.float32
    steps_before = env.unwrapped.batch.steps[0]
    _, reward, _, _, info = env.step(1)  # masked (TEB only): replaced by the first valid prompt
    assert info["invalid_action"] and info["prompt"] == 0
    assert env.unwrapped.batch.steps[0] - steps_before == 3
    assert reward == info["true_reward"]
    assert info["params_unit"].shape == (7,) and np.all(np.abs(info["params_unit"]) <= 1)
    with pytest.raises(ValueError, match=r"prompt index in \[0, 3\)"):
        env.step(3)


class InfoLog(BaseCallback):
    def __init__(self):
        super().__init__()
        self.invalid, self.prompts = 0, []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.invalid += info["invalid_action"]
            self.prompts.append(info["prompt"])
        return True


@pytest.mark.parametrize("use_masking", [True, False])
def test_maskable_ppo_never_picks_a_masked_prompt(policy, use_masking):
    vec_env = DummyVecEnv([lambda: make_env(policy, window=2)] * 2)
    model = MaskablePPO("MlpPolicy", vec_env, n_steps=32, batch_size=32, n_epochs=2, seed=0)
    log = InfoLog()
    model.learn(128, callback=log, use_masking=use_masking)
    if use_masking:
        assert log.invalid == 0
    else:  # without the masks the same agent does pick them: the count above measures the masking
        assert log.invalid > 0
    env = make_env(policy)
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        mask = env.action_masks()
        action, _ = model.predict(obs, action_masks=mask)
        assert mask[action]
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()


def test_learned_reward_and_chooser_comparison(policy):
    data = collect_windows(make_env(policy), episodes=6, seed=0)
    assert set(np.unique(data.prompts)) <= {0, 2} and len(np.unique(data.episodes)) == 6
    net, metrics = fit_reward_net(data, tuple(p.text for p in MASKED), policy.params.names, epochs=5)
    env = make_env(policy, reward="learned", reward_net=net)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(0)
    assert reward == info["learned_reward"] != info["true_reward"]
    with pytest.raises(ValueError, match="needs a reward_net"):
        make_env(policy, reward="learned")
    other = FrozenPromptPolicy.from_pretrained("tiny", DEFAULT_PROMPTS)
    with pytest.raises(ValueError, match="trained on prompts"):
        PromptSelection(make_costmap_env(), other, reward_net=net)
    results = compare_choosers(make_env(policy), {"fixed": fixed_prompt(0), "random": random_prompt(0)}, [1, 2])
    assert results["fixed"]["prompt_share"] == [1.0, 0.0, 0.0]
    assert results["random"]["nav_metric"]["n"] == 2


def test_mean_ci():
    ci = mean_ci([0.0, 1.0, 0.0, 1.0])
    assert ci["mean"] == 0.5 and ci["low"] < 0.5 < ci["high"] and ci["n"] == 4
    assert mean_ci([0.3]) == {"mean": 0.3, "low": 0.3, "high": 0.3, "n": 1}


def test_registered_id_builds_the_env():
    import sb3_vlm.rewards  # noqa: F401  (registers the id)

    env = gym.make("BarnNavPromptSelection-v0", max_steps=8, window=2, worlds=WORLDS)
    assert env.action_space.n == len(DEFAULT_PROMPTS)
    assert env.unwrapped.batch.max_steps == 8


def test_cli_reward_net_and_select_prompt(tmp_path, capsys):
    prompts = save_prompts(MASKED, tmp_path / "prompts.yaml")
    common = ["--prompts", str(prompts), "--max-steps", "12", "--window", "3", "--worlds", "1,2,3", "--no-progress-bar"]
    assert (
        main(
            [
                "reward-net",
                "train",
                "--episodes",
                "4",
                "--epochs",
                "5",
                "--out",
                str(tmp_path / "rn"),
                "--save-data",
                str(tmp_path / "w.npz"),
                *common,
            ]
        )
        == 0
    )
    assert "held-out window-return corr" in capsys.readouterr().out
    assert main(["reward-net", "eval", "--net", str(tmp_path / "rn"), "--data", str(tmp_path / "w.npz"), *common]) == 0
    assert json.loads(capsys.readouterr().out.strip())["windows"] > 0
    conf = tmp_path / "zoo.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "BarnNavPromptSelection-v0": {
                    "n_timesteps": 32,
                    "policy": "MlpPolicy",
                    "n_steps": 16,
                    "batch_size": 16,
                    "n_epochs": 1,
                    "policy_kwargs": "dict(net_arch=dict(pi=[128, 64], vf=[128, 64]))",
                }
            }
        )
    )
    out = tmp_path / "sp"
    argv = [
        "select-prompt",
        "--reward",
        "learned",
        "--reward-net",
        str(tmp_path / "rn"),
        "--conf",
        str(conf),
        "--steps",
        "32",
        "--eval-episodes",
        "1",
        "--out",
        str(out),
        *common,
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["eval"]) == {
        "fixed:Drive on.",
        "fixed:Only for TEB.",
        "fixed:Only in the open.",
        "random",
        "ppo",
    }
    assert results["eval"]["ppo"]["prompt_share"][1] == 0.0  # the TEB-only prompt is never chosen
    assert MaskablePPO.load(out / "model.zip").policy.mlp_extractor.policy_net[0].out_features == 128
    assert main(["select-prompt", "--reward", "learned", "--out", str(out), *common]) == 2
    assert "needs --reward-net" in capsys.readouterr().err


def test_prompt_pairs_train_a_prompt_conditioned_checkpoint(tmp_path, capsys):
    from sb3_vlm.sft.data import SFTDataset
    from sb3_vlm.sft.labels import LabelSettings
    from sb3_vlm.sft.prompts import generate_prompt_pairs, report_prompts
    from sb3_vlm.sft.training import SFTConfig, make_sft_extractor, train_sft

    specs = [DEFAULT_PROMPTS[0], DEFAULT_PROMPTS[2]]
    kwargs = dict(worlds=WORLDS, library="lhs", candidates=4, horizon=2, n_envs=2, noise_replicas=1, progress_bar=False)
    data, stats = generate_prompt_pairs(specs, LabelSettings(12, **kwargs))
    assert len(data) == 24 and data.prompts.tolist() == [specs[0].text] * 12 + [specs[1].text] * 12
    assert set(stats["per_prompt"]) == {s.text for s in specs} and len(stats["chosen"]) == 4
    # Same seed, same starts: the two prompts' episode ids are the same set (a split by episode holds out both).
    assert set(data.groups[:12]) & set(data.groups[12:])
    loaded = SFTDataset.load(data.save(tmp_path / "pairs.npz"))
    assert loaded.prompts.tolist() == data.prompts.tolist()
    extractor = make_sft_extractor(data.images.shape[1:], data.num_params, feature_cache_bytes=2**24)
    train_sft(extractor, data, None, SFTConfig(epochs=1, batch_size=8, progress_bar=False))
    distinct = {(image.tobytes(), text) for image, text in zip(data.images, data.prompts, strict=True)}
    assert extractor.feature_cache.stats().misses == len(distinct)  # one backbone pass per (image, prompt)
    (tmp_path / "ckpt").mkdir()
    report = report_prompts(extractor, data, None, tmp_path / "ckpt")
    assert [s.text for s in load_prompts(tmp_path / "ckpt" / "prompts.yaml")] == [s.text for s in specs]
    assert set(report["predicted"]) == {s.text for s in specs}
    assert "mean label/prediction" in capsys.readouterr().out
