"""Evaluation: each metric on a known case, the sync proxy on clips shifted by known frames, the
degradations, the Preference Score's ranking machinery, and `minitalk evaluate` end to end with
its bad inputs."""

import dataclasses
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch

from minitalk import cli, io, metrics
from minitalk.evaluate import degrade, faces, preference, ranking, sync, viewer
from minitalk.evaluate.clip import EvaluateWarning, evaluate_clip
from minitalk.evaluate.faces import FaceReadings, read_panels
from minitalk.evaluate.scores import Derived
from minitalk.evaluate.sharpness import cpbd

FPS = 25
SIZE = 128


@pytest.fixture(scope="module")
def real(tmp_path_factory, clip, clip_audio):
    """The first 12 s of the sample prepared at 128 px, its crops side by side as a clip with its
    audio (real.mp4), and the turns beside it as `minitalk render` writes them (real.json)."""
    from minitalk.dialogue.roles import Roles
    from minitalk.prepare import data

    d = tmp_path_factory.mktemp("evaluate")
    io.write_video(d / "source.mp4", clip, FPS, audio=clip_audio)
    data.prepare(d / "source.mp4", d / "prep", size=SIZE, progress=False)
    tracks = data.load_tracks(d / "prep")
    crops = [data.read_person_frames(d / "prep", p) for p in range(2)]
    panels = np.concatenate(crops, axis=2)
    io.write_video(d / "real.mp4", panels, FPS, audio=clip_audio)
    turns = Roles(tracks["speaking"], "given").turns(FPS)
    (d / "real.json").write_text(json.dumps({"turns": turns}))
    return {"dir": d, "tracks": tracks, "crops": crops, "panels": panels, "audio": clip_audio}


def test_cpbd_falls_with_every_step_of_blur(real):
    image = real["crops"][0][100]
    scores = [cpbd(image if s == 0 else cv2.GaussianBlur(image, (0, 0), s)) for s in (0, 0.5, 1, 1.5, 2, 3)]
    # falls at every step until no edge is left that a viewer would call sharp
    assert all(a > b or a == b == 0 for a, b in zip(scores, scores[1:], strict=False)), scores
    assert scores[0] > 0.3 and scores[-1] == 0
    assert cpbd(np.full((64, 64, 3), 128, np.uint8)) == 0.0  # no edge: nothing a viewer calls sharp


def test_psnr_and_ssim_on_known_cases():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert metrics.psnr(img, np.clip(img + 0.1, 0, 2), peak=2) == pytest.approx(
        20 * np.log10(2 / 0.1), abs=1e-6
    )
    assert metrics.ssim(img, img) == pytest.approx(1.0)


def test_landmark_metrics_on_known_cases(real):
    lm = real["tracks"]["landmarks"][0, :50].astype(np.float64)
    assert metrics.lmd(lm, lm) == 0
    moved = lm.copy()
    moved[..., 0] += 2.0  # every point 2 px to the right
    width = metrics.face_width(lm)
    assert metrics.lmd(moved, lm) == pytest.approx(np.mean(2.0 / width))
    # in units of face width: the same at twice the resolution
    assert metrics.lmd(2 * moved, 2 * lm) == pytest.approx(metrics.lmd(moved, lm))
    exp = np.random.default_rng(0).normal(size=(40, 16))
    assert metrics.exp_l1(exp + 0.5, exp) == pytest.approx(0.5)
    assert metrics.exp_fd(exp, exp) == pytest.approx(0, abs=1e-9)
    blink = np.zeros(250)
    for start in (10, 60, 160):
        blink[start : start + 4] = 1
    stats = metrics.blink_statistics(blink, FPS)
    assert stats["blink_rate"] == pytest.approx(3 / 10) and stats["blink_interval"] == pytest.approx(75 / FPS)
    pose = np.zeros((100, 6))
    pose[:, 1] = np.where(np.arange(100) % 2, 2.0, -2.0)  # yaw +-2 degrees
    assert metrics.head_motion_variance(pose) == pytest.approx(4.0)


