"""Data preparation end to end on clips cut from the sample, and on the inputs it must refuse or fix."""

from __future__ import annotations

import json
import warnings

import av
import numpy as np
import pytest
from conftest import CLIP_FRAMES as N
from conftest import CLIP_SIZE as SIZE
from conftest import FPS

from minitalk import io
from minitalk.prepare import data, masks
from minitalk.prepare import evaluate as prepare_eval
from minitalk.prepare.sources import PrepareError, PrepareWarning


@pytest.fixture(scope="session")
def prepared(prepared_clip):
    return prepared_clip


def write_odd_video(path, frames, fps):
    """A lossless mkv (FFV1, 4:4:4) that keeps odd frame sizes, which H.264 4:2:0 cannot."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode(None))


def test_prepared_folder_holds_the_contract(prepared):
    t = data.load_tracks(prepared)
    assert t["pose"].shape == (2, N, 6) and t["pose"].dtype == np.float32
    assert t["speaking"].shape == (2, N) and t["speaking"].dtype == bool
    assert t["blink"].shape == (2, N) and t["blink"].dtype == np.float32
    assert 0 <= t["blink"].min() and t["blink"].max() <= 1
    assert float(t["fps"]) == FPS
    assert t["landmarks"].shape == (2, N, 478, 3)
    assert t["expression"].shape == (2, N, 16)
    assert t["mel"].shape == (N, 16, 80)
    assert t["intrinsics"].shape == (2, 3, 3)
    labels, plates = data.load_masks(prepared)
    assert labels.shape == (2, N, SIZE, SIZE) and set(np.unique(labels)) == {0, 1, 2}
    assert plates.shape == (2, SIZE, SIZE, 3)
    crops = data.read_person_frames(prepared, 1)
    assert crops.shape == (N, SIZE, SIZE, 3)
    # the stored crops are the training targets: exactly the crop boxes of the decoded source
    import cv2

    x0, y0, side = t["crop_box"][1]
    source = io.read_video(prepared.parent / "clip.mp4")[0][:N]
    expected = [cv2.resize(f[y0 : y0 + side, x0 : x0 + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
                for f in source]  # fmt: skip
    np.testing.assert_array_equal(crops, np.stack(expected))
    report = json.loads((prepared / "prepare_report.json").read_text())
    assert report["complete"] and report["frames"] == N and report["faces_found"] == [1.0, 1.0]
    assert set(report["stage_seconds"]) >= {"audio", "landmarks", "pose", "who_speaks", "crops_masks"}


def test_prepared_tracks_match_the_ground_truth(prepared, gt):
    truth = {k: v[:, :N] for k, v in gt.items() if k in ("pose", "speaking", "blink", "mouth")}
    figures = prepare_eval.compare(data.load_tracks(prepared), truth)
    assert figures["rot_err_deg_median"] < 2.0
    assert figures["jitter_deg"] < figures["gt_jitter_deg"]
    assert figures["speaking_acc"] > 0.95
    assert figures["blink_f1"] >= 0.8
    assert min(figures["mouth_corr"]) > 0.8


def test_landmarks_reproject_through_the_stored_camera(prepared):
    """The canonical face placed by the pose and seen through the crop camera lands on the landmarks."""
    from minitalk import camera
    from minitalk.prepare import headpose

    t = data.load_tracks(prepared)
    for p in range(2):
        rot, trans = camera.pose_to_rt(t["pose"][p])
        points = np.einsum("tij,nj->tni", rot, t["face3d"][p].astype(np.float64)) + trans[:, None]
        uv = camera.project(points, t["intrinsics"][p])
        err = np.linalg.norm(uv - t["landmarks"][p, ..., :2], axis=-1)[:, list(headpose.RIGID)]
        assert np.median(err) < 0.02 * SIZE


def test_a_finished_folder_is_returned_as_it_is_and_new_code_reuses_the_slow_stages(prepared, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(prepared, folder)
    clip = prepared.parent / "clip.mp4"
    report = json.loads((folder / "prepare_report.json").read_text())
    recorded = ["clip.mp4: a warning the first run gave"]  # (the clip gives none: one is written in)
    (folder / "prepare_report.json").write_text(json.dumps({**report, "warnings": recorded}))
    written = {f.name: f.stat().st_mtime_ns for f in folder.iterdir() if f.is_file()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.prepare(clip, folder, size=SIZE, progress=False)  # the same inputs, settings and code
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir() if f.is_file()} == written  # untouched
    assert [str(w.message) for w in caught if w.category is PrepareWarning] == recorded  # said again

    before = data.load_tracks(folder)
    made_by_other_code(folder)  # the stages not cached run again; the slow ones are read back
    data.prepare(clip, folder, size=SIZE, progress=False)
    report = json.loads((folder / "prepare_report.json").read_text())
    assert set(report["cached_stages"]) == {"audio", "landmarks", "crops"}
    after = data.load_tracks(folder)
    for key in ("pose", "speaking", "blink", "expression"):
        np.testing.assert_array_equal(before[key], after[key])

    (folder / "masks.npz").unlink()  # a file of the finished folder lost: prepared again, not returned
    data.prepare(clip, folder, size=SIZE, progress=False)
    assert (folder / "masks.npz").is_file()
    report = json.loads((folder / "prepare_report.json").read_text())
    assert set(report["cached_stages"]) == {"audio", "landmarks"}


def made_by_other_code(folder) -> None:
    """Mark a finished folder as prepared by another version of the code (its report's key changed)."""
    report = json.loads((folder / "prepare_report.json").read_text())
    (folder / "prepare_report.json").write_text(json.dumps({**report, "key": "another"}))


def test_an_interrupted_run_leaves_the_folder_clearly_unfinished(prepared, tmp_path, monkeypatch):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(prepared, folder)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    for cached in (folder / ".cache").glob("crops-*"):  # the streamed stage runs again ...
        cached.unlink()
    before = {name: (folder / name).read_bytes() for name in ("frames_p0.mp4", "masks.npz", "tracks.npz")}
    monkeypatch.setattr(masks, "background_plate", fail)  # ... and is stopped after its last frame
    made_by_other_code(folder)  # (else the finished folder would be returned as it is)
    with pytest.raises(KeyboardInterrupt):
        data.prepare(prepared.parent / "clip.mp4", folder, size=SIZE, progress=False)
    with pytest.raises(PrepareError, match="not a finished preparation"):
        data.load_tracks(folder)
    for name, content in before.items():  # the earlier results are still there, untouched
        assert (folder / name).read_bytes() == content, name
    assert not [f.name for f in folder.iterdir() if f.name.startswith(".") and f.name != ".cache"]


def test_awkward_but_usable_inputs_are_fixed_with_warnings(tmp_path, clip, clip_audio):
    """30 fps odd-sized videos per person, 48 kHz stereo audio a second too long."""
    import cv2

    n30 = 90  # 3 s at 30 fps
    idx = np.round(np.arange(n30) * FPS / 30).astype(int)
    left = np.stack([cv2.resize(f[:, :256], (201, 233)) for f in clip[idx]])
    right = np.stack([cv2.resize(f[:, 256:], (257, 255)) for f in clip[idx]])
    write_odd_video(tmp_path / "left.mkv", left, 30)
    write_odd_video(tmp_path / "right.mkv", right, 30)
    stereo48 = np.repeat(
        np.interp(np.arange(4 * 48000) / 3, np.arange(len(clip_audio)), clip_audio)[:, None], 2, 1
    )
    import soundfile as sf

    sf.write(tmp_path / "audio.wav", stereo48, 48000)
    with pytest.warns(PrepareWarning) as record:
        data.prepare(left=tmp_path / "left.mkv", right=tmp_path / "right.mkv", audio=tmp_path / "audio.wav",
                     out=tmp_path / "out", size=32, progress=False)  # fmt: skip
    messages = " ".join(str(w.message) for w in record)
    assert "30 fps resampled to 25 fps" in messages and "left.mkv" in messages
    assert "audio.wav: the audio lasts 4.00 s but the video 3.00 s" in messages
    t = data.load_tracks(tmp_path / "out")
    assert t["pose"].shape[1] == 75 and np.isfinite(t["pose"]).all()


def test_silent_8khz_audio_marks_nobody_speaking(tmp_path, clip):
    import soundfile as sf

    io.write_video(tmp_path / "clip.mp4", clip[:50], FPS)
    sf.write(tmp_path / "silence.wav", np.zeros(2 * 8000, np.float32), 8000)
    with pytest.warns(PrepareWarning) as record:
        data.prepare(
            tmp_path / "clip.mp4", tmp_path / "out", audio=tmp_path / "silence.wav", size=32, progress=False
        )
    messages = " ".join(str(w.message) for w in record)
    assert "8000 Hz audio upsampled" in messages and "no speech found" in messages
    assert not data.load_tracks(tmp_path / "out")["speaking"].any()


def test_a_short_face_loss_is_bridged_and_a_long_one_names_the_frames(tmp_path, clip, clip_audio):
    blanked = clip[:100].copy()
    background = blanked[:, :, 256:].reshape(-1, 3).min(0)  # a flat colour over the right person
    short, long_ = blanked.copy(), blanked.copy()
    short[50:54, :, 256:] = background
    long_[40:80, :, 256:] = background
    audio = clip_audio[: 100 * io.SAMPLE_RATE // FPS]
    io.write_video(tmp_path / "short.mp4", short, FPS, audio=audio)
    io.write_video(tmp_path / "long.mp4", long_, FPS, audio=audio)
    data.prepare(tmp_path / "short.mp4", tmp_path / "a", size=32, progress=False)
    report = json.loads((tmp_path / "a" / "prepare_report.json").read_text())
    assert report["faces_found"][0] == 1.0 and report["faces_found"][1] < 1.0
    assert np.isfinite(data.load_tracks(tmp_path / "a")["pose"]).all()
    with pytest.raises(PrepareError, match=r"long\.mp4: the right person's face is lost in frames 4\d-\d\d"):
        data.prepare(tmp_path / "long.mp4", tmp_path / "b", size=32, progress=False)


def test_inputs_without_two_faces_or_audio_are_refused(tmp_path, clip, clip_audio):
    audio = clip_audio[: 20 * io.SAMPLE_RATE // FPS]
    io.write_video(tmp_path / "one.mp4", clip[:20, :, :256], FPS, audio=audio)
    with pytest.raises(PrepareError, match=r"one\.mp4: only one face found in 16 frames spread over 0-15"):
        data.prepare(tmp_path / "one.mp4", tmp_path / "o1", progress=False)
    io.write_video(tmp_path / "none.mp4", np.full((20, 64, 64, 3), 90, np.uint8), FPS, audio=audio)
    with pytest.raises(PrepareError, match=r"none\.mp4: no face found"):
        data.prepare(tmp_path / "none.mp4", tmp_path / "o2", progress=False)
    io.write_video(tmp_path / "mute.mp4", clip[:20], FPS)
    with pytest.raises(io.MediaError, match=r"mute\.mp4: no audio track"):
        data.prepare(tmp_path / "mute.mp4", tmp_path / "o3", progress=False)
    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        data.prepare(tmp_path / "missing.mp4", tmp_path / "o4", progress=False)


def test_voice_detection_leaves_torchs_thread_count_alone():
    """silero-vad sets torch to one thread when imported; preparing must not slow the training after it."""
    import subprocess
    import sys

    probe = (
        "import numpy as np, torch\n"
        "torch.set_num_threads(2)\n"
        "from minitalk.prepare.audio import voice_activity\n"
        "voice_activity(np.zeros(16_000, np.float32))\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.split()[-1] == "2"


def test_unseen_background_is_filled_smoothly_and_seen_pixels_are_kept():
    """A head-sized hole in a ramp is filled near the ramp and without streaks: a smaller error and
    gentler gradients than propagation inpainting (Telea) gives."""
    import cv2

    yy, xx = np.mgrid[:96, :96]
    ramp = np.stack([xx * 2.0, yy * 2.0, 100 + 0 * xx], -1).astype(np.float32)
    noisy = ramp + np.random.default_rng(0).normal(0, 3, ramp.shape).astype(np.float32)
    hole = (xx - 48) ** 2 / 22**2 + (yy - 60) ** 2 / 30**2 < 1
    filled = masks.fill_unseen(noisy, hole)
    np.testing.assert_array_equal(filled[~hole], noisy[~hole])
    telea = cv2.inpaint(noisy.clip(0, 255).astype(np.uint8), hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    telea = telea.astype(np.float32)

    def roughness(image):
        return np.abs(np.diff(image, axis=1))[hole[:, 1:]].mean()

    assert np.abs(filled - ramp)[hole].mean() < np.abs(telea - ramp)[hole].mean()
    assert roughness(filled) < roughness(telea)


def test_the_streamed_crop_stage_writes_what_the_whole_clip_functions_give(prepared, tmp_path):
    """Crops, labels and plates written a frame at a time equal those of the functions that take
    the whole clip at once (the stage holds only a sample of frames for the plates)."""
    crops = [data.read_person_frames(prepared, p)[:30] for p in range(2)]
    landmarks = data.load_tracks(prepared)["landmarks"][:, :30].astype(np.float64)
    cuts = data.write_crops_and_masks(iter(zip(*crops, strict=True)), landmarks, 30, FPS, tmp_path,
                                      progress=False, plate_frames=10)  # fmt: skip
    labels, plates = data.load_masks(tmp_path)
    for p in range(2):
        np.testing.assert_array_equal(data.read_person_frames(tmp_path, p), crops[p])
        person = masks.person_masks(crops[p]).astype(np.float16)
        np.testing.assert_array_equal(labels[p], masks.labels(person, landmarks[p]))
        np.testing.assert_array_equal(plates[p], masks.background_plate(crops[p][::3], person[::3]))
        assert cuts[f"cuts_p{p}"].tolist() == []
