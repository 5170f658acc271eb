"""The input of data preparation: one video of two or three people side by side (or in a grid),
one video per person of a conversation, or one person alone, plus audio.

DialogueNeRF's dataset puts the two people of a conversation side by side in
one frame; a video call puts up to three in a row or a grid; a user may instead
have one recording per person and a separate audio track, or one person's
recording to add to a model of several (`--single`). `open_source` turns each
into the same thing: a stream of frames at the requested rate, a region of the
frame per person, and 16 kHz mono audio, with every problem reported against
the file (and frames) it comes from.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from minitalk import io
from minitalk.prepare.face import LandmarkTracker, detect_faces
from minitalk.prepare.headpose import fill_gaps
from minitalk.utils import MinitalkWarning

FIND_SAMPLES = 16  # people are looked for in this many frames spread over the whole clip
MAX_PEOPLE_IN_VIEW = 3  # one video holds up to this many people (side by side, or in a grid)
# a face counts as a person's when it is at least this share of the frame's largest face (height):
# the people of a call sit alike; a face on a poster or passing far behind is much smaller
PERSON_FACE_SHARE = 0.65
QUIET_PEAK = 10 ** (-30 / 20)  # audio that never comes within 30 dB of full scale is raised
TRACK_MAX_SIDE = 640  # larger regions are downscaled for FaceMesh (it works on a 192 px face crop)


class PrepareError(ValueError):
    """An input that cannot be prepared; the message names the file and the frames."""


class PrepareWarning(MinitalkWarning):
    """Something preparation fixed on its own (resampled, trimmed, silent); kept in the report."""


class Source:
    """Frames of one or two videos at `fps`, split into one region per person (`single`: the one
    video shows one person)."""

    def __init__(self, videos: list[Path], audio: Path, fps: float, single: bool = False):
        self.videos, self.audio_path, self.fps, self.single = videos, audio, fps, single
        # where each person is, for messages: "left", "middle", "2", ... (`find_people` finds them)
        self.names: list[str] = [""] if single else ["left", "right"]
        self.infos = [io.probe(v) for v in videos]
        self.n_frames: int | None = None  # known once the frames have been read
        for info in self.infos:
            if abs(info.fps - fps) > 1e-3:
                warnings.warn(
                    f"{info.path}: {info.fps:g} fps resampled to {fps:g} fps",
                    category=PrepareWarning,
                    stacklevel=3,
                )

    # -- identity ---------------------------------------------------------------------------

    def key(self) -> str:
        """Changes when an input file changes (path, size, modification time), the rate does, or
        the one video is read as one person (`--single`) instead of two or three."""
        parts = [
            (str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
            for p in [*self.videos, self.audio_path]
        ]
        return repr((parts, self.fps, self.single))

    def describe(self) -> dict:
        return {
            "videos": [str(v) for v in self.videos],
            "audio": str(self.audio_path),
            "video_size": [[i.width, i.height] for i in self.infos],
            "video_fps": [i.fps for i in self.infos],
        }

    # -- frames -----------------------------------------------------------------------------

    def frames(self):
        """Per output frame, the list of source frames (one per video)."""
        streams = [io.iter_frames_at(v, self.fps) for v in self.videos]
        if len(streams) == 1:
            for f in streams[0]:
                yield [f]
            return
        for pair in itertools.zip_longest(*streams):
            if any(f is None for f in pair):
                longer = self.videos[[f is not None for f in pair].index(True)]
                warnings.warn(
                    f"{longer}: longer than the other video; trimmed to the shorter",
                    category=PrepareWarning,
                    stacklevel=2,
                )
                return
            yield list(pair)

    def _region_image(self, frames: list[np.ndarray], region) -> np.ndarray:
        frame = frames[region[4]]
        return frame[region[1] : region[3], region[0] : region[2]]

    def find_people(self) -> list[tuple[int, int, int, int, int]]:
        """One region (x0, y0, x1, y1, video index) per person, left to right."""
        step = max(1, self._estimate() // FIND_SAMPLES)  # the whole clip: a face may come in late
        with warnings.catch_warnings():  # the full pass warns of a trimmed video; this one need not
            warnings.simplefilter("ignore", PrepareWarning)
            sampled = list(itertools.islice(self.frames(), 0, None, step))[:FIND_SAMPLES]
        span = f"{len(sampled)} frames spread over 0-{step * (len(sampled) - 1)}"
        if len(self.videos) == 2:
            regions, self.names = [], ["left", "right"]
            for v, path in enumerate(self.videos):
                h, w = sampled[0][v].shape[:2]
                counts = [len(detect_faces(f[v])) for f in sampled]
                if not any(counts):
                    raise PrepareError(f"{path}: no face found in {span}")
                self._warn_extra_faces(path, counts, 1, step)
                regions.append((0, 0, w, h, v))
            return regions
        path = self.videos[0]
        every = [detect_faces(f[0]) for f in sampled]
        found = [people_faces(b) for b in every]
        counts = [len(b) for b in every]
        h, w = sampled[0][0].shape[:2]
        if max(counts) == 0:
            raise PrepareError(f"{path}: no face found in {span}")
        if self.single:
            self._warn_extra_faces(path, counts, 1, step)
            self.names = [""]
            return [(0, 0, w, h, 0)]
        if max(len(b) for b in found) == 1:
            raise PrepareError(
                f"{path}: only one face found in {span}; a conversation needs two or three side by side "
                "(or pass one video per person with --left and --right, or one person with --single)"
            )
        # the number of people: the most faces that most frames showing several agree on, at most 3
        several = [min(len(b), MAX_PEOPLE_IN_VIEW) for b in found if len(b) >= 2]
        n = max(set(several), key=lambda k: (several.count(k), k))
        self._warn_extra_faces(path, counts, n, step)
        centres = [face_centres(boxes, n) for boxes in found if len(boxes) >= n]
        face_height = float(np.median(np.concatenate([b[:, 3] - b[:, 1] for b in found])))
        regions, self.names = grid_regions(np.median(centres, axis=0), w, h, face_height)
        return regions

    def _warn_extra_faces(self, path, counts: list[int], expected: int, step: int) -> None:
        extra = [i * step for i, c in enumerate(counts) if c > expected]
        if extra:
            warnings.warn(
                f"{path}: {max(counts)} faces where {expected} {'is' if expected == 1 else 'are'} expected "
                f"(frame {extra[0]}, {extra[0] / self.fps:.1f} s{' and more' if len(extra) > 1 else ''}); "
                "each person's region follows its most prominent face",
                category=PrepareWarning,
                stacklevel=3,
            )

    def track_landmarks(self, regions, progress: bool = True) -> np.ndarray:
        """FaceMesh landmarks (P, T, 478, 3) in each region's pixels, NaN where the face is lost."""
        out: list[list[np.ndarray]] = [[] for _ in regions]
        trackers = [LandmarkTracker(static=False) for _ in regions]
        for t in trackers:
            t.__enter__()
        try:
            bar = tqdm(
                self.frames(), total=self._estimate(), desc="landmarks", unit="frame", disable=not progress
            )
            for frames in bar:
                for p, region in enumerate(regions):
                    img = self._region_image(frames, region)
                    scale = min(1.0, TRACK_MAX_SIDE / max(img.shape[:2]))
                    if scale < 1.0:
                        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    out[p].append(trackers[p](img) / scale)
        finally:
            for t in trackers:
                t.__exit__(None, None, None)
        return np.stack([np.stack(o) for o in out]).astype(np.float32)

    def crops(self, regions, boxes, size: int, start: int, n_frames: int):
        """Each frame's square crops, a list of P (size, size, 3) uint8, for frames start ..
        start + n_frames, one frame at a time."""
        for f in itertools.islice(self.frames(), start, start + n_frames):
            yield [
                cv2.resize(self._region_image(f, region)[y0 : y0 + side, x0 : x0 + side], (size, size),
                           interpolation=cv2.INTER_AREA)
                for region, (x0, y0, side) in zip(regions, boxes, strict=True)
            ]  # fmt: skip

    def _estimate(self) -> int:
        return int(min(i.duration for i in self.infos) * self.fps)

    # -- checks -----------------------------------------------------------------------------

    def check_tracked(self, landmarks: np.ndarray, max_gap: int) -> None:
        """Raise on a face lost for more than `max_gap` frames, naming the person and the frames."""
        for p, lm in enumerate(landmarks):
            _, long_runs = fill_gaps(lm[:, :1, :1], max_gap)
            if long_runs:
                a, b = long_runs[0]
                path, side = self._person(p)
                raise PrepareError(
                    f"{path}: {side} face is lost in frames "
                    f"{a}-{b} ({(b - a + 1) / self.fps:.2f} s); gaps up to {max_gap} frames are bridged"
                )

    def faces_in_view(self, landmarks: np.ndarray) -> tuple[int, int]:
        """The frames [start, end) from the first in which every face is found to the last: a clip
        whose people come into view late, or leave before it ends, is trimmed to them (warned)."""
        seen = np.isfinite(landmarks).all(axis=(2, 3)).all(axis=0)  # (T,) every face found
        if not seen.any():
            raise PrepareError(f"{self.videos[0]}: no frame shows every person's face")
        start, end = int(np.argmax(seen)), len(seen) - int(np.argmax(seen[::-1]))
        gone = [f"{a}-{b - 1}" for a, b in ((0, start), (end, len(seen))) if b > a]
        if gone:
            warnings.warn(
                f"{self.videos[0]}: not every face is in view in frames {' and '.join(gone)}; "
                f"kept frames {start}-{end - 1} ({(end - start) / self.fps:.1f} s)",
                category=PrepareWarning,
                stacklevel=3,
            )
        return start, end

    def _person(self, p: int) -> tuple[Path, str]:
        """The video person p is in, and words for them in a message ("the left person's")."""
        name = self.names[p] if p < len(self.names) else str(p + 1)
        who = (
            "the person's" if name == "" else f"person {name}'s" if name.isdigit() else f"the {name} person's"
        )
        return self.videos[min(p, len(self.videos) - 1)], who

    def warn_cuts(self, p: int, cuts: list[int]) -> None:
        """A change of shot in a person's view: named, kept in the report."""
        if cuts:
            path, side = self._person(p)
            at = ", ".join(f"{c} ({c / self.fps:.1f} s)" for c in cuts[:3])
            warnings.warn(
                f"{path}: a cut (change of shot) in {side} view at frame {at}; minitalk "
                "expects one still camera per person: the background and the field mix the shots",
                category=PrepareWarning,
                stacklevel=3,
            )

    def warn_turned(self, p: int, pose: np.ndarray, limit_deg: float = 45.0) -> None:
        """A head turned or tilted past `limit_deg` (pitch or yaw of pose (T, 6)): the field sees
        that side of the face in few frames and draws it poorly."""
        turned = np.flatnonzero((np.abs(pose[:, :2]) > limit_deg).any(axis=1))
        if len(turned):
            path, side = self._person(p)
            warnings.warn(
                f"{path}: {side} head turns past {limit_deg:g} degrees in {len(turned)} frames "
                f"(first at frame {turned[0]}, {turned[0] / self.fps:.1f} s); few views of that side "
                "of the face reach training",
                category=PrepareWarning,
                stacklevel=3,
            )

    def read_audio(self, n_video_frames: int) -> tuple[np.ndarray, int]:
        """16 kHz mono audio and the frame count both streams cover (the shorter wins)."""
        rate = io.audio_sample_rate(self.audio_path)
        if rate < io.SAMPLE_RATE:
            warnings.warn(
                f"{self.audio_path}: {rate} Hz audio upsampled to {io.SAMPLE_RATE} Hz; "
                "the mel bands above its Nyquist frequency stay empty",
                category=PrepareWarning,
                stacklevel=2,
            )
        wav = io.read_audio(self.audio_path)
        n_audio_frames = int(np.floor(len(wav) / io.SAMPLE_RATE * self.fps + 1e-6))
        if abs(n_audio_frames - n_video_frames) > 0.1 * self.fps:
            warnings.warn(
                f"{self.audio_path}: the audio lasts {len(wav) / io.SAMPLE_RATE:.2f} s but the video "
                f"{n_video_frames / self.fps:.2f} s; both trimmed to the shorter",
                category=PrepareWarning,
                stacklevel=2,
            )
        n_frames = min(n_audio_frames, n_video_frames)
        n = int(round(n_frames / self.fps * io.SAMPLE_RATE))
        return self._check_level(np.pad(wav[:n], (0, max(0, n - len(wav))))), n_frames

    def _check_level(self, wav: np.ndarray) -> np.ndarray:
        """Warn of clipped audio; raise very quiet audio to a level voice detection hears (the
        features do not depend on the level: the log-mel is relative to its loudest step)."""
        peak = float(np.abs(wav).max(initial=0.0))
        if peak == 0.0:
            return wav  # silence: preparation says that nobody speaks
        clipped = float(np.mean(np.abs(wav) >= 0.99 * peak)) if peak >= 0.98 else 0.0
        if clipped > 1e-3:
            warnings.warn(
                f"{self.audio_path}: {100 * clipped:.1f}% of the audio samples are clipped at full scale; "
                "the voices are distorted (who speaks is still found, the mouth may follow them less well)",
                category=PrepareWarning,
                stacklevel=3,
            )
        if peak < QUIET_PEAK:
            gain = 0.5 / peak
            warnings.warn(
                f"{self.audio_path}: very quiet audio (peak {20 * np.log10(peak):.0f} dBFS); "
                f"raised by {20 * np.log10(gain):.0f} dB",
                category=PrepareWarning,
                stacklevel=3,
            )
            wav = (wav * gain).astype(wav.dtype)
        return wav


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A frame (H, W, 3) uint8 as the 16 x 16 grey float32 thumbnail `scene_cuts` compares."""
    return cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )


def scene_cuts(thumbs: np.ndarray, min_jump: float = 30.0, ratio: float = 6.0) -> list[int]:
    """Frames where a new shot starts, from the clip's `thumbnail`s (T, 16, 16): the mean absolute
    change from the frame before is above `min_jump` (of 255) and `ratio` times its median over
    the clip. Movement changes a little of the picture a little; a cut changes all of it."""
    if len(thumbs) < 3:
        return []
    change = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2))  # (T - 1,)
    return [int(i) + 1 for i in np.flatnonzero((change > min_jump) & (change > ratio * np.median(change)))]


def people_faces(boxes: np.ndarray) -> np.ndarray:
    """The face boxes (M, 5) of a frame that are people's: at least `PERSON_FACE_SHARE` of the
    largest face's height."""
    if len(boxes) == 0:
        return boxes
    height = boxes[:, 3] - boxes[:, 1]
    return boxes[height >= PERSON_FACE_SHARE * height.max()]