@pytest.mark.parametrize("shift", [-10, -5, -2, 0, 2, 5, 10])
def test_sync_finds_an_audio_shift_within_one_frame(real, shift):
    if "readings" not in real:
        real["readings"] = [read_panels(c) for c in real["crops"]]
    n = len(real["crops"][0])
    envelope = sync.speech_envelope(degrade.shift_audio(real["audio"], shift, FPS), FPS, n)
    for p in range(2):
        r = real["readings"][p]
        found = sync.lip_sync(r.opening, r.interior, envelope, real["tracks"]["speaking"][p])
        assert abs(found["av_offset"] - shift) <= 1, (p, found)
        assert found["av_conf"] > 0.2


def test_evaluate_scores_a_clip_against_its_real_frames_and_finds_its_shift(real):
    d = real["dir"]
    io.write_video(d / "late.mp4", real["panels"], FPS, audio=degrade.shift_audio(real["audio"], 5, FPS))
    (d / "late.json").write_text((d / "real.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluateWarning)
        report = evaluate_clip(d / "late.mp4", prepared=d / "prep", progress=False)
    # a complete clip and reference: the only warning is person 0's mouth readings disagreeing
    # (her closed smile shows teeth, where FaceMesh's lip gap runs against the pixels)
    said = [str(w.message) for w in caught if issubclass(w.category, EvaluateWarning)]
    assert all(m.startswith("person 0, talking: the lip gap and the dark share") for m in said), said
    assert report["warnings"] == said
    assert report["frame_aligned"] and report["speaking_from"] == "turns in late.json"
    assert report["settings"] == {"reference": None, "prepared": str(d / "prep"), "avatar": None}
    for person in report["per_person"]:
        talking, listening = person["talking"], person["listening"]
        assert abs(talking["av_offset"] - 5) <= 1
        assert talking["psnr"] > 30 and talking["ssim"] > 0.9  # the real frames, H.264 twice
        assert talking["lmd"] < 0.02 and listening["pose_l1"] < 0.01
        assert 0 < talking["cpbd"] <= 1 and listening["frames"] > 0
        assert 0 <= talking["preference_score"] <= 6 and 0 <= listening["preference_score"] <= 6
    assert any(
        r.startswith("Preference Score (0-6, higher preferred) learned from known orderings")
        for r in report["remarks"]
    )


def test_a_call_of_three_is_cut_into_its_panels_in_the_order_render_lays_them_out(real):
    """Three people in a 2 x 2 grid (the fourth cell empty), scored against a reference laid out the
    same way whose third panel shows someone else: each panel is compared with its own."""
    from minitalk.dialogue.render import grid

    d, (a, b), n = real["dir"], real["crops"], 3 * FPS
    calls = {"call": [a, b, a[:, :, ::-1]], "other": [a, b, b]}  # the third: the first mirrored, or b
    for name, people in calls.items():
        frames = np.stack([grid(np.stack([p[t] for p in people])) for t in range(n)])
        io.write_video(d / f"{name}.mp4", frames, FPS, audio=real["audio"][: n * io.SAMPLE_RATE // FPS])
    turns = [{"speaker": 2, "start": 0.0, "end": 3.0}]
    (d / "call.json").write_text(json.dumps({"people": ["a", "b", "a mirrored"], "turns": turns}))
    report = evaluate_clip(d / "call.mp4", reference=d / "other.mp4", progress=False)
    assert (report["people"], report["size"], report["frame_aligned"]) == (3, SIZE, True)
    assert [p["frames_without_face"] for p in report["per_person"]] == [0, 0, 0]
    psnr = [p["all"]["psnr"] for p in report["per_person"]]
    assert psnr[0] > 30 and psnr[1] > 30 and psnr[2] < 20, psnr
    assert report["speaking_from"] == "turns in call.json" and report["_readings"]["speaking"][2].all()
    (d / "other.json").write_text(json.dumps({"people": list("abcde"), "turns": turns}))  # five: not 2 x 2
    with pytest.raises(io.MediaError, match="other.mp4: 256x256 is not the layout of 5 people, 2 x 3"):
        evaluate_clip(d / "other.mp4", progress=False)


def test_degradations_grow_with_their_level(real):
    first_blink = int(np.flatnonzero(real["tracks"]["blink"][0] > 0.5)[0])
    window = slice(max(0, first_blink - 15), max(0, first_blink - 15) + 30)  # holds a blink
    clean = real["crops"][0][window]
    lm = real["tracks"]["landmarks"][0, window]
    blink = real["tracks"]["blink"][0, window]
    other = real["crops"][0][(window.start + 100) % 200 :][:30]
    audio = real["audio"][: 30 * io.SAMPLE_RATE // FPS]
    for fam in degrade.FAMILIES:
        if fam.name == "audio_shift":
            continue
        diffs = []
        for value in fam.levels:
            frames, sound = degrade.apply(fam.name, value, clean, audio, FPS, lm, blink, other)
            assert frames.shape == clean.shape and frames.dtype == np.uint8 and sound is audio
            diffs.append(np.abs(frames.astype(float) - clean).mean())
        assert all(b > a for a, b in zip(diffs, diffs[1:], strict=False)), (fam.name, diffs)
        assert diffs[0] > 0, fam.name
    n = 3 * io.SAMPLE_RATE // FPS
    later, earlier = degrade.shift_audio(audio, 3, FPS), degrade.shift_audio(audio, -3, FPS)
    np.testing.assert_array_equal(later[n:], audio[:-n])
    np.testing.assert_array_equal(earlier[:-n], audio[n:])
    assert not later[:n].any() and not earlier[-n:].any() and len(later) == len(earlier) == len(audio)


def _toy_data(n_segments=10, seed=0):
    """Queries whose known order follows a hidden quality q: the first metric rises with q, the
    second falls with it, the third is noise; every segment has its own offset."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_segments):
        offset = rng.normal()
        rows.append((s, "clean", 0, 10.0))
        for fam in ("a", "b"):
            for level in (1, 2, 3):
                rows.append((s, fam, level, -float(level)))
    seg, fam, lev, score = (np.array(c) for c in zip(*rows, strict=True))
    quality = -lev + 0.1 * rng.normal(size=len(lev))
    X = np.stack([quality + offset * 0.2, -quality, rng.normal(size=len(lev))], 1)
    return preference.PreferenceData("talking", ("psnr", "lmd", "cpbd"), X, score, seg, seg, fam, lev)


def test_comparable_pairs_keep_only_known_orderings():
    data = _toy_data(2)
    pairs = preference.comparable_pairs(data)
    i, j = pairs.T
    assert (data.score[i] > data.score[j]).all() and (data.group[i] == data.group[j]).all()
    same = data.family[i] == data.family[j]
    assert (same | (data.family[i] == "clean")).all()  # two degradations are never compared
    # per segment: clean over 6, and 3 ordered pairs within each family
    assert len(pairs) == 2 * (6 + 3 + 3)


def test_rankings_are_scored_as_the_paper_scores_them():
    data = _toy_data(3)
    perfect = data.score + 0.01 * data.relevance
    assert ranking.mrr(perfect, data) == 1.0
    ideal = ranking.dcg(data.relevance, data)
    assert ranking.dcg(perfect, data) == pytest.approx(ideal)
    assert ranking.dcg(-perfect, data) < ideal
    assert ranking.mrr(-perfect, data) == pytest.approx(1 / 7)
    # rank-sum and #Top-1 read the metrics' directions (psnr up, lmd down); here without the noise
    clean = dataclasses.replace(data, names=data.names[:2], X=data.X[:, :2])
    assert ranking.mrr(ranking.rank_sum(clean), clean) == 1.0
    assert ranking.mrr(ranking.top1(clean), clean) == 1.0
    flipped = dataclasses.replace(clean, names=("lmd", "psnr"))  # read the wrong way round
    assert ranking.mrr(ranking.rank_sum(flipped), flipped) < 0.5


def test_the_preference_score_learns_an_ordering_it_was_not_shown():
    data = _toy_data(12)
    test = np.isin(data.segment, [10, 11])
    score = preference.train_score(data.subset(~test), seed=0, epochs=200)
    assert score.curve[-1] < 0.5 * score.curve[0]
    held = data.subset(test)
    assert ranking.mrr(score(held.X), held) == 1.0
    assert ranking.dcg(score(held.X), held) > 0.95 * ranking.dcg(held.relevance, held)
    out = score(held.X)
    assert (out >= 0).all() and (out <= 6).all()  # ReLU6 output


def test_a_trained_score_survives_its_file_and_a_foreign_file_is_named(tmp_path):
    from minitalk.files import FileFormatError

    data = _toy_data(6)
    scores = {t: preference.train_score(data, seed=0, epochs=30) for t in ("talking", "listening")}
    preference.save_scores(tmp_path / "ps.pt", scores, "toy orderings")
    loaded, trained_on = preference.load_scores(tmp_path / "ps.pt")
    assert trained_on == "toy orderings"
    np.testing.assert_allclose(loaded["talking"](data.X), scores["talking"](data.X), rtol=1e-6)
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(FileFormatError, match="other.pt: not a minitalk preference score file"):
        preference.load_scores(tmp_path / "other.pt")


def test_preference_data_survives_its_file_and_a_truncated_file_is_named(tmp_path):
    from minitalk.files import FileFormatError

    listening = dataclasses.replace(_toy_data(2, seed=1), track="listening")
    data = {"talking": _toy_data(3), "listening": listening}
    preference.save_data(tmp_path / "data.npz", data, "toy orderings")
    loaded, built_from = preference.load_data(tmp_path / "data.npz")
    assert built_from == "toy orderings"
    for track, d in data.items():
        back = loaded[track]
        assert back.track == track and back.names == d.names
        for field in ("X", "score", "group", "segment", "family", "level"):
            np.testing.assert_array_equal(getattr(back, field), getattr(d, field))
    raw = (tmp_path / "data.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileFormatError, match="cut.npz: truncated or corrupt preference data file"):
        preference.load_data(tmp_path / "cut.npz")


def test_the_learned_score_is_judged_against_each_baseline_seed_by_seed():
    """Paired differences over seeds: larger than their spread is better or worse, else a tie."""
    per_seed = {
        "ps": {"mrr": [0.9, 0.8], "dcg": [9.0, 9.0]},
        "top1": {"mrr": [0.5, 0.5], "dcg": [9.0, 9.0]},  # +0.35 ± 0.05: better; DCG equal: a tie
        "rank_sum": {"mrr": [0.85, 0.85], "dcg": [8.0, 10.0]},  # 0 ± 0.05 and 0 ± 1: ties
        "tree": {"mrr": [1.0, 1.0], "dcg": [9.5, 9.6]},  # -0.15 ± 0.05: worse; -0.55 ± 0.05: worse
    }
    against = ranking.versus({"per_seed": per_seed})
    assert against["top1"]["mrr"] == {"diff": [0.35, 0.05], "verdict": "better"}
    assert against["top1"]["dcg"]["verdict"] == "tie"
    assert [against["rank_sum"][k]["verdict"] for k in ("mrr", "dcg")] == ["tie", "tie"]
    assert against["tree"]["mrr"] == {"diff": [-0.15, 0.05], "verdict": "worse"}
    assert against["tree"]["dcg"]["verdict"] == "worse"


def run(args, cwd) -> int:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        rc = exit_.code
    finally:
        os.chdir(old)
    return rc


def test_evaluate_command_and_its_bad_inputs(real, capsys):
    d = real["dir"]
    panels, audio = real["panels"][:75], real["audio"][: 3 * io.SAMPLE_RATE]
    io.write_video(d / "short.mp4", panels, FPS, audio=audio)
    io.write_video(d / "mute.mp4", panels, FPS)
    io.write_video(d / "one.mp4", panels[:, :, :SIZE], FPS, audio=audio)
    io.write_video(d / "wide.mp4", np.zeros((10, 64, 160, 3), np.uint8), FPS)
    io.write_video(d / "ref30.mp4", real["panels"][np.floor(np.arange(90) * 25 / 30).astype(int)], 30)
    gone = panels.copy()
    gone[20:45, :, SIZE:] = 90  # the right face gone for a second
    io.write_video(d / "gone.mp4", gone, FPS, audio=audio)

    assert run(["evaluate", "short.mp4", "--reference", "ref30.mp4"], d) == 0  # 30 fps: resampled
    out = capsys.readouterr()
    report = json.loads((d / "short.eval.json").read_text())
    assert report["frame_aligned"] and "30 fps" in report["reference"]
    assert report["per_person"][0]["all"]["psnr"] > 30
    assert (d / "short.eval.md").read_text().startswith("# short.mp4") and (
        d / "short.eval.png"
    ).stat().st_size
    assert "person 0" in out.out

    assert run(["evaluate", "mute.mp4", "--quiet"], d) == 0
    err = capsys.readouterr().err
    assert "mute.mp4: no audio track: the sync metrics (AVOffset, AVConf) are skipped" in err
    mute = json.loads((d / "mute.eval.json").read_text())["per_person"][0]["all"]
    assert "av_offset" not in mute and mute["cpbd"] > 0

    assert run(["evaluate", "one.mp4", "--quiet"], d) == 0
    assert json.loads((d / "one.eval.json").read_text())["people"] == 1
    capsys.readouterr()

    assert run(["evaluate", "gone.mp4", "--quiet"], d) == 0
    assert "gone.mp4: person 1: no face found in frames 20-44 (0.80-1.80 s)" in capsys.readouterr().err

    assert run(["evaluate", "short.mp4", "--reference", "real.mp4", "--quiet"], d) == 0  # 3 s against 12 s
    err = capsys.readouterr().err
    assert "75 frames against 300" in err and "PoseFD, ExpFD" in err

    assert run(["evaluate", "wide.mp4"], d) == 1
    assert "wide.mp4: 160x64 is not one or two square panels side by side" in capsys.readouterr().err
    assert not (d / "wide.eval.json").exists()
    assert run(["evaluate", "missing.mp4"], d) == 2
    assert "argument CLIP: missing.mp4: no such file" in capsys.readouterr().err
    assert run(["evaluate", "short.mp4", "--prepared", "short.mp4"], d) == 2
    assert "not a finished minitalk prepare folder" in capsys.readouterr().err


def test_lip_sync_reads_the_pixels_warns_where_the_lip_gap_disagrees_and_gives_no_offset_on_a_flat_curve():
    """A mouth that opens with the speech 4 frames before the sound; the two readings agree, then
    the lip gap runs against the pixels (teeth on a closed smile), then the lip gap is noise, then
    the pixels cannot be read, then the mouth does not move with the speech at all."""
    rng = np.random.default_rng(0)
    T, shift = 600, 4
    speech = np.convolve(rng.random(T + shift) > 0.7, np.ones(5), "same").astype(float)
    envelope = speech[:T]
    mouth = speech[shift : T + shift]  # mouth(t) = envelope(t + 4): the sound comes 4 frames later
    noise = rng.normal(size=(3, T)) * 0.3
    agree = sync.lip_sync(mouth + noise[0], mouth + noise[1], envelope)
    assert agree["av_offset"] == shift and agree["sync_note"] is None
    assert agree["av_offset_lip_gap"] == agree["av_offset_dark_share"] == shift
    teeth = sync.lip_sync(-mouth + noise[0], mouth + noise[1], envelope)
    assert teeth["mouth_readings_agreement"] < 0 and "disagree" in teeth["sync_note"]
    assert teeth["av_offset"] == shift and teeth["av_conf"] == teeth["av_conf_dark_share"]
    averaged = sync.av_sync(sync.zscore(-mouth + noise[0]) + sync.zscore(mouth + noise[1]), envelope)
    assert averaged["av_conf"] < teeth["av_conf"] / 2  # what averaging the two would have given
    noisy_gap = sync.lip_sync(np.roll(mouth, 9) + noise[0], mouth + noise[1], envelope)  # 9 frames late
    assert noisy_gap["av_offset"] == shift and noisy_gap["av_offset_lip_gap"] == shift - 9
    unreadable = sync.lip_sync(mouth + noise[0], np.full(T, np.nan), envelope)
    assert unreadable["av_offset"] == shift and unreadable["av_conf"] == unreadable["av_conf_lip_gap"]
    flat = sync.lip_sync(noise[2], noise[2] + noise[0] * 0.1, envelope)
    assert np.isnan(flat["av_offset"]) and "flat" in flat["sync_note"]


def test_viewer_checks_pass_the_footage_and_name_what_a_viewer_would_see_wrong():
    """Footage that blinks, closes its mouth in silence, changes little per frame and meets its
    torso smoothly; clips that stare, hang their mouth open, shimmer, break at the neck or lose the
    face are each short on their check only."""
    rng = np.random.default_rng(0)
    T, fps = 250, 25.0
    speaking = np.zeros((1, T), bool)
    speaking[0, 50:150] = True
    blink = np.zeros(T)
    for start in (20, 90, 170, 230):
        blink[start : start + 3] = 1.0
    opening = np.where(speaking[0], 0.08, 0.005) + rng.random(T) * 0.002
    landmarks = np.zeros((T, 478, 3))

    def derived(blink=blink, opening=opening, change=0.004, seam=3.0, found=T):
        lm = landmarks.copy()
        lm[found:] = np.nan
        zeros, jitter = np.zeros(T), rng.random((2, T))
        change, seam = change + jitter[0] * 1e-4, seam + jitter[1] * 0.1
        readings = FaceReadings(lm, opening, zeros, zeros, zeros, change, seam)
        return Derived(readings, None, None, blink)

    def verdicts(clip):
        rows = viewer.viewer_checks([clip], [derived()], fps, speaking, speaking)
        return [r["verdict"] for r in rows]

    assert verdicts(derived()) == ["pass"] * 5
    assert verdicts(derived(blink=np.zeros(T))) == ["short", "pass", "pass", "pass", "pass"]
    assert verdicts(derived(opening=np.full(T, 0.06))) == ["pass", "short", "pass", "pass", "pass"]
    assert verdicts(derived(change=0.02)) == ["pass", "pass", "short", "pass", "pass"]
    assert verdicts(derived(seam=6.0)) == ["pass", "pass", "pass", "short", "pass"]
    assert verdicts(derived(found=T - 5)) == ["pass", "pass", "pass", "pass", "short"]
    unknown = viewer.viewer_checks([derived()], [derived()], fps, speaking, None)
    assert unknown[1]["verdict"] == "not measured"


def test_the_seam_reading_sees_a_head_moved_off_its_torso(real):
    """The sample's own frames against the same frames with the head (above the chin) moved
    sideways. Person 0 (a patterned chin over a bare neck): 8 px (a fifth of the face width) grows
    the step past the viewer check's ratio, 2 px (hardly visible) stays inside it. Person 1's chin
    is smooth skin over skin: a sideways shift raises the reading but not past the ratio, a limit
    of a measure that sees steps in the image, not motion."""

    def seam(frames, lm, shift):
        moved = degrade.misalign(frames, lm, shift) if shift else frames
        return np.median([faces.seam_contrast(f, m) for f, m in zip(moved, lm, strict=True)])

    ratios = []
    for p in range(2):
        lm = real["tracks"]["landmarks"][p, ::4]
        ok = np.isfinite(lm).all(axis=(1, 2))
        frames, lm = real["crops"][p][::4][ok], lm[ok]
        footage = seam(frames, lm, 0)
        assert 1 < footage < 10
        ratios.append([seam(frames, lm, shift) / footage for shift in (2, 8)])
    assert ratios[0][0] <= viewer.SEAM_RATIO < ratios[0][1], ratios
    assert ratios[1][1] > ratios[1][0] and ratios[1][1] > 1.1, ratios
