"""Flow-matching expert and reflow: multi-modal targets kept apart, a one-step student as good as the teacher's ODE,
exact save/reload, the student starting as the teacher."""

import logging

import numpy as np
import pytest
import torch as th

from sb3_vlm.flow import FitConfig, FlowMatchingHead, couplings, fit, reflow, straightness


@pytest.fixture(autouse=True)
def _one_thread():
    """Small MLPs: one torch thread is fastest and does not fight the other tests for the cores."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def _bimodal(n: int = 512, seed: int = 0) -> tuple[th.Tensor, th.Tensor]:
    """Features of two scene kinds [N, 8]; in kind 0 the first parameter is +0.8 or -0.8 (two good modes, 50/50),
    in kind 1 it is 0.3; the second parameter is the feature's first entry."""
    g = th.Generator().manual_seed(seed)
    kind = th.randint(2, (n,), generator=g)
    features = th.randn(n, 8, generator=g)
    features[:, 7] = kind.float() * 2 - 1
    sign = th.randint(2, (n,), generator=g).float() * 2 - 1
    first = th.where(kind == 0, 0.8 * sign, th.full((n,), 0.3))
    return features, th.stack([first, 0.5 * features[:, 0]], dim=1)


@pytest.fixture(scope="module")
def trained() -> tuple[FlowMatchingHead, th.Tensor]:
    """A 20-step teacher trained by flow matching on :func:`_bimodal` data, and its training features."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    th.manual_seed(0)
    features, targets = _bimodal()
    head = FlowMatchingHead(action_dim=2, feature_dim=8, hidden=64, time_dim=16, num_steps=20)
    losses = fit(head, features, targets, FitConfig(steps=1200, batch_size=128, lr=3e-3))
    assert np.mean(losses[-100:]) < 0.5 * np.mean(losses[:100])
    th.set_num_threads(threads)
    return head, features


def test_the_flow_head_samples_modes_where_mse_would_average(trained):
    head, features = trained
    kind0 = features[:, 7] < 0
    samples = head.sample(features[kind0], noise=th.randn(int(kind0.sum()), 2, generator=th.Generator().manual_seed(1)))
    first = samples[:, 0].numpy()
    # Most samples far from 0, the mean an MSE head would predict for all of them, near one of the two modes.
    assert np.mean(np.abs(first) > 0.4) > 0.8
    assert np.mean(np.abs(np.abs(first) - 0.8) < 0.25) > 0.8
    assert 0.25 < np.mean(first > 0) < 0.75
    # The other kind's single mode and the feature-dependent second parameter are learned too.
    kind1 = head.act(features[~kind0]).numpy()
    assert np.abs(kind1[:, 0] - 0.3).mean() < 0.15
    np.testing.assert_allclose(kind1[:, 1], 0.5 * features[~kind0, 0].numpy(), atol=0.2)


def test_reflow_student_in_one_step_matches_the_teachers_full_ode(trained, caplog):
    teacher, features = trained
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="sb3_vlm.flow.reflow"):
        student = reflow(teacher, features, FitConfig(steps=600, batch_size=128, lr=2e-3, seed=3))
    assert "teacher loaded and frozen" in caplog.text and "student initialised from the teacher" in caplog.text
    for k, v in teacher.state_dict().items():  # the teacher never changes
        assert th.equal(v, before[k])
    assert not any(p.requires_grad for p in teacher.parameters())
    # Held-out states and noise: distance of 1-step samples to the teacher's 20-step samples from the same noise.
    held_features, _ = _bimodal(256, seed=9)
    x0, x1 = couplings(teacher, held_features, seed=11)
    teacher_1 = (teacher.sample(held_features, noise=x0, num_steps=1) - x1).norm(dim=1).mean()
    student_1 = (student.sample(held_features, noise=x0, num_steps=1) - x1).norm(dim=1).mean()
    assert student_1 < 0.5 * teacher_1, (float(student_1), float(teacher_1))
    assert student.config.num_steps == 1
    assert straightness(student, held_features, x0) < straightness(teacher, held_features, x0)


def test_the_student_starts_as_the_teacher_bit_for_bit(trained):
    teacher, features = trained
    student = reflow(teacher, features, FitConfig(steps=0))
    for (k, a), b in zip(teacher.state_dict().items(), student.state_dict().values(), strict=True):
        assert th.equal(a, b), k
        assert a.data_ptr() != b.data_ptr()  # a copy: training the student cannot touch the teacher


def test_saved_heads_reload_and_reproduce_samples_exactly(trained, tmp_path):
    head, features = trained
    head.save_pretrained(tmp_path / "flow")
    again = FlowMatchingHead.from_pretrained(tmp_path / "flow")
    assert again.config == head.config
    assert th.equal(again.act(features[:16]), head.act(features[:16]))
    noise = th.randn(16, 2)
    assert th.equal(again.sample(features[:16], noise=noise, num_steps=4), head.sample(features[:16], noise, 4))


def test_many_couplings_per_feature_make_a_closer_student_on_held_out_states(trained):
    """``couplings_per_feature``: row ``r`` of the couplings is the teacher's sample for feature ``r // K``; with
    several noise draws per training state the student follows the teacher better on unseen states."""
    teacher, _ = trained
    few, _ = _bimodal(16, seed=4)
    x0, x1 = couplings(teacher, few[:3], per_feature=5, seed=2, batch_rows=10)  # two features per batch
    assert x0.shape == x1.shape == (15, 2)
    th.testing.assert_close(x1[5:10], teacher.sample(few[1:2].expand(5, -1), noise=x0[5:10]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of the features' rows"):
        fit(teacher, few, x1, FitConfig(steps=1))

    held_features, _ = _bimodal(256, seed=9)
    x0, x1 = couplings(teacher, held_features, seed=11)
    distances = {}
    for k in (1, 32):
        student = reflow(teacher, few, FitConfig(steps=800, batch_size=128, lr=2e-3, couplings_per_feature=k))
        distances[k] = float((student.sample(held_features, noise=x0, num_steps=1) - x1).norm(dim=1).mean())
    assert distances[32] < 0.75 * distances[1], distances  # measured 0.13 vs 0.23
