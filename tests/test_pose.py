"""The TCN pose model: causality, receptive field, learning, generation, saving, metrics."""

import io as _io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minitalk import metrics
from minitalk.pose import (
    PoseConfig,
    PoseGenerator,
    TemporalConvNet,
    speaker_track,
    turn_segments,
)
from minitalk.pose.evaluate import held_out_mask

SMALL = PoseConfig(channels=16, levels=4, epochs=25, window=60, stride=1, batch=32, dropout=0.0)


def tcn():
    torch.manual_seed(0)
    return TemporalConvNet(3, 2, channels=8, levels=3, kernel_size=3, dropout=0.0).eval()


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 59))
def test_output_never_sees_the_future(t):
    net = tcn()
    x = torch.randn(1, 3, 60)
    y = x.clone()
    y[:, :, t + 1 :] = torch.randn_like(y[:, :, t + 1 :])
    with torch.no_grad():
        torch.testing.assert_close(net(x)[..., : t + 1], net(y)[..., : t + 1])


def test_receptive_field_is_exact():
    net = tcn()
    rf = net.receptive_field
    assert rf == 1 + 2 * 2 * (2**3 - 1)
    t = 40
    x = torch.randn(1, 3, 60)
    with torch.no_grad():
        for offset, changes in ((rf - 1, True), (rf, False)):
            y = x.clone()
            y[:, :, t - offset] += 5.0
            moved = not torch.allclose(net(x)[..., t], net(y)[..., t])
            assert moved == changes, offset


def test_roles_and_turns():
    speaking = np.array([[0, 1, 1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1, 0, 0]], bool)
    who = speaker_track(speaking)
    np.testing.assert_array_equal(who, [0, 0, 0, 0, 1, 1, 1, 0])
    assert turn_segments(who) == [(0, 4), (4, 7), (7, 8)]
    held = held_out_mask(np.repeat(speaking, 10, axis=1), 0.2)
    assert held.sum() == 8 + 6 + 2


def synthetic_conversation(n_turns=6, turn_len=150, seed=0):
    """Speech bursts; the listener's pitch is a lagged, filtered copy of the speech energy."""
    rng = np.random.default_rng(seed)
    t_len = n_turns * turn_len
    speaking = np.zeros((2, t_len), bool)
    for i in range(n_turns):
        speaking[i % 2, i * turn_len : (i + 1) * turn_len - 10] = True
    rms = np.abs(np.convolve(rng.standard_normal(t_len), np.ones(4) / 4, "same")) * speaking.any(0)
    zcr = 0.3 * rms + 0.05 * rng.random(t_len)
    drive = np.convolve(rms, np.hanning(9), "same")
    nod = np.convolve(drive, np.exp(-np.arange(20) / 6.0) * np.sin(np.arange(20) / 3.0))[:t_len]
    nod = np.concatenate([np.zeros(5), nod[:-5]])  # respond 5 frames later
    pose = np.zeros((2, t_len, 6), np.float32)
    speaker = speaker_track(speaking)
    for p in range(2):
        listening = speaker != p
        pose[p, :, 0] = np.where(listening, 3 * nod, 1.0 * rng.standard_normal(t_len))
        pose[p, :, 1] = np.where(listening, 0.3, 4.0) * rng.standard_normal(t_len)
        pose[p, :, 5] = 0.8
    return pose, speaking, zcr.astype(np.float32), rms.astype(np.float32)


def test_learns_the_listener_response_on_held_out_frames():
    pose, speaking, zcr, rms = synthetic_conversation()
    held = held_out_mask(speaking)
    model = PoseGenerator(SMALL).fit(pose, speaking, zcr, rms, ~held)
    assert model.history[-1] < 0.5 * model.history[0]
    gen = model.generate(zcr, rms, speaking)
    listener = 1 - speaker_track(speaking)
    t = np.arange(pose.shape[1])
    r = metrics.correlation(gen[listener, t, 0][held], pose[listener, t, 0][held])
    assert r > 0.7


def test_training_is_deterministic():
    pose, speaking, zcr, rms = synthetic_conversation(n_turns=4, turn_len=80)
    cfg = PoseConfig(channels=8, levels=3, epochs=3, window=40, batch=16)
    a = PoseGenerator(cfg).fit(pose, speaking, zcr, rms).state_dict()
    b = PoseGenerator(cfg).fit(pose, speaking, zcr, rms).state_dict()
    for net in ("speaker_net", "listener_net"):
        for k in a[net]:
            torch.testing.assert_close(a[net][k], b[net][k], rtol=0, atol=0)


