"""Several people (DialogueNeRF V-D): one video of three people or one person alone prepared, several
prepared folders in one model, the people numbered across folders, each clip on its own clock, the
avatar naming them, and any two to nine of them rendered as a call."""

import json
import shutil

import numpy as np
import pytest
import torch

from minitalk.cli import main
from minitalk.dialogue.avatar import load_avatar
from minitalk.dialogue.render import plan_dialogue
from minitalk.dialogue.roles import assign_roles
from minitalk.evaluate.clip import evaluate_clip
from minitalk.io import SAMPLE_RATE, MediaError, probe, read_audio, read_video, write_audio
from minitalk.nerf.frames import Frames
from minitalk.pose.face_state import ListenerConfig, ListenerExpression
from minitalk.pose.generator import PoseConfig, PoseGenerator, speaker_track, staggered
from minitalk.prepare import data
from minitalk.prepare.audio import log_mel
from minitalk.prepare.sources import PrepareError, face_centres, grid_regions

TINY = ["--iters", "6", "--quiet"]


@pytest.fixture(scope="module")
def both(prepared_clip, second_clip):
    return Frames([prepared_clip, second_clip])


def test_several_folders_are_one_set_of_people_each_on_its_own_clock(both, prepared_clip, second_clip):
    one, two = Frames(prepared_clip), Frames(second_clip)
    assert both.n_people == 4 and both.n_frames == max(one.n_frames, two.n_frames) > two.n_frames
    assert both.group.tolist() == [0, 0, 1, 1] and both.lengths.tolist() == [300, 300, 200, 200]
    # the second folder's people are persons 2 and 3, with their own frames, held-out stretch and audio
    assert torch.equal(both.images[2:, : two.n_frames], two.images)
    assert torch.equal(both.held_out[2:, : two.n_frames], two.held_out)
    assert torch.equal(both.held_out[:2], one.held_out)
    t = torch.tensor([0, 150, 199])
    mel_two = two.face_state_inputs(torch.tensor([1, 1, 1]), t)[0]
    assert torch.equal(both.face_state_inputs(torch.tensor([3, 3, 3]), t)[0], mel_two)
    # the padding after a shorter clip is never trained on, held out or spoken in
    pad = ~both.present
    assert pad[2:, two.n_frames :].all() and not pad[:2].any()
    assert (
        not (both.trainable & pad).any()
        and not (both.held_out & pad).any()
        and not (both.speaking & pad).any()
    )
    # rays carry each person's own camera: the second folder's person 0 is person 2
    pixel = torch.tensor([5, 900])
    mine = two.rays(torch.tensor([0, 0]), torch.tensor([10, 10]), pixel)
    theirs = both.rays(torch.tensor([2, 2]), torch.tensor([10, 10]), pixel)
    torch.testing.assert_close(theirs["d_head"], mine["d_head"])
    assert theirs["person"].tolist() == [2, 2]


def test_folders_that_cannot_train_together_are_refused_with_the_numbers(
    prepared_clip, second_clip, tmp_path
):
    with pytest.raises(ValueError, match="given twice"):
        Frames([prepared_clip, second_clip, prepared_clip])
    other_fps = tmp_path / "fps"
    shutil.copytree(second_clip, other_fps)
    tracks = dict(np.load(other_fps / "tracks.npz"))
    np.savez(other_fps / "tracks.npz", **{**tracks, "fps": np.float32(30)})
    with pytest.raises(ValueError, match=r"30 fps.* 25 fps"):
        Frames([prepared_clip, other_fps])
    other_size = tmp_path / "size"
    shutil.copytree(second_clip, other_size)
    masks = dict(np.load(other_size / "masks.npz"))
    np.savez(
        other_size / "masks.npz",
        labels=masks["labels"][:, :, :32, :32],
        background=masks["background"][:, :32, :32],
    )
    with pytest.raises(ValueError, match=r"prepared at 32 px.* at 64 px"):
        Frames([prepared_clip, other_size])
    with pytest.raises(PrepareError):  # and a broken one is still named as it was alone
        (other_size / "prepare_report.json").unlink()
        Frames([prepared_clip, other_size])


