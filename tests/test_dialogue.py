"""Rendering a new conversation (`minitalk render`): roles, motion, face states, the clip, bad input.

The shipped avatar file renders a few seconds of the sample's new speech at 32 pixels per
person, so each case takes seconds."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

import minitalk as mt
from minitalk import cli, io, metrics
from minitalk.dialogue import render as dialogue_render
from minitalk.dialogue.avatar import load_avatar
from minitalk.dialogue.roles import parse_roles
from minitalk.files import FileFormatError
from minitalk.pose.face_state import BlinkModel, blink_events
from minitalk.synthetic import speech

SIZE = 32


@pytest.fixture(scope="module")
def avatar():
    return load_avatar(mt.SAMPLE_DIR / "avatars.pt")


@pytest.fixture(scope="module")
def new_speech():
    return io.read_audio(mt.SAMPLE_DIR / "new_dialogue.wav")


@pytest.fixture(scope="module")
def work(tmp_path_factory, new_speech):
    """Audio files cut from the new speech: a turn change, one voice, silence, other rates."""
    d = tmp_path_factory.mktemp("render")
    turns = speech.script_turns(new_speech, speech.NEW_SCRIPT, io.SAMPLE_RATE)
    change = turns[1, 1]  # person 0 starts answering
    rate = io.SAMPLE_RATE
    sf.write(d / "change.wav", new_speech[int((change - 2) * rate) : int((change + 1.5) * rate)], rate)
    sf.write(d / "one_voice.wav", new_speech[int(turns[1, 1] * rate) : int((turns[1, 1] + 2) * rate)], rate)
    sf.write(d / "silence.wav", np.zeros(2 * rate, np.float32), rate)
    piece = new_speech[int((change - 1) * rate) : int((change + 1) * rate)]
    sf.write(d / "8k.wav", piece[::2], 8000)
    stereo48 = np.repeat(np.interp(np.arange(2 * 48000) / 3, np.arange(len(piece)), piece)[:, None], 2, 1)
    sf.write(d / "48k_stereo.wav", stereo48, 48000)
    io.write_video(d / "mute.mp4", np.zeros((10, 32, 32, 3), np.uint8), 25)
    (d / "random.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    return d


def run(args, cwd) -> int:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return cli.main([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code
    finally:
        os.chdir(old)


def render_args(audio, out, *extra):
    return ["render", mt.SAMPLE_DIR / "avatars.pt", audio, "--out", out, "--size", SIZE, "--quiet", *extra]


def test_a_turn_change_renders_with_its_audio_and_the_right_speakers(work, capsys):
    assert run(render_args("change.wav", "change.mp4"), work) == 0
    summary = json.loads((work / "change.json").read_text())
    # the settings the clip was made with, defaults included, beside it
    assert summary["settings"] == {"size": SIZE, "device": None, "roles": None, "pose_from": None, "seed": 0,
                                   "people": None, "highlight": False}  # fmt: skip
    assert (work / "change_tracks.png").stat().st_size > 0
    info = io.probe(work / "change.mp4")
    frames = list(io.iter_frames(work / "change.mp4"))
    assert len(frames) == summary["frames"] and frames[0].shape == (SIZE, 2 * SIZE, 3)
    audio_frames = len(io.read_audio(work / "change.mp4")) / io.SAMPLE_RATE * info.fps
    assert abs(audio_frames - summary["frames"]) <= 1  # audio and video lengths agree within a frame
    speakers = [t["speaker"] for t in summary["turns"] if t["speaker"] >= 0]
    assert speakers == [1, 0]  # the clip starts in person 1's turn and person 0 answers


def test_roles_follow_the_voices_of_the_new_speech(avatar, new_speech):
    """Who speaks when on the whole new dialogue against its exact turns (`script_turns`)."""
    plan = dialogue_render.plan_dialogue(avatar, new_speech)
    truth = np.zeros_like(plan.roles.speaking)
    times = (np.arange(plan.n_frames) + 0.5) / plan.fps
    for person, start, end in speech.script_turns(new_speech, speech.NEW_SCRIPT, io.SAMPLE_RATE):
        truth[int(person)] |= (times >= start) & (times < end)
    assert plan.roles.method == "voices"
    assert (plan.roles.speaking == truth).all(axis=0).mean() >= 0.9


def test_one_voice_and_silence(avatar, work):
    one = dialogue_render.plan_dialogue(avatar, io.read_audio(work / "one_voice.wav"))
    assert one.roles.method == "one voice" and one.roles.speaking[0].any() and not one.roles.speaking[1].any()
    quiet = dialogue_render.plan_dialogue(avatar, io.read_audio(work / "silence.wav"))
    assert quiet.roles.method == "silence" and not quiet.roles.speaking.any()
    assert np.isfinite(quiet.pose).all() and np.isfinite(quiet.expression).all()


@pytest.mark.parametrize("name", ["8k.wav", "48k_stereo.wav"])
def test_any_rate_and_layout(work, name):
    out = f"{name}.mp4"
    assert run(render_args(name, out), work) == 0
    assert abs(json.loads((work / f"{name}.json").read_text())["seconds"] - 2.0) < 0.05


def test_generated_poses_stay_inside_what_training_saw(avatar, new_speech):
    plan = dialogue_render.plan_dialogue(avatar, new_speech[: 8 * io.SAMPLE_RATE])
    lo, hi = avatar.pose_range[:, None, 0], avatar.pose_range[:, None, 1]
    assert ((plan.pose >= lo - 1e-5) & (plan.pose <= hi + 1e-5)).all()


def test_given_roles_and_their_errors(tmp_path):
    roles = parse_roles("0-1:0, 1-2:1", 50, 25.0)
    assert roles.speaking[0, :25].all() and roles.speaking[1, 25:].all() and not roles.speaking[0, 25:].any()
    (tmp_path / "roles.txt").write_text("# seconds: person\n0-1:1\n")
    assert parse_roles(str(tmp_path / "roles.txt"), 50, 25.0).speaking[1, :25].all()
    with pytest.raises(ValueError, match="START-END:PERSON"):
        parse_roles("0-1", 50, 25.0)
    with pytest.raises(ValueError, match="0 to 1"):
        parse_roles("0-1:2", 50, 25.0)


def test_listeners_blink_at_their_own_rate_and_the_blinks_are_whole():
    blink = np.zeros((2, 3000), np.float32)
    profile = np.array([0.2, 0.6, 1.0, 0.6, 0.2])
    for p, every in ((0, 50), (1, 100)):  # 0.5 and 0.25 blinks per second at 25 fps
        for t in range(20, 2990, every):
            blink[p, t - 2 : t + 3] = profile
    speaking = np.zeros((2, 3000), bool)
    speaking[0, :1500] = True
    model = BlinkModel.fit(blink, speaking, 25.0)
    np.testing.assert_allclose(model.rate[:, 1], [0.5, 0.25], rtol=0.05)
    generated = model.generate(speaking, 25.0, seed=1)
    rate = [len(blink_events(g)) / 120 for g in generated]
    assert abs(rate[0] - 0.5) < 0.12 and abs(rate[1] - 0.25) < 0.08
    assert generated.max() > 0.9  # whole blinks, not a mean value


# --- bad input: a clear message naming the file, nothing half-written -----------------------------

AVATAR = mt.SAMPLE_DIR / "avatars.pt"
CASES = {
    "missing audio": (["render", AVATAR, "nope.wav", "--out", "x.mp4"], 1, ["nope.wav"]),
    "unreadable audio": (["render", AVATAR, "random.wav", "--out", "x.mp4"], 1, ["random.wav"]),
    "video without audio": (
        ["render", AVATAR, "mute.mp4", "--out", "x.mp4"],
        1,
        ["mute.mp4", "no audio track"],
    ),
    "missing avatar": (
        ["render", "none.pt", "silence.wav", "--out", "x.mp4"],
        1,
        ["none.pt", "no such file"],
    ),
    "bad --roles": (render_args("silence.wav", "x.mp4", "--roles", "0-1"), 1, ["--roles", "START-END"]),
    "--size 0": (render_args("silence.wav", "x.mp4", "--size", "0"), 2, ["--size"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named(case, work, capsys):
    args, code, fragments = CASES[case]
    assert run(args, work) == code
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err and not (work / "x.mp4").exists()


def test_an_existing_clip_needs_overwrite(work, capsys):
    (work / "taken.mp4").write_bytes(b"keep me")
    assert run(render_args("silence.wav", "taken.mp4"), work) == 2
    assert "--overwrite" in capsys.readouterr().err and (work / "taken.mp4").read_bytes() == b"keep me"
    assert run(render_args("silence.wav", "taken.mp4", "--overwrite"), work) == 0
    assert io.probe(work / "taken.mp4").has_audio


@pytest.mark.parametrize("damage", ["truncated", "version", "pickled", "another kind"])
def test_damaged_avatar_files_are_refused(tmp_path, damage):
    path = tmp_path / "avatar.pt"
    state = torch.load(mt.SAMPLE_DIR / "avatars.pt", weights_only=True)
    if damage == "truncated":
        raw = (mt.SAMPLE_DIR / "avatars.pt").read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        match = "truncated or corrupt"
    elif damage == "version":
        torch.save({**state, "format_version": 99}, path)
        match = "format version 99"
    elif damage == "pickled":
        import datetime

        torch.save({**state, "note": datetime.date(2026, 1, 1)}, path)
        match = "Python objects"
    else:
        torch.save({**state, "kind": "something else"}, path)
        match = "not a minitalk avatar file"
    with pytest.raises(FileFormatError, match=match):
        load_avatar(path)


def test_an_interrupted_render_leaves_no_clip(work, capsys, monkeypatch):
    calls = []

    def interrupt_later(model, cameras, person, *args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return np.zeros((len(person), SIZE, SIZE, 3), np.float32)

    monkeypatch.setattr(dialogue_render, "render_images", interrupt_later)
    assert run(render_args("change.wav", "stopped.mp4"), work) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (work / "stopped.mp4").exists() and not list(work.glob(".stopped*"))


def test_long_audio_warns(avatar, work, monkeypatch):
    monkeypatch.setattr(dialogue_render, "MAX_SECONDS", 1.0)
    with pytest.warns(dialogue_render.RenderWarning, match="minutes of audio"):
        dialogue_render.render_dialogue(
            avatar, work / "silence.wav", work / "long.mp4", size=16, progress=False
        )


def test_a_third_voice_goes_to_the_nearer_person_with_a_warning(avatar, new_speech):
    """Person 1, person 0, then a stranger (person 0's speech lowered by seven semitones)."""
    import librosa

    rate = io.SAMPLE_RATE
    turns = speech.script_turns(new_speech, speech.NEW_SCRIPT, rate)
    one, zero = (new_speech[int(turns[i, 1] * rate) : int((turns[i, 1] + 3) * rate)] for i in (0, 1))
    stranger = librosa.effects.pitch_shift(zero, sr=rate, n_steps=-7).astype(np.float32)
    gap = np.zeros(rate // 2, np.float32)
    plan = dialogue_render.plan_dialogue(avatar, np.concatenate([one, gap, zero, gap, stranger]))
    first = [t["speaker"] for t in plan.roles.turns(plan.fps) if t["speaker"] >= 0][:2]
    assert first == [1, 0]
    assert any("unlike every person's" in w for w in plan.roles.warnings)


def test_a_planned_blink_closes_the_rendered_eyes_as_far_as_a_counted_blink(avatar, new_speech):
    """The blink value alone closes the eyes: the same face states with blink 0 and with blink 1,
    rendered at the avatar's size and read by FaceMesh, must differ by at least what the
    evaluator counts as a blink (`blink_from_ear`: above 0.5 means an eye aspect ratio below
    0.65 of the open one)."""
    from minitalk.prepare.face import detect_landmarks, eye_aspect_ratio

    plan = dialogue_render.plan_dialogue(avatar, new_speech[: 2 * io.SAMPLE_RATE])
    plan.blink[:] = 0.0
    plan.blink[:, 1::2] = 1.0  # every other frame closed
    states = dialogue_render.face_states(avatar, plan, torch.device("cpu"))
    frames = np.stack(list(dialogue_render.dialogue_frames(avatar, plan, states, avatar.size, "cpu")))[:12]
    for p in range(2):
        ear = eye_aspect_ratio(detect_landmarks(frames[:, :, p * avatar.size : (p + 1) * avatar.size]))
        assert np.isfinite(ear).all(), f"person {p}: FaceMesh lost the rendered face"
        open_, closed = ear[0::2].mean(), ear[1::2].mean()
        assert closed < 0.65 * open_, f"person {p}: eye aspect ratio {closed:.3f} closed, {open_:.3f} open"


def test_a_smaller_clip_is_the_trained_size_averaged_down_and_a_larger_one_agrees_with_it(avatar, new_speech):
    """The shipped avatar's neural renderer was trained at its own size S. An image asked for at
    S / 2 is the S render averaged over 2x2 blocks (a feature map coarser than training's made a
    broken face: `render.rendered_size`), in `render_images` and in the clip `minitalk render`
    writes; one at 2 S, from a feature map twice as fine, still agrees with the S render block by
    block in the face."""
    from minitalk.nerf.frames import Cameras
    from minitalk.nerf.render import render_images

    plan = dialogue_render.plan_dialogue(avatar, new_speech[: io.SAMPLE_RATE])
    states = dialogue_render.face_states(avatar, plan, torch.device("cpu"))
    cameras = Cameras(avatar.intrinsics, plan.pose, avatar.plates, plan.fps, avatar.model.config.torso_lag_s,
                      avatar.mean_translation)  # fmt: skip
    person, t = torch.tensor([0, 1]), torch.tensor([10, 10])

    def render(size):
        return render_images(avatar.model, cameras, person, t, "cpu", states[person, t], size)

    s = avatar.size
    trained, small, fine = render(s), render(s // 2), render(2 * s)
    averaged = trained.reshape(2, s // 2, 2, s // 2, 2, 3).mean((2, 4))  # (2, S/2, S/2, 3)
    np.testing.assert_allclose(small, averaged, atol=1e-5)
    fine = fine.reshape(2, s, 2, s, 2, 3).mean((2, 4))  # (2, S, S, 3)
    face = np.s_[:, s // 8 : 5 * s // 8, s // 4 : 3 * s // 4]  # rows 1/8 to 5/8, columns 1/4 to 3/4
    assert metrics.psnr(fine[face], trained[face]) > 29
    clip = list(dialogue_render.dialogue_frames(avatar, plan, states, s // 2, "cpu", batch=11))[10]
    for p in range(2):
        panel = clip[:, p * s // 2 : (p + 1) * s // 2] / 255
        assert np.abs(panel - averaged[p]).max() <= 1 / 255 + 1e-6