def test_a_minute_of_speech_does_not_drift():
    pose, speaking, zcr, rms = synthetic_conversation(n_turns=4, turn_len=120)
    model = PoseGenerator(PoseConfig(channels=8, levels=3, epochs=3, window=40)).fit(pose, speaking, zcr, rms)
    # one long turn of 60 s: person 0 speaks throughout
    reps = 1500 // len(zcr) + 1
    z, r = np.tile(zcr, reps)[:1500], np.tile(np.maximum(rms, 0.05), reps)[:1500]
    talk = np.zeros((2, 1500), bool)
    talk[0] = True
    gen = model.generate(z, r, talk)
    assert gen.shape == (2, 1500, 6) and np.isfinite(gen).all()
    first, last = gen[:, 100:500], gen[:, -400:]
    assert np.allclose(first.mean(1), last.mean(1), atol=0.5 * first.std(1).max() + 1e-3)
    ratio = last.std(1) / (first.std(1) + 1e-6)
    assert np.all((ratio[..., :2] > 0.5) & (ratio[..., :2] < 2.0))  # pitch and yaw move; roll is 0


def test_save_and_load_with_weights_only():
    pose, speaking, zcr, rms = synthetic_conversation(n_turns=2, turn_len=60)
    model = PoseGenerator(PoseConfig(channels=8, levels=2, epochs=1, window=30)).fit(pose, speaking, zcr, rms)
    buf = _io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = PoseGenerator.from_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(model.generate(zcr, rms, speaking), again.generate(zcr, rms, speaking))


def test_listener_needs_some_input():
    with pytest.raises(ValueError, match="listener"):
        PoseGenerator(PoseConfig(use_audio=False, use_speaker_pose=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    pose, speaking, zcr, rms = synthetic_conversation(n_turns=4, turn_len=80)
    cfg = PoseConfig(channels=8, levels=3, epochs=3, window=40, batch=16)
    cpu = PoseGenerator(cfg).fit(pose, speaking, zcr, rms, device=torch.device("cpu"))
    gpu = PoseGenerator(cfg).fit(pose, speaking, zcr, rms, device=torch.device("cuda"))
    np.testing.assert_allclose(
        cpu.generate(zcr, rms, speaking), gpu.generate(zcr, rms, speaking), atol=1e-3, rtol=1e-3
    )


def test_the_listener_expression_responds_to_the_speaker_on_held_out_frames():
    """A listener who smiles (coefficient 0) a little after the speaker gets loud: learned from 80%
    of every turn, the response is generated on the held-out 20%, turn by turn."""
    from minitalk.pose.face_state import ListenerConfig, ListenerExpression

    pose, speaking, zcr, rms = synthetic_conversation()
    speaker = speaker_track(speaking)
    smile = np.convolve(np.convolve(rms, np.hanning(9), "same"), np.ones(6) / 6)[: len(rms)]
    smile = np.concatenate([np.zeros(4), smile[:-4]])  # 4 frames later
    rng = np.random.default_rng(0)
    expression = 0.05 * rng.standard_normal((2, len(rms), 4)).astype(np.float32)
    for p in range(2):
        expression[p, speaker != p, 0] += 2.0 * smile[speaker != p]
    held = held_out_mask(speaking)
    small = ListenerConfig(channels=16, levels=4, epochs=25, window=60, stride=1, batch=32, dropout=0.0)
    model = ListenerExpression(4, small).fit(expression, pose, speaking, zcr, rms, ~held)
    t = np.arange(len(rms))
    generated = model.generate(zcr, rms, pose[speaker, t], speaking)[:, 0]  # relative to the mean
    real = expression[1 - speaker, t, 0] - model.expression_mean[1 - speaker, 0]
    assert metrics.correlation(generated[held], real[held]) > 0.7
    state = model.state_dict()
    again = ListenerExpression.from_state_dict(state)
    np.testing.assert_array_equal(
        again.generate(zcr, rms, pose[speaker, t], speaking),
        model.generate(zcr, rms, pose[speaker, t], speaking),
    )