def test_three_people_in_a_row_and_one_alone_are_prepared(three_and_one):
    row, alone, truth = three_and_one
    report = json.loads((row / "prepare_report.json").read_text())
    tracks = data.load_tracks(row)
    assert report["people"] == ["left", "middle", "right"] and len(report["faces_found"]) == 3
    assert tracks["speaking"].shape == (3, 200) and tracks["pose"].shape == (3, 200, 6)
    assert data.people_names(row) == ["row left", "row middle", "row right"]
    # both voices go to the sample's two people; the mouth that moves out of time with them never speaks
    assert report["who_speaks"]["method"] == "voice+mouth"
    assert (tracks["speaking"][:2] == truth).all(axis=0).mean() > 0.9 and not tracks["speaking"][2].any()
    lone = data.load_tracks(alone)
    assert lone["speaking"].shape == (1, 200) and data.people_names(alone) == ["alone"]
    assert json.loads((alone / "prepare_report.json").read_text())["who_speaks"]["method"] == "one person"
    assert (lone["speaking"][0] == truth.any(axis=0)).mean() > 0.9  # alone: every voice heard is theirs


def test_a_folder_of_three_and_one_alone_train_one_avatar_and_one_alone_cannot(three_and_one, tmp_path,
                                                                               capsys):  # fmt: skip
    row, alone, _ = three_and_one
    avatar = tmp_path / "four.pt"
    assert (
        main(["train", str(row), str(alone), "--run", str(tmp_path / "run"), *TINY, "--export", str(avatar)])
        == 0
    )
    assert load_avatar(avatar).names == ["row left", "row middle", "row right", "alone"]
    with pytest.raises(SystemExit):  # refused before training: nobody to learn listening from
        main(
            [
                "train",
                str(alone),
                "--run",
                str(tmp_path / "solo"),
                *TINY,
                "--export",
                str(tmp_path / "solo.pt"),
            ]
        )
    assert "one person each" in capsys.readouterr().err and not (tmp_path / "solo").exists()


def test_faces_in_a_grid_get_a_cell_each_in_reading_order():
    # a 2 x 2 call of three (the bottom right cell empty), faces 100 px high, two of them a little off level
    boxes = np.array([[660, 120, 760, 220, 0.9], [250, 600, 350, 700, 0.8], [240, 100, 340, 200, 0.95],
                      [5, 5, 20, 20, 0.1]])  # fmt: skip
    centres = face_centres(boxes, 3)  # the least confident box is not a face
    np.testing.assert_array_equal(centres, [[290, 150], [710, 170], [300, 650]])
    regions, names = grid_regions(centres, 1000, 800, 100)
    # rows split halfway between their heights (160 and 650), the lone face takes its row's width
    assert regions == [(0, 0, 500, 405, 0), (500, 0, 1000, 405, 0), (0, 405, 1000, 800, 0)]
    assert names == ["1", "2", "3"]
    regions, names = grid_regions(np.array([[100, 200], [300, 230], [500, 190]]), 600, 400, 100)
    assert [r[:4] for r in regions] == [(0, 0, 200, 400), (200, 0, 400, 400), (400, 0, 600, 400)]
    assert names == ["left", "middle", "right"]


def test_motion_models_learn_every_listener_of_three_and_only_the_mean_pose_of_one_alone(three_and_one):
    row, alone = (data.load_tracks(f) for f in three_and_one[:2])
    keys = ("pose", "speaking", "zcr", "rms")
    pose = PoseGenerator(PoseConfig(epochs=1)).fit(*([c[k] for c in (row, alone)] for k in keys))
    assert pose.pose_mean.shape == (4, 6)
    np.testing.assert_allclose(pose.pose_mean[3], alone["pose"][0].mean(0), rtol=1e-5, atol=1e-5)
    expression = [c["expression"].astype(np.float32) for c in (row, alone)]
    listener = ListenerExpression(expression[0].shape[-1], ListenerConfig(epochs=1))
    assert (
        listener.fit(expression, *([c[k] for c in (row, alone)] for k in keys)).expression_mean.shape[0] == 4
    )
    with pytest.raises(ValueError, match="two or more people"):  # nobody to learn listening from
        PoseGenerator(PoseConfig(epochs=1)).fit(*(alone[k] for k in keys))


