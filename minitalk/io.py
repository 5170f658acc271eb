"""Reading and writing video and audio.

Everything goes through PyAV (FFmpeg), so any common container works as input
(mp4, mov, mkv, avi, webm, wav, ...), whatever its frame rate, frame size,
sample rate or channel count. Output is an mp4 with H.264 video (yuv420p) and
AAC audio, the combination every browser and JupyterLab's
`IPython.display.Video` play.

Every failure names the file: `FileNotFoundError` for a missing path and
`MediaError` (a `ValueError`) for a file that has no video, no audio where audio
is needed, or cannot be decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from minitalk.utils import atomic_path, temporary_beside

SAMPLE_RATE = 16_000  # the rate every audio feature in minitalk is computed at


class MediaError(ValueError):
    """A media file that cannot be used; the message starts with its path."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    width: int
    height: int
    n_frames: int  # from the container header; may be an estimate
    duration: float  # seconds
    has_audio: bool
    sample_rate: int | None
    channels: int | None


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable media file ({exc})") from exc


def probe(path: str | os.PathLike) -> VideoInfo:
    """What a video file holds, read from its header without decoding."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        vs = container.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        if fps <= 0:
            raise MediaError(f"{path}: the video stream has no frame rate")
        duration = float(container.duration or 0) / av.time_base
        n_frames = vs.frames or int(round(duration * fps))
        aud = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=path,
            fps=fps,
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            n_frames=n_frames,
            duration=duration,
            has_audio=aud is not None,
            sample_rate=aud.codec_context.sample_rate if aud else None,
            channels=aud.codec_context.channels if aud else None,
        )


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decoded frames one at a time, each (H, W, 3) uint8 RGB."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt video data after frame {n} ({exc})") from exc
        if n == 0:
            raise MediaError(f"{path}: the video stream holds no decodable frame")
        if stream.frames and n < stream.frames - 2:  # the container's index knows the count
            raise MediaError(
                f"{path}: truncated or corrupt: the header lists {stream.frames} frames but only {n} decode"
            )


def iter_frames_at(path: str | os.PathLike, fps: float) -> Iterator[np.ndarray]:
    """Frames resampled to `fps` by taking the nearest source frame in time.

    A 30 fps video read at 25 fps drops every sixth frame; a 20 fps one read
    at 25 repeats every fourth. At the source's own rate this is `iter_frames`.
    """
    src_fps = probe(path).fps
    if abs(src_fps - fps) < 1e-3:
        yield from iter_frames(path)
        return
    out_frame = 0  # next output frame
    for j, frame in enumerate(iter_frames(path)):
        # output frame out_frame shows the source frame nearest to its time out_frame / fps
        while int(np.floor(out_frame * src_fps / fps + 0.5)) == j:
            yield frame
            out_frame += 1


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """All frames as one array (T, H, W, 3) uint8 RGB, and the frame rate."""
    fps = probe(path).fps
    return np.stack(list(iter_frames(path))), fps


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio track as mono float32 in [-1, 1], resampled to `sample_rate`.

    Works on video files and plain audio files alike; stereo is averaged to mono.
    """
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio track")
        stream = container.streams.audio[0]
        # resample each channel, then average them (FFmpeg's own downmix would scale by 1/sqrt(2))
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler keep its own clock
                chunks += [f.to_ndarray().mean(axis=0) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().mean(axis=0) for f in resampler.resample(None)]
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt audio data ({exc})") from exc
        # AAC decodes whole 1024-sample frames; drop the padding past the stream's end
        n_expected = None
        if stream.duration is not None and stream.time_base is not None:
            n_expected = int(round(float(stream.duration * stream.time_base) * sample_rate))
    if not chunks:
        raise MediaError(f"{path}: the audio track holds no decodable samples")
    audio = np.concatenate(chunks).astype(np.float32)
    if n_expected and len(audio) < 0.98 * n_expected - sample_rate * 0.1:
        raise MediaError(
            f"{path}: truncated or corrupt audio: the header lists "
            f"{n_expected / sample_rate:.2f} s but only {len(audio) / sample_rate:.2f} s decode"
        )
    return audio[:n_expected] if n_expected else audio


def audio_sample_rate(path: str | os.PathLike) -> int:
    """The sample rate of the first audio track of a video or audio file."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio track")
        return int(container.streams.audio[0].codec_context.sample_rate)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
    lossless: bool = False,
) -> Path:
    """Write RGB frames (and optionally mono audio) as an H.264 + AAC mp4.

    `frames` is an array (T, H, W, 3) or any iterable of (H, W, 3) uint8 frames,
    so long clips can be streamed. The file is written to a temporary name and
    moved into place only when complete.

    By default the video is for watching: yuv420p at `crf`, which every player
    reads. yuv420p keeps colour at half resolution and needs even sizes (an odd
    width or height is padded by one edge pixel). With `lossless` the frames
    are data: H.264 on the RGB planes at qp 0 (libx264rgb), read back bit for
    bit at any size (about ten times larger on the sample's crops). At a
    128-pixel crop the mouth is a few pixels that differ from the skin mostly in
    colour; halved colour resolution and quantisation take it away (`minitalk
    prepare` writes its crops losslessly; the README has the figures).
    """
    with VideoWriter(path, fps, audio, sample_rate, crf, lossless) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


class VideoWriter:
    """`write_video` a frame at a time: `with VideoWriter(path, fps) as w: w.write(frame)`.

    Several can be open at once (one per person, fed from one pass over a source).
    The file appears at `path` only when the block ends without an error.
    """

    def __init__(self, path, fps: float, audio=None, sample_rate: int = SAMPLE_RATE, crf: int = 18,
                 lossless: bool = False):  # fmt: skip
        self.path, self.fps, self.audio, self.sample_rate = Path(path), fps, audio, sample_rate
        self.crf, self.lossless = crf, lossless
        self._stream = None

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_beside(self.path)
        self._out = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._audio_stream = None
        if self.audio is not None:
            self._audio_stream = self._out.add_stream("aac", rate=self.sample_rate, layout="mono")
            self._audio_stream.bit_rate = 64_000
        return self

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.path}: frames must be (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if not self.lossless and (h % 2 or w % 2):
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            if self.lossless:  # qp 0 on the RGB planes: no colour conversion, no quantisation
                codec, pix_fmt, quality = "libx264rgb", "rgb24", {"qp": "0"}
            else:
                codec, pix_fmt, quality = "libx264", "yuv420p", {"crf": str(self.crf)}
            self._stream = self._out.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = frame.shape[1], frame.shape[0]
            self._stream.pix_fmt = pix_fmt
            self._stream.options = {**quality, "preset": "medium"}
        self._out.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames to write")
                self._out.mux(self._stream.encode(None))
                if self._audio_stream is not None:
                    _mux_audio(self._out, self._audio_stream, np.asarray(self.audio, np.float32),
                               self.sample_rate)  # fmt: skip
            self._out.close()
            if kind is None:
                os.replace(self._tmp, self.path)
        finally:  # on a failure: closed here (closing twice is harmless) and the partial file removed
            self._out.close()
            self._tmp.unlink(missing_ok=True)


def _mux_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    """Encode mono float audio in the AAC encoder's frame size."""
    audio = np.clip(audio.reshape(-1), -1.0, 1.0)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, len(audio), step):
        chunk = np.ascontiguousarray(audio[start : start + step][None, :])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float audio as 16-bit PCM wav, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(audio, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return path