def face_centres(boxes: np.ndarray, n: int) -> np.ndarray:
    """(n, 2) the centres (x, y) of the `n` most confident face boxes (M, 5) of a frame, in reading
    order: rows top to bottom (faces whose centres lie within half a face height of each other in
    y share a row), left to right in each."""
    top = boxes[np.argsort(-boxes[:, 4])[:n]]
    centres = np.stack([(top[:, 0] + top[:, 2]) / 2, (top[:, 1] + top[:, 3]) / 2], -1)
    rows = row_of(centres[:, 1], float(np.median(top[:, 3] - top[:, 1])) / 2)
    return centres[np.lexsort((centres[:, 0], rows))]


def row_of(y: np.ndarray, tolerance: float) -> np.ndarray:
    """(n,) a row number for each centre height y (n,): sorted heights further apart than
    `tolerance` start a new row."""
    order = np.argsort(y)
    rows = np.zeros(len(y), np.int64)
    rows[order] = np.cumsum(np.concatenate([[0], np.diff(y[order]) > tolerance]))
    return rows


def grid_regions(centres: np.ndarray, width: int, height: int, face_height: float):
    """One region (x0, y0, x1, y1, 0) per face centre (n, 2) in reading order, and a name for each.

    Rows split halfway between their centres' heights, faces in a row halfway between their
    centres: two or three side by side give the frame's columns, a 2 x 2 call its quarters (a
    face alone in a row takes the row's whole width). Names: "left" / "right" (and "middle") for
    one row, else the reading order "1", "2", ..."""
    rows = row_of(centres[:, 1], face_height / 2)  # as `face_centres` ordered them
    row_y = np.array([centres[rows == r, 1].mean() for r in range(rows.max() + 1)])
    y_cuts = np.concatenate([[0], (row_y[1:] + row_y[:-1]) / 2, [height]]).round().astype(int)
    regions = []
    for r in range(rows.max() + 1):
        xs = np.sort(centres[rows == r, 0])
        x_cuts = np.concatenate([[0], (xs[1:] + xs[:-1]) / 2, [width]]).round().astype(int)
        regions += [(int(x_cuts[i]), int(y_cuts[r]), int(x_cuts[i + 1]), int(y_cuts[r + 1]), 0)
                    for i in range(len(xs))]  # fmt: skip
    if rows.max() == 0:
        names = ["left", "right"] if len(regions) == 2 else ["left", "middle", "right"]
    else:
        names = [str(i + 1) for i in range(len(regions))]
    return regions, names


def open_source(video=None, *, left=None, right=None, single=None, audio=None, fps: float = 25.0) -> Source:
    """Check the inputs' combination and files; the audio defaults to the video's own track."""
    given = [video is not None, left is not None or right is not None, single is not None]
    if sum(given) > 1:
        raise PrepareError("give one VIDEO of a conversation, --left and --right, or --single, not several")
    if not any(given) or (given[1] and (left is None or right is None)):
        raise PrepareError("give one VIDEO of a conversation, both --left and --right, or --single")
    videos = (
        [Path(video)]
        if video is not None
        else [Path(single)]
        if single is not None
        else [Path(left), Path(right)]
    )
    for v in videos:
        if not v.is_file():
            raise FileNotFoundError(f"{v}: no such file")
    if audio is None:
        with_audio = [v for v in videos if io.probe(v).has_audio]
        if not with_audio:
            raise io.MediaError(f"{videos[0]}: no audio track (pass the conversation's audio with --audio)")
        audio = with_audio[0]
    audio = Path(audio)
    if not audio.is_file():
        raise FileNotFoundError(f"{audio}: no such file")
    return Source(videos, audio, fps, single=single is not None)