def test_motion_models_of_one_clip_are_those_of_a_list_of_it_and_two_clips_hold_four_people(
    prepared_clip, second_clip
):
    one, two = data.load_tracks(prepared_clip), data.load_tracks(second_clip)

    def fitted(clips):  # one epoch each: the sharing, not the learning, is under test
        pose = PoseGenerator(PoseConfig(epochs=1)).fit(
            *([c[k] for c in clips] for k in ("pose", "speaking", "zcr", "rms"))
        )
        expression = [c["expression"].astype(np.float32) for c in clips]
        listener = ListenerExpression(expression[0].shape[-1], ListenerConfig(epochs=1))
        listener.fit(expression, *([c[k] for c in clips] for k in ("pose", "speaking", "zcr", "rms")))
        return pose, listener

    alone = PoseGenerator(PoseConfig(epochs=1)).fit(one["pose"], one["speaking"], one["zcr"], one["rms"])
    listed, listener = fitted([one])
    for key, value in alone.state_dict()["speaker_net"].items():
        assert torch.equal(value, listed.state_dict()["speaker_net"][key]), key
    assert np.array_equal(alone.pose_std, listed.pose_std)
    pose, listener = fitted([one, two])
    assert pose.pose_mean.shape == (4, 6) and listener.expression_mean.shape[0] == 4
    np.testing.assert_allclose(pose.pose_mean[2:], two["pose"].mean(axis=1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        listener.expression_mean[:2], one["expression"].mean(axis=1), rtol=1e-5, atol=1e-5
    )


@pytest.fixture(scope="module")
def four(prepared_clip, second_clip, tmp_path_factory):
    """Both folders trained into one model through the command line: the run and the avatar file."""
    run = tmp_path_factory.mktemp("four") / "run"
    avatar = run.parent / "four.pt"
    assert (
        main(
            ["train", str(prepared_clip), str(second_clip), "--run", str(run), "--export", str(avatar), *TINY]
        )
        == 0
    )
    return run, avatar


def test_train_several_folders_export_names_and_render_any_two(four, prepared_clip, tmp_path):
    run, avatar_path = four
    report = json.loads((run / "train_report.json").read_text())
    assert len(report["psnr"]) == 4 and report["model"]["n_people"] == 4 and None not in report["psnr"]
    avatar = load_avatar(avatar_path)
    assert avatar.n_people == 4 and avatar.names == [
        "clip left",
        "clip right",
        "swapped left",
        "swapped right",
    ]
    assert avatar.voice_prints.shape == (4, 13) and avatar.pose_range.shape == (4, 2, 6)
    pair = avatar.select([3, 0])
    assert pair.names == ["swapped right", "clip left"] and pair.identity.tolist() == [3, 0]
    assert np.array_equal(pair.plates[0], avatar.plates[3]) and np.array_equal(
        pair.pose.pose_mean[1], avatar.pose.pose_mean[0]
    )
    speech = tmp_path / "speech.wav"
    write_audio(speech, read_audio(prepared_clip / "audio.wav")[: 2 * SAMPLE_RATE])
    clip = tmp_path / "pair.mp4"
    assert (
        main(["render", str(avatar_path), str(speech), "--out", str(clip), "--people", "3,0", "--quiet"]) == 0
    )
    assert probe(clip).width == 2 * probe(clip).height == 2 * avatar.size
    assert json.loads(clip.with_suffix(".json").read_text())["people"] == ["swapped right", "clip left"]
    # the generated motion sits on each chosen person's own mean pose
    plan = plan_dialogue(pair, read_audio(speech), given_roles="0-1:0,1-2:1")
    assert plan.pose.shape[0] == 2 and np.all(plan.pose >= pair.pose_range[:, None, 0] - 1e-5)


def test_a_call_of_three_is_a_grid_with_the_speaker_framed(four, tmp_path):
    avatar = load_avatar(four[1])
    speech = tmp_path / "speech.wav"
    write_audio(speech, np.zeros(2 * SAMPLE_RATE, np.float32))
    clip = tmp_path / "call.mp4"
    roles = "0-1:2,1-2:0"  # the third person of the call (avatar person 1), then the first (person 3)
    args = ["--people", "3,0,1", "--roles", roles, "--highlight", "--quiet"]
    assert main(["render", str(four[1]), str(speech), "--out", str(clip), *args]) == 0
    s = avatar.size
    video, _ = read_video(clip)
    assert video.shape[1:3] == (2 * s, 2 * s)  # three people in a 2 x 2 grid
    summary = json.loads(clip.with_suffix(".json").read_text())
    assert summary["people"] == ["swapped right", "clip left", "clip right"]
    assert [t["speaker"] for t in summary["turns"]] == [2, 0]
    # the frame in white around the speaker's cell only: bottom left, then top left; the fourth cell empty
    first, last = video[5].astype(int), video[-5].astype(int)
    assert (first[2 * s - 1, :s] > 200).all() and (first[s - 1, s : 2 * s] < 200).any()
    assert (last[0, :s] > 200).all() and (last[2 * s - 1, :s] < 200).any()
    assert first[s + 4 :, s + 4 :].max() < 40  # no one in the fourth cell (H.264 leaves a little)

    # evaluate cuts the grid by the render report's people (test_evaluate.py scores a grid): six do not fit
    clip.with_suffix(".json").write_text(json.dumps({**summary, "people": summary["people"] * 2}))
    with pytest.raises(MediaError, match="call.mp4: .* not the layout of 6 people, 2 x 3"):
        evaluate_clip(clip, progress=False)


def test_voices_go_to_the_nearest_of_three_prints(new_speech_roles):
    two, three = new_speech_roles
    assert three.speaking.shape == (3, two.speaking.shape[1]) and not three.speaking[2].any()
    assert np.array_equal(three.speaking[:2], two.speaking)  # a print far from every voice changes nothing


@pytest.fixture(scope="module")
def new_speech_roles(sample_dir):
    """Roles of the sample's new speech from the shipped avatar's two prints, and from those two and a
    third far from both (a person of the avatar who never speaks in it)."""
    avatar = load_avatar(sample_dir / "avatars.pt")
    audio = read_audio(sample_dir / "new_dialogue.wav")
    n = int(len(audio) / SAMPLE_RATE * avatar.fps)
    far = avatar.voice_prints[:1] + 10 * avatar.voice_spread
    return [
        assign_roles(audio, log_mel(audio), n, avatar.fps, prints, avatar.voice_spread)
        for prints in (avatar.voice_prints, np.concatenate([avatar.voice_prints, far]))
    ]


def test_listeners_follow_the_same_speech_each_a_little_later():
    x = np.arange(10.0)[:, None]
    speaker = np.array([0] * 5 + [2] * 5)
    out = staggered(x, speaker, 3, fps=25.0, stagger_s=0.08)  # 2 frames per listener
    # first turn, person 0 speaks: person 1 listens on time, person 2 two frames later from the turn's start
    assert out[0, :5, 0].tolist() == out[1, :5, 0].tolist() == [0, 1, 2, 3, 4]
    assert out[2, :5, 0].tolist() == [0, 0, 0, 1, 2]
    # second turn, person 2 speaks: now person 1 is the second listener
    assert out[0, 5:, 0].tolist() == out[2, 5:, 0].tolist() == [5, 6, 7, 8, 9]
    assert out[1, 5:, 0].tolist() == [5, 5, 5, 6, 7]
    assert speaker_track(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]], bool)).tolist() == [2, 0, 0, 2]


