"""Offline replay: trajectory pickles (FTRL and ros_jackal) -> SB3 replay buffers, then learn()."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import Payload
from _laser_env import IMAGE_SHAPE, dict_image_env, image_env, laser_env
from _trajectories import (
    frame_image,
    ftrl_episode,
    ros_jackal_episode,
    set_age,
    write_ftrl_trajectory,
    write_pickle,
)
from gymnasium import spaces
from PIL import Image
from stable_baselines3 import TD3
from stable_baselines3.common.buffers import ReplayBuffer

from envs.planners import DWA_PARAMS
from sb3_vlm.formats.trajectories import LoadResult, load_trajectories, resize_image
from sb3_vlm.td3.replay import fill_replay_buffer

IMAGE_HW = IMAGE_SHAPE[:2]


def _ftrl_dir(root: Path, rng: np.random.Generator) -> dict:
    """Two FTRL episodes in actor_0 (success with 9-value actions; timeout with 7-value list actions)."""
    rec1, frames1 = ftrl_episode(rng, 5, status="success", first_frame=0, act_size=9, nav_metric=0.4)
    rec2, frames2 = ftrl_episode(rng, 4, status="timeout", first_frame=6, act_size=7, nav_metric=0.0)
    path1, png1 = write_ftrl_trajectory(root / "actor_0", 1, rec1, frames1, first_frame=0)
    path2, png2 = write_ftrl_trajectory(root / "actor_0", 2, rec2, frames2, first_frame=6)
    return {path1: (rec1, frames1, png1), path2: (rec2, frames2, png2)}


def _jackal_dir(root: Path, rng: np.random.Generator) -> dict:
    """Two ros_jackal episodes in actor_1 ((1, 721) and (721,) observations)."""
    rec1 = ros_jackal_episode(rng, 6, success=True)
    rec2 = ros_jackal_episode(rng, 3, success=False, flat_obs=True)
    return {
        write_pickle(root / "actor_1" / "traj_1.pickle", rec1, protocol=3): rec1,
        write_pickle(root / "actor_1" / "traj_2.pickle", rec2): rec2,
    }


def test_resize_image_is_pillow_bilinear() -> None:
    image = frame_image(np.random.default_rng(0))
    out = resize_image(image, IMAGE_HW)
    assert out.shape == IMAGE_SHAPE and out.dtype == np.uint8
    expected = np.asarray(image.resize((IMAGE_HW[1], IMAGE_HW[0]), Image.Resampling.BILINEAR))
    assert np.array_equal(out, expected)
    assert np.array_equal(resize_image(np.asarray(image), IMAGE_HW), out)
    assert np.array_equal(resize_image(out, IMAGE_HW), out)  # already at size: unchanged
    with pytest.raises(ValueError, match="uint8"):
        resize_image(np.zeros((4, 4, 3), np.float32), IMAGE_HW)


def test_loader_reads_good_files_and_reports_bad_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ftrl = _ftrl_dir(tmp_path, rng)
    jackal = _jackal_dir(tmp_path, rng)
    bad = tmp_path / "actor_2"
    marker = tmp_path / "pwned"
    good_bytes = pickle.dumps(ros_jackal_episode(rng, 3))
    expected_skips = {
        write_pickle(bad / "traj_1.pickle", [Payload(os.system, f"touch {marker}")]): "'posix.system' is not allowed",
        write_pickle(bad / "traj_2.pickle", None): "wrong schema: expected a list of step records",
        write_pickle(bad / "traj_3.pickle", [[1, 2, 3]]): "wrong schema: step 0: expected a 7-field",
        write_pickle(bad / "traj_4.pickle", []): "wrong schema: no step records",
        bad / "traj_5.pickle": "empty file",
        bad / "traj_6.pickle": "corrupt or truncated pickle",
        bad / "traj_7.pickle.tmp": "incomplete name",
        bad / "traj_8.pickle": "still being written: modified 0.",
    }
    (bad / "traj_5.pickle").write_bytes(b"")
    (bad / "traj_6.pickle").write_bytes(good_bytes[: len(good_bytes) // 2])
    (bad / "traj_7.pickle.tmp").write_bytes(good_bytes)
    for name in ("traj_5.pickle", "traj_6.pickle", "traj_7.pickle.tmp"):
        set_age(bad / name, 60)
    (bad / "traj_8.pickle").write_bytes(good_bytes)  # fresh: a collector may still be writing it
    write_pickle(tmp_path / "not_an_actor" / "traj_1.pickle", ros_jackal_episode(rng, 3))  # outside actor_<id>
    write_pickle(tmp_path / "test_sync" / "test_0_1.pickle", ros_jackal_episode(rng, 2))

    result = load_trajectories(tmp_path, params=DWA_PARAMS, image_size=IMAGE_HW)

    assert not marker.exists()
    assert {s.path: s.reason for s in result.skipped}.keys() == expected_skips.keys()
    for skip in result.skipped:
        assert expected_skips[skip.path] in skip.reason, (skip.path, skip.reason)
    assert [t.path for t in result.trajectories] == [*ftrl, *jackal]
    assert result.episodes == 4 and result.n_transitions == 5 + 4 + 6 + 3 == len(result.transitions)
    assert result.success_rate == pytest.approx(2 / 4)
    assert result.mean_nav_metric == pytest.approx(0.2)  # FTRL episodes only: (0.4 + 0.0) / 2

    for traj in result.trajectories[:2]:  # FTRL
        records, frames, pngs = ftrl[traj.path]
        assert traj.format == "ftrl" and traj.frames == tuple(pngs)
        for i, (tr, rec) in enumerate(zip(traj.transitions, records, strict=True)):
            assert set(tr.obs) == {"image", "velocity", "laser"}
            assert np.array_equal(tr.obs["image"], resize_image(frames[i], IMAGE_HW))
            nxt = min(i + 1, len(records) - 1)  # the last step reuses its own observation
            assert np.array_equal(tr.next_obs["image"], resize_image(frames[nxt], IMAGE_HW))
            assert np.allclose(tr.obs["velocity"], rec[4]["last_state"])
            assert np.allclose(tr.obs["laser"], np.ravel(rec[0]))
            assert np.array_equal(tr.action, DWA_PARAMS.to_unit(np.asarray(rec[1], np.float64)[:7]))
            assert tr.reward == pytest.approx(rec[2]) and tr.done == rec[3]
        assert [t.timeout for t in traj.transitions] == [False] * (len(records) - 1) + [traj.status == "timeout"]
    assert [t.status for t in result.trajectories[:2]] == ["success", "timeout"]

    for traj in result.trajectories[2:]:  # ros_jackal
        records = jackal[traj.path]
        assert traj.format == "ros_jackal" and traj.nav_metric is None and traj.frames == ()
        for i, tr in enumerate(traj.transitions):
            assert set(tr.obs) == {"laser"}
            assert np.allclose(tr.next_obs["laser"], np.ravel(records[min(i + 1, len(records) - 1)][0]))
            assert np.array_equal(tr.action, DWA_PARAMS.to_unit(records[i][1]))
            assert not tr.timeout
    actions = np.stack([t.action for t in result.transitions])
    assert actions.min() == -1.0 and actions.max() == 1.0  # out-of-range physical values were clipped

    with_test = load_trajectories(tmp_path, params=DWA_PARAMS, include_test=True)
    assert with_test.episodes == 5 and with_test.trajectories[-1].path.name == "test_0_1.pickle"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r[0].__setitem__(1, np.zeros(5)), "step 0, field 'act': expected 7 or 9 values"),
        (lambda r: r[1].__setitem__(0, np.zeros((1, 10))), "step 1, field 'obs': expected shape"),
        (lambda r: r[2][4].__setitem__("img_PIL", np.zeros((4, 4, 3))), "step 2, field info['img_PIL']"),
        (lambda r: r[0][4].__setitem__("last_state", [1.0]), "step 0, field info['last_state']"),
        (lambda r: r[1].__setitem__(2, float("nan")), "step 1, field 'rew': expected a finite number"),
        (lambda r: r[1].__setitem__(3, "yes"), "step 1, field 'done'"),
        (lambda r: r[2][4].pop("img_PIL"), "step 2: observation fields"),
        (lambda r: r[1].append(0), "step 1: expected a 7-field record"),
    ],
    ids=["act-size", "obs-shape", "img-type", "last-state", "nan-reward", "done-type", "missing-image", "8-fields"],
)
def test_wrong_schema_reason_names_step_and_field(tmp_path: Path, mutate, reason: str) -> None:
    records, _frames = ftrl_episode(np.random.default_rng(2), 3)
    mutate(records)
    path = write_pickle(tmp_path / "actor_3" / "traj_1.pickle", records)
    result = load_trajectories(tmp_path, params=DWA_PARAMS)
    assert result.episodes == 0
    assert [s.path for s in result.skipped] == [path]
    assert result.skipped[0].reason.startswith("wrong schema") and reason in result.skipped[0].reason


def _changed(model: TD3, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.policy.actor.state_dict().items())


def test_fill_laser_td3_then_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    jackal = _jackal_dir(tmp_path, rng)
    result = load_trajectories(tmp_path, params=DWA_PARAMS)
    model = TD3("MlpPolicy", laser_env(), buffer_size=500, batch_size=8, learning_starts=1000, seed=0)

    assert fill_replay_buffer(model, result) == 9
    buffer = model.replay_buffer
    assert buffer.pos == 9 and model.learning_starts == 0
    records = [r for recs in jackal.values() for r in recs]
    physical = np.stack([r[1] for r in records])
    assert np.array_equal(buffer.actions[:9, 0], DWA_PARAMS.to_unit(physical))
    clipped = np.clip(physical, DWA_PARAMS.low, DWA_PARAMS.high)
    assert np.allclose(buffer.actions[:9, 0], model.policy.scale_action(clipped), atol=1e-6)  # SB3's own scaling
    assert np.allclose(buffer.observations[:9, 0], np.stack([np.ravel(r[0]) for r in records]))
    assert np.array_equal(buffer.dones[:9, 0], [r[3] for r in records])
    assert not buffer.timeouts[:9].any()

    before = {k: v.clone() for k, v in model.policy.actor.state_dict().items()}
    model.learn(total_timesteps=4)
    assert model._n_updates > 0 and _changed(model, before)


def test_fill_cnn_td3_channels_first_then_learn(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ftrl = _ftrl_dir(tmp_path, rng)
    result = load_trajectories(tmp_path, params=DWA_PARAMS, image_size=IMAGE_HW)
    model = TD3("CnnPolicy", image_env(), buffer_size=200, batch_size=8, seed=0)
    buffer = model.replay_buffer
    assert buffer.observation_space.shape == (3, *IMAGE_HW)  # VecTransposeImage: channels first

    assert fill_replay_buffer(model, result.trajectories) == 9
    frames = [f for _recs, fr, _png in ftrl.values() for f in fr[:-1]]
    expected = np.stack([resize_image(f, IMAGE_HW).transpose(2, 0, 1) for f in frames])
    assert np.array_equal(buffer.observations[:9, 0], expected)
    assert np.array_equal(buffer.next_observations[3, 0], expected[4])
    assert np.array_equal(buffer.next_observations[4, 0], expected[4])  # episode end: own observation
    acts = [np.asarray(r[1], np.float64)[:7] for recs, _fr, _png in ftrl.values() for r in recs]
    assert np.array_equal(buffer.actions[:9, 0], DWA_PARAMS.to_unit(np.stack(acts)))
    assert buffer.timeouts[:9, 0].tolist() == [0.0] * 8 + [1.0]  # second episode ended by timeout

    before = {k: v.clone() for k, v in model.policy.actor.state_dict().items()}
    model.learn(total_timesteps=3)
    assert model._n_updates > 0 and _changed(model, before)


def test_fill_dict_buffer_image_and_velocity(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ftrl = _ftrl_dir(tmp_path, rng)
    result = load_trajectories(tmp_path, params=DWA_PARAMS, image_size=IMAGE_HW)
    model = TD3("MultiInputPolicy", dict_image_env(), buffer_size=100, batch_size=4, seed=0)

    fill_replay_buffer(model, result)
    buffer = model.replay_buffer
    records = [r for recs, _fr, _png in ftrl.values() for r in recs]
    assert buffer.observations["image"].shape[2:] == (3, *IMAGE_HW)
    assert np.allclose(buffer.observations["velocity"][:9, 0], [r[4]["last_state"] for r in records])
    assert np.array_equal(buffer.observations["image"][0, 0], result.transitions[0].obs["image"].transpose(2, 0, 1))
    model.learn(total_timesteps=2)
    assert model._n_updates > 0


def test_fill_plain_buffers_layouts_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    _ftrl_dir(tmp_path / "ftrl", rng)
    _jackal_dir(tmp_path / "jackal", rng)
    ftrl = load_trajectories(tmp_path / "ftrl", params=DWA_PARAMS, image_size=IMAGE_HW)
    jackal = load_trajectories(tmp_path / "jackal", params=DWA_PARAMS)
    action_space = spaces.Box(DWA_PARAMS.low, DWA_PARAMS.high)
    hwc = spaces.Box(0, 255, IMAGE_SHAPE, np.uint8)

    channels_last = ReplayBuffer(20, hwc, action_space, device="cpu")
    fill_replay_buffer(channels_last, ftrl.transitions)
    assert np.array_equal(channels_last.observations[0, 0], ftrl.transitions[0].obs["image"])

    two_envs = ReplayBuffer(20, hwc, action_space, device="cpu", n_envs=2)
    with pytest.warns(UserWarning, match="padded with 1 repeated"):
        assert fill_replay_buffer(two_envs, ftrl) == 9
    assert two_envs.pos == 5
    assert np.array_equal(two_envs.observations[4, 1], ftrl.transitions[0].obs["image"])

    mixed = ReplayBuffer(20, hwc, action_space, device="cpu")
    with pytest.raises(ValueError, match=r"needs observation \['image'\]"):
        fill_replay_buffer(mixed, ftrl.transitions + jackal.transitions)
    assert mixed.pos == 0 and not mixed.full  # everything is checked before the buffer changes
    with pytest.raises(ValueError, match="image_size"):
        fill_replay_buffer(ReplayBuffer(20, spaces.Box(0, 255, (64, 64, 3), np.uint8), action_space), ftrl)
    with pytest.raises(ValueError, match="actions have shape"):
        fill_replay_buffer(ReplayBuffer(20, hwc, spaces.Box(-1, 1, (9,))), ftrl)
    with pytest.raises(ValueError, match="delete_after_load needs trajectories"):
        fill_replay_buffer(channels_last, ftrl.transitions, delete_after_load=True)
    assert fill_replay_buffer(channels_last, LoadResult()) == 0


def test_delete_after_load_removes_only_loaded_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ftrl = _ftrl_dir(tmp_path, rng)
    bad = write_pickle(tmp_path / "actor_0" / "traj_9.pickle", [[1, 2]])
    unrelated = tmp_path / "actor_0" / "FTRL_000100.png"
    frame_image(rng).save(unrelated)
    result = load_trajectories(tmp_path, params=DWA_PARAMS, image_size=IMAGE_HW)
    assert all(p.exists() for path, (_r, _f, pngs) in ftrl.items() for p in (path, *pngs))

    model = TD3("CnnPolicy", image_env(), buffer_size=50, seed=0)
    fill_replay_buffer(model, result, delete_after_load=True)
    assert model.replay_buffer.pos == 9
    assert not any(p.exists() for path, (_r, _f, pngs) in ftrl.items() for p in (path, *pngs))
    assert bad.exists() and unrelated.exists()  # skipped and unrelated files stay
