"""Video and audio I/O: round trips within codec tolerance, and errors that name the file."""

from fractions import Fraction

import av
import numpy as np
import pytest

from minitalk import io, metrics


def moving_pattern(t_len=40, h=64, w=96):
    """Smooth colour waves that move: what a codec keeps well, so easy to compare."""
    y, x = np.mgrid[0:h, 0:w] / 16.0
    frames = [
        np.stack([np.sin(x + 0.2 * t), np.cos(y - 0.1 * t), np.sin(x + y + 0.3 * t)], -1)
        for t in range(t_len)
    ]
    return np.round(128 + 90 * np.asarray(frames)).astype(np.uint8)


def psnr(a, b):
    return metrics.psnr(a, b, peak=255.0)


def tone(seconds, sr, hz=440.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_with_pyav(path, frames, fps, audio=None, sr=48_000, layout="stereo"):
    """An independent writer for inputs minitalk never writes itself (stereo, other rates)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        st = out.add_stream("aac", rate=sr, layout=layout) if audio is not None else None
        for f in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode(None))
        if st is not None:
            for i in range(0, audio.shape[1], 1024):
                fr = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio[:, i : i + 1024]), format="fltp", layout=layout
                )
                fr.sample_rate, fr.pts, fr.time_base = sr, i, Fraction(1, sr)
                out.mux(st.encode(fr))
            out.mux(st.encode(None))


def test_round_trip_frames_and_audio(tmp_path):
    frames, audio = moving_pattern(), tone(40 / 25, io.SAMPLE_RATE)
    path = io.write_video(tmp_path / "clip.mp4", frames, 25, audio)
    info = io.probe(path)
    assert (info.fps, info.width, info.height, info.n_frames) == (25, 96, 64, 40)
    assert info.has_audio and info.sample_rate == io.SAMPLE_RATE
    back, fps = io.read_video(path)
    assert fps == 25 and back.shape == frames.shape and back.dtype == np.uint8
    assert psnr(back, frames) > 35
    heard = io.read_audio(path)
    assert abs(len(heard) - len(audio)) <= 0.01 * io.SAMPLE_RATE
    n = min(len(heard), len(audio))
    assert np.corrcoef(heard[:n], audio[:n])[0, 1] > 0.99  # no shift: AAC priming is removed


def test_streamed_frames_and_odd_sizes(tmp_path):
    frames = moving_pattern(10, 33, 47)
    path = io.write_video(tmp_path / "odd.mp4", iter(frames), 30000 / 1001)
    back, fps = io.read_video(path)
    assert back.shape == (10, 34, 48, 3)  # padded to even for yuv420p
    assert np.isclose(fps, 29.97, atol=0.01)
    assert psnr(back[:, :33, :47], frames) > 30


def test_lossless_frames_come_back_bit_for_bit(tmp_path):
    # noise is the worst case for a codec; an odd size would be padded in yuv420p
    frames = np.random.default_rng(0).integers(0, 256, (6, 33, 47, 3), dtype=np.uint8)
    path = io.write_video(tmp_path / "data.mp4", frames, 25, lossless=True)
    back, _ = io.read_video(path)
    np.testing.assert_array_equal(back, frames)


@pytest.mark.parametrize(("sr", "layout"), [(48_000, "stereo"), (8_000, "mono"), (44_100, "stereo")])
def test_any_sample_rate_and_layout_becomes_16k_mono(tmp_path, sr, layout):
    channels = 2 if layout == "stereo" else 1
    left = tone(1.0, sr, 300)
    audio = np.stack([left, 0.5 * left][:channels])
    path = tmp_path / "in.mp4"
    write_with_pyav(path, moving_pattern(25), 25, audio, sr, layout)
    heard = io.read_audio(path)
    assert heard.dtype == np.float32 and heard.ndim == 1
    assert abs(len(heard) - io.SAMPLE_RATE) <= 0.01 * io.SAMPLE_RATE
    expected = tone(1.0, io.SAMPLE_RATE, 300) * (0.75 if channels == 2 else 1.0)
    n = min(len(heard), len(expected))
    assert np.corrcoef(heard[:n], expected[:n])[0, 1] > 0.98
    assert np.isclose(np.std(heard[: n - 400]), np.std(expected[: n - 400]), rtol=0.1)


def test_wav_round_trip(tmp_path):
    audio = tone(0.5, 22_050)
    path = io.write_audio(tmp_path / "a.wav", audio, 22_050)
    heard = io.read_audio(path, sample_rate=22_050)
    np.testing.assert_allclose(heard, audio, atol=1e-4)


def test_missing_file_is_named(tmp_path):
    for read in (io.read_video, io.read_audio, io.probe):
        with pytest.raises(FileNotFoundError, match="nothing.mp4"):
            read(tmp_path / "nothing.mp4")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = io.write_audio(tmp_path / "voice.wav", tone(0.3, 16_000))
    with pytest.raises(io.MediaError, match="voice.wav: no video stream"):
        io.read_video(path)


def test_silent_video_has_no_audio_track(tmp_path):
    path = io.write_video(tmp_path / "mute.mp4", moving_pattern(5), 25)
    assert not io.probe(path).has_audio
    with pytest.raises(io.MediaError, match="mute.mp4: no audio track"):
        io.read_audio(path)


def test_garbage_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(io.MediaError, match="junk.mp4: not a readable media file"):
        io.read_video(junk)
    good = io.write_video(tmp_path / "good.mp4", moving_pattern(50), 25, tone(2.0, io.SAMPLE_RATE))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    with pytest.raises(io.MediaError, match="cut.mp4: truncated or corrupt"):
        io.read_video(cut)
    with pytest.raises(io.MediaError, match="cut.mp4: .*corrupt"):
        io.read_audio(cut)


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = io.write_video(tmp_path / "out.mp4", moving_pattern(5), 25)
    before = path.read_bytes()

    def frames_then_crash():
        yield from moving_pattern(3)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        io.write_video(path, frames_then_crash(), 25)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        io.write_video(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), 25)
    with pytest.raises(ValueError, match="no frames"):
        io.write_video(tmp_path / "x.mp4", [], 25)