@pytest.mark.parametrize(
    "case",
    ["a person who is not there", "ten people", "one person twice", "no run folder", "one name twice",
     "too few names"],
)  # fmt: skip
def test_bad_people_are_refused_before_anything_is_written(case, four, prepared_clip, second_clip, tmp_path,
                                                           capsys):  # fmt: skip
    folders = [str(prepared_clip), str(second_clip)]
    if case in ("a person who is not there", "ten people", "one person twice"):
        avatar = four[1]
        people, said = {
            "a person who is not there": ("0,4", "no person 4"),
            "ten people": ("0,1,2,3,0,1,2,3,0,1", "10 people; a call here is 2 to 9"),
            "one person twice": ("1,1", "given twice"),
        }[case]
        speech = tmp_path / "speech.wav"
        write_audio(speech, np.zeros(SAMPLE_RATE, np.float32))
        capsys.readouterr()
        assert (
            main(["render", str(avatar), str(speech), "--out", str(tmp_path / "c.mp4"), "--people", people])
            == 1
        )
        assert said in capsys.readouterr().err
        assert not (tmp_path / "c.mp4").exists()
        return
    copy = tmp_path / "copy"
    shutil.copytree(prepared_clip, copy)  # the same people under the same names
    args = {
        "no run folder": ["train", *folders],
        "one name twice": ["train", str(prepared_clip), str(copy), "--run", str(tmp_path / "run")],
        "too few names": ["train", *folders, "--run", str(tmp_path / "run"), "--names", "a,b,c"],
    }[case]
    try:
        code = main([*args, "--quiet"])
    except SystemExit as stop:  # argparse's own errors: a usage line and exit status 2
        code = stop.code
    err = capsys.readouterr().err
    if case == "no run folder":
        assert code == 2 and "name its run folder" in err
    else:
        assert (
            code == 1
            and {"one name twice": "named twice", "too few names": "3 names for 4 people"}[case] in err
        )
    assert not (tmp_path / "run").exists()


def test_one_video_read_as_one_person_is_not_the_cache_of_it_read_as_several(sample_dir):
    from minitalk.prepare.sources import open_source

    video = sample_dir / "dialogue.mp4"
    assert open_source(video).key() != open_source(single=video).key()
