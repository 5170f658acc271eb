"""The shipped sample dialogue: its files, its ground truth, and that the two agree."""

import numpy as np
import pytest

from minitalk import io, metrics
from minitalk.prepare import face
from minitalk.prepare.audio import zcr_rms
from minitalk.synthetic import avatar, render_video


def psnr(a, b):
    return metrics.psnr(a, b, peak=255.0)


def test_files_and_sizes(sample_dir):
    names = {"dialogue.mp4", "dialogue_gt.npz", "new_dialogue.wav", "avatars.pt"}
    assert names <= {p.name for p in sample_dir.iterdir()}
    assert (sample_dir / "avatars.pt").stat().st_size < 5e6
    assert sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file()) < 10e6


def test_ground_truth_contract(gt):
    p, t = gt["speaking"].shape
    assert p == 2 and t / float(gt["fps"]) >= 40 and float(gt["fps"]) == 25
    assert gt["pose"].shape == (2, t, 6) and gt["pose"].dtype == np.float32
    assert gt["speaking"].dtype == bool
    for key in ("blink", "mouth"):
        assert gt[key].shape == (2, t) and gt[key].dtype == np.float32
        assert gt[key].min() >= 0 and gt[key].max() <= 1
    assert np.all(np.abs(gt["pose"][..., :3]) < 30)  # degrees, not radians


def test_video_matches_ground_truth(sample_dir, gt):
    info = io.probe(sample_dir / "dialogue.mp4")
    t = gt["pose"].shape[1]
    assert info.n_frames == t and info.fps == 25 and info.has_audio
    assert info.width == 2 * int(gt["tile"]) and info.height == int(gt["tile"]) >= 256
    assert abs(info.duration - t / 25) < 0.1


def test_turns(gt):
    speaking = gt["speaking"]
    assert not np.any(speaking[0] & speaking[1])
    who = np.where(speaking[0], 0, np.where(speaking[1], 1, -1))
    who = who[who >= 0]
    assert np.count_nonzero(np.diff(who)) >= 4  # at least four swaps of roles
    assert speaking.any(axis=0).mean() > 0.7  # mostly talk, short pauses


def test_speaker_moves_more_than_listener(gt):
    for p in range(2):
        s = gt["speaking"][p]
        yaw_speaking, yaw_listening = gt["pose"][p, s, 1], gt["pose"][p, ~s, 1]
        assert yaw_speaking.std() > 1.5 * yaw_listening.std()


def lagged_corr(drive, pitch, mask, lag):
    """Correlation of pitch at frame t + lag with drive at t, over frames where mask holds."""
    t = len(drive)
    keep = mask[lag:]
    return np.corrcoef(drive[: t - lag][keep], pitch[lag:][keep])[0, 1]


def test_listener_nods_follow_the_speakers_voice_with_a_lag(sample_dir, gt):
    """DialogueNeRF Fig. 6: listener pitch responds to the speaker's RMS and ZCR, after a lag."""
    t = gt["pose"].shape[1]
    lags = np.arange(0, 30)
    for source, linked in (("dialogue.mp4", True), ("new_dialogue.wav", False)):  # unrelated speech
        zcr, rms = zcr_rms(io.read_audio(sample_dir / source), io.SAMPLE_RATE, 25, t)
        drive = np.convolve(rms / rms.max() + zcr / zcr.max(), np.hanning(9), mode="same")
        for p in range(2):
            listening = ~gt["speaking"][p] & gt["speaking"][1 - p]
            corr = [lagged_corr(drive, gt["pose"][p, :, 0], listening, k) for k in lags]
            if linked:
                assert max(corr) > 0.5 and 0.1 <= lags[np.argmax(corr)] / 25 <= 0.8
                assert corr[0] < max(corr) - 0.2  # the response comes later, not at once
            else:
                assert max(np.abs(corr)) < 0.4


@pytest.mark.parametrize("index", [0, 137, 333, 512, 760, -1])
def test_rerendered_frames_match_the_video(frames, gt, index):
    """The ground truth is complete: rendering it again gives the frame in the video."""
    t = index % len(frames)
    again = next(render_video(gt, [t]))
    assert psnr(again, frames[t]) > 35
    other = next(render_video(gt, [(t + 40) % len(frames)]))
    assert psnr(other, frames[t]) < psnr(again, frames[t]) - 8


def test_head_sits_where_the_pose_says(gt):
    """Rendered silhouette centre vs the head centre projected with the stored intrinsics."""
    pose = gt["pose"][0, 0].astype(np.float64)
    img = avatar.render_person(0, pose, gt["torso_pose"][0, 0], 0.0, 0.0)
    far = pose.copy()
    far[5] = 50.0  # same head pushed far away: only torso and background remain
    base = avatar.render_person(0, far, gt["torso_pose"][0, 0], 0.0, 0.0)
    ys, xs = np.nonzero(np.any(img != base, axis=-1))
    k = gt["intrinsics"].astype(np.float64)
    u, v = k[0, 0] * pose[3] / pose[5] + k[0, 2], k[1, 1] * pose[4] / pose[5] + k[1, 2]
    assert abs(xs.mean() - u) < 4 and abs(ys.mean() - v) < 8


FACEMESH_FRAMES = 500  # 20 s: both people speak, listen and blink (8 and 10 full blinks)


def test_facemesh_finds_both_faces(frames):
    """The real-video face tracker works on the sample: the detector alone on every fifth frame."""
    tile = frames.shape[2] // 2
    for p in range(2):
        lm = face.detect_landmarks(frames[::5, :, p * tile : (p + 1) * tile], static=True)
        assert np.mean(~np.isnan(lm[:, 0, 0])) >= 0.95


def test_tracked_mouth_and_blinks_follow_ground_truth(frames, gt):
    """Tracked from frame to frame over the first 20 s (tracking needs consecutive frames)."""
    tile, n = frames.shape[2] // 2, FACEMESH_FRAMES
    for p in range(2):
        lm = face.detect_landmarks(frames[:n, :, p * tile : (p + 1) * tile], static=False)
        ok = ~np.isnan(lm[:, 0, 0])
        assert np.corrcoef(face.mouth_opening(lm[ok]), gt["mouth"][p, :n][ok])[0, 1] > 0.7
        ear = face.eye_aspect_ratio(lm[ok])
        closed, open_ = gt["blink"][p, :n][ok] > 0.9, gt["blink"][p, :n][ok] == 0
        assert ear[closed].mean() < 0.7 * ear[open_].mean()
