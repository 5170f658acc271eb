"""Data preparation: a conversation's video -> a training-ready folder (DialogueNeRF III-B, IV-A).

`prepare()` (and `minitalk prepare`) runs seven stages, each shown on its own in notebook 01/02:

1. audio        16 kHz mono; per frame ZCR, RMS and a log-mel window  (audio.py)
2. faces        find the people (1 to 3), one region of the frame each  (face.py, sources.py)
3. landmarks    478 FaceMesh points per frame, tracked per person       (face.py)
4. pose         canonical face, PnP, One-Euro smoothing, the camera     (headpose.py)
5. expression   Eq. 1 morphable model coefficients, mouth, blink        (expression.py)
6. who speaks   voice activity split among the people                   (diarize.py)
7. crops, masks square crops at --size, head / torso labels, background  (masks.py)

Video is streamed through stages 3 and 7, a frame at a time, so a long clip is never held whole.
It writes `tracks.npz` (pose [P,T,6], speaking [P,T], blink [P,T], fps, expression [P,T,K],
mouth, landmarks [P,T,478,3], crop_box, intrinsics, zcr, rms, mel [T,16,80], the canonical faces
and the Eq. 1 basis), each person's crops losslessly (`frames_p0.mp4`, ...), `masks.npz` (labels
0 background / 1 torso / 2 head, background plates), `audio.wav` and `prepare_report.json`,
written last: without it a folder is unfinished. Finished stages are cached in `.cache/`, keyed
on inputs, settings and code, so a re-run resumes; a re-run of a finished preparation with the
same inputs, settings and code returns at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import minitalk
from minitalk import io
from minitalk.camera import focal_from_fov, intrinsic_matrix
from minitalk.files import FORMAT_VERSION, FileFormatError, load_npz
from minitalk.prepare import audio as au
from minitalk.prepare import diarize, expression, headpose, masks, voices
from minitalk.prepare.face import square_crop
from minitalk.prepare.sources import PrepareError, PrepareWarning, open_source, scene_cuts, thumbnail
from minitalk.settings import as_record, check_side, option
from minitalk.utils import ArrayParts, SettingError, atomic_path, save_npz_atomic


@dataclass(frozen=True)
class PrepareConfig:
    """The settings of `minitalk prepare` (`minitalk.settings`)."""

    size: int = option(128, "crop side in pixels")
    fps: float = option(25.0, "frame rate to resample to")
    fov: float = option(26.0, "assumed horizontal field of view of each person's camera, degrees")
    max_gap_s: float = 0.5  # face lost for up to this long: interpolated; longer: an error
    n_expression: int = 16  # K, the expression coefficients per frame
    crop_scale: float = 2.4  # crop side in face heights (takes in the shoulders)
    voice_print: str = option(
        "auto", "how voices are told apart: a learned speaker embedding (ge2e), pitch and MFCC, or "
        "auto: ge2e where its weights are installed", choices=("auto", "ge2e", "pitch+mfcc"),
    )  # fmt: skip

    def __post_init__(self):
        check_side(self.size)
        checks = (
            ("fps", 0 < self.fps <= 120, "a frame rate above 0 and up to 120"),
            ("fov", 5 <= self.fov <= 120, "a field of view from 5 to 120 degrees"),
            ("max_gap_s", self.max_gap_s >= 0, "0 or more seconds"),
            ("n_expression", self.n_expression >= 1, "at least 1"),
            ("crop_scale", self.crop_scale > 0, "positive"),
            ("voice_print", self.voice_print in ("auto", "ge2e", "pitch+mfcc"), "auto, ge2e or pitch+mfcc"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise SettingError(name, expected, getattr(self, name))


def prepare(
    video=None,
    out="prepared",
    *,
    left=None,
    right=None,
    single=None,
    audio=None,
    progress: bool = True,
    **settings,
) -> Path:
    """Prepare a `video` of two or three people side by side or in a grid (or `left` + `right`
    videos of two, or `single`, one person's video) into folder `out`.

    `settings` are the fields of `PrepareConfig`. Returns the folder. Warnings
    (trimmed lengths, resampling, silence) are issued and kept in the report.
    """
    cfg = PrepareConfig(**settings)
    out = Path(out)
    seconds: dict[str, float] = {}
    caught: list[warnings.WarningMessage] = []
    created = not out.exists()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            src = open_source(video, left=left, right=right, single=single, audio=audio, fps=cfg.fps)
            cache = _Cache(out / ".cache", src.key(), cfg)
            done = _finished_report(out, cache.whole_key)
            if done is not None:  # the same inputs, settings and code: nothing to do again
                caught.extend(_as_warnings(done["warnings"]))
                return out
            out.mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be there
            (out / "prepare_report.json").unlink(missing_ok=True)  # unfinished until the end
            with _timed(seconds, "faces"):
                regions = src.find_people()
                n_people = len(regions)

            with _timed(seconds, "landmarks"):
                lm_region = cache.get(
                    "landmarks", lambda: {"landmarks": src.track_landmarks(regions, progress)}
                )["landmarks"]

            with _timed(seconds, "audio"):
                start, end = src.faces_in_view(lm_region)  # a clip may begin or end without both faces
                wav, n_frames = src.read_audio(end)
                wav, n_frames = wav[int(round(start / cfg.fps * io.SAMPLE_RATE)) :], n_frames - start
                a = cache.get("audio", lambda: _audio_features(wav, n_frames, cfg.fps))

            lm_region = lm_region[:, start : start + n_frames]
            max_gap = int(round(cfg.max_gap_s * cfg.fps))
            src.check_tracked(lm_region, max_gap)  # a face lost for longer than max_gap_s is an error
            found = np.isfinite(lm_region).all(axis=(2, 3)).mean(axis=1)
            lm_region = np.stack([headpose.fill_gaps(lm, max_gap)[0] for lm in lm_region]).astype(np.float32)

            with _timed(seconds, "pose"):
                heads = _head_poses(lm_region, regions, cfg)
                for p in range(n_people):
                    src.warn_turned(p, heads["pose"][p])

            with _timed(seconds, "expression"):
                model, shapes, faces = _face_states(lm_region, heads["face3d"], cfg.n_expression)

            with _timed(seconds, "who_speaks"):
                diarization = diarize.diarize(
                    wav, a["log_mel"], n_frames, cfg.fps, mouth=faces["mouth"], voice_print=cfg.voice_print
                )
                if not diarization.pieces:
                    warnings.warn(
                        f"{src.audio_path}: no speech found; nobody is marked as speaking",
                        PrepareWarning,
                        stacklevel=2,
                    )

            with _timed(seconds, "crops_masks"):
                frames = src.crops(regions, heads["boxes"], cfg.size, start, n_frames)
                cuts = cache.get(
                    "crops",
                    lambda: write_crops_and_masks(
                        frames, heads["landmarks"], n_frames, cfg.fps, out, progress
                    ),
                    outputs=[out / "masks.npz"] + [out / f"frames_p{p}.mp4" for p in range(n_people)],
                )
                for p in range(n_people):
                    src.warn_cuts(p, cuts[f"cuts_p{p}"].tolist())

            with _timed(seconds, "write"):
                io.write_audio(out / "audio.wav", wav)
                _write_tracks(
                    out / "tracks.npz", heads, faces, diarization.speaking, model, regions, a, cfg.fps
                )
    except BaseException:  # a folder this run made and left nothing in is taken away again
        if created and out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
            shutil.rmtree(out)
        raise
    finally:  # warnings reach the caller even when a stage fails, each once, in order
        notes = [str(w.message) for w in caught if issubclass(w.category, PrepareWarning)]
        notes = list(dict.fromkeys(notes))
        for note in notes:
            warnings.warn(note, PrepareWarning, stacklevel=3)

    report = _report(src, cfg, start, n_frames, found, diarization, model, shapes, notes, seconds, cache)
    with atomic_path(out / "prepare_report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return out


def _report(src, cfg: PrepareConfig, start: int, n_frames: int, found, diarization, model, shapes,
            notes: list[str], seconds: dict, cache: _Cache) -> dict:  # fmt: skip
    """What prepare_report.json holds: the inputs and settings, the frames kept, faces found, how
    who speaks was decided, the expression model's share of the variance, warnings and timings."""
    return {
        "complete": True,
        "inputs": src.describe(),
        "settings": as_record(cfg),
        "people": src.names,  # where each person is in the video: "left", "middle", "2", ...
        "frames": int(n_frames),
        "source_frames": [int(start), int(start + n_frames)],  # the input's frames kept, at `fps`
        "fps": cfg.fps,
        "seconds": round(n_frames / cfg.fps, 3),
        "faces_found": [round(float(f), 4) for f in found],
        "who_speaks": {"method": diarization.method, "voice_print": diarization.voice_print,
                       "voice_mouth_agreement": _num(diarization.agreement),
                       "voiced_pieces": len(diarization.pieces)},
        "expression_variance_kept": round(model.explained(shapes), 4),
        "warnings": notes,
        "stage_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "total_seconds": round(sum(seconds.values()), 2),
        "cached_stages": sorted(cache.hits),
        "key": cache.whole_key,  # inputs, settings and all the code: a re-run that matches returns at once
    }  # fmt: skip


def _finished_report(out: Path, key: str) -> dict | None:
    """The report of a finished preparation in `out` made with `key` (the same inputs, settings and
    code), while every file it wrote is still there; otherwise None."""
    try:
        report = json.loads((out / "prepare_report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("key") != key or not report.get("complete"):
        return None
    people = len(report.get("people", []))
    written = ["tracks.npz", "audio.wav", "masks.npz"] + [f"frames_p{p}.mp4" for p in range(people)]
    return report if people and all((out / name).is_file() for name in written) else None


def _as_warnings(notes: list[str]) -> list[warnings.WarningMessage]:
    """A finished preparation's recorded warnings, to be issued again to the caller of a re-run."""
    return [warnings.WarningMessage(note, PrepareWarning, __file__, 0) for note in notes]


def _write_tracks(path: Path, heads: dict, faces: dict, speaking: np.ndarray, model, regions, audio: dict,
                 fps: float) -> None:  # fmt: skip
    """tracks.npz (the module docstring lists its arrays), written atomically."""
    save_npz_atomic(
        path,
        pose=heads["pose"].astype(np.float32),
        pose_raw=heads["pose_raw"].astype(np.float32),
        speaking=speaking,
        blink=faces["blink"].astype(np.float32),
        fps=np.float32(fps),
        expression=faces["expression"],
        mouth=faces["mouth"],
        landmarks=heads["landmarks"].astype(np.float32),
        crop_box=(heads["boxes"] + [[r[0], r[1], 0] for r in regions]).astype(np.int32),  # in frame pixels
        region=np.asarray(regions, np.int32),
        intrinsics=heads["intrinsics"].astype(np.float32),
        face3d=heads["face3d"].astype(np.float32),
        exp_mean=model.mean.astype(np.float32),  # the expression model (docs/conventions.md)
        exp_identity=model.identity.astype(np.float32),
        exp_basis=model.basis.astype(np.float32),
        zcr=audio["zcr"],
        rms=audio["rms"],
        mel=audio["mel"].astype(np.float16),
        format_version=FORMAT_VERSION,
    )


def _head_poses(landmarks: np.ndarray, regions, cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """Each person's square crop box (P, 3), canonical face (P, 478, 3), head pose by PnP per frame
    (`pose_raw`) and smoothed (`pose`) (P, T, 6), and the crop's camera `intrinsics` (P, 3, 3) and
    `landmarks` (P, T, 478, 3), from landmarks (P, T, 478, 3) in each person's region's pixels."""
    P = len(landmarks)
    boxes = np.array([square_crop(landmarks[p], regions[p], cfg.crop_scale) for p in range(P)])
    region_cameras = [
        intrinsic_matrix(focal_from_fov(r[2] - r[0], cfg.fov), r[2] - r[0], r[3] - r[1]) for r in regions
    ]
    face3d = np.stack([headpose.canonical_face(landmarks[p]) for p in range(P)])
    raw = np.stack([headpose.solve_pose(landmarks[p], face3d[p], region_cameras[p]) for p in range(P)])
    return {
        "boxes": boxes,
        "face3d": face3d,
        "pose_raw": raw,
        "pose": np.stack([headpose.smooth_pose(raw[p], cfg.fps) for p in range(P)]),
        "intrinsics": np.stack([crop_intrinsics(region_cameras[p], boxes[p], cfg.size) for p in range(P)]),
        "landmarks": np.stack([to_crop(landmarks[p], boxes[p], cfg.size) for p in range(P)]),
    }


def _face_states(landmarks: np.ndarray, face3d: np.ndarray, n_expression: int):
    """The expression model fitted on every person's landmarks (P, T, 478, 3) with their canonical
    faces, the normalised shapes it was fitted on, and per person and frame its `expression`
    code (P, T, K), `blink` (P, T) and `mouth` opening (P, T)."""
    P = len(landmarks)
    shapes = [expression.normalise_landmarks(landmarks[p], face3d[p]) for p in range(P)]
    blink = np.stack([expression.blink_from_ear(expression.eye_aspect_ratio(s)) for s in shapes])
    model = expression.MorphableModel.fit(shapes, n_expression, blinks=list(blink))
    faces = {
        "expression": np.stack([model.coefficients(shapes[p], p) for p in range(P)]),
        "blink": blink,
        "mouth": np.stack([expression.mouth_opening(s) for s in shapes]).astype(np.float32),
    }
    return model, shapes, faces


def write_crops_and_masks(frames, landmarks: np.ndarray, n_frames: int, fps: float, out: Path,
                          progress: bool = True, plate_frames: int = 200) -> dict:  # fmt: skip
    """Stage 7, streamed: each frame's crops (a list of P images from `frames`) are segmented,
    labelled and appended to `frames_p*.mp4`; the labels go to a file per person and from there
    into `masks.npz` beside the background plates. Only the frames the plates are taken from
    (about `plate_frames` per person) and a thumbnail per frame are kept, so memory does not grow
    with the clip. Returns the cuts found per person (`cuts_p0`, ...)."""
    n_people = len(landmarks)
    step = max(1, n_frames // plate_frames)
    kept: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n_people)]  # (image, person)
    thumbs: list[list[np.ndarray]] = [[] for _ in range(n_people)]
    with ExitStack() as stack:
        videos = [stack.enter_context(io.VideoWriter(out / f"frames_p{p}.mp4", fps, lossless=True))
                  for p in range(n_people)]  # fmt: skip
        label_files = [stack.enter_context(tempfile.TemporaryFile(dir=out)) for _ in range(n_people)]
        segmenters = [stack.enter_context(masks.PersonSegmenter()) for _ in range(n_people)]
        bar = tqdm(frames, total=n_frames, desc="crops", unit="frame", disable=not progress)
        for t, crops in enumerate(bar):
            for p, image in enumerate(crops):
                person = segmenters[p](image).astype(np.float16)  # as stored before streaming
                videos[p].write(image)
                label_files[p].write(masks.frame_labels(person, landmarks[p, t]).tobytes())
                thumbs[p].append(thumbnail(image))
                if t % step == 0:
                    kept[p].append((image, person))
        if len(thumbs[0]) != n_frames:
            raise PrepareError(f"{out}: the video ended after {len(thumbs[0])} of {n_frames} frames")
        plates = np.stack([masks.background_plate(*map(np.stack, zip(*kept[p], strict=True)))
                           for p in range(n_people)])  # fmt: skip
        for f in label_files:
            f.seek(0)
        size = plates.shape[1]
        chunk = 64 * size * size  # bytes of 64 frames' labels
        parts = (b for f in label_files for b in iter(lambda f=f: f.read(chunk), b""))
        labels = ArrayParts((n_people, n_frames, size, size), np.uint8, parts)
        save_npz_atomic(out / "masks.npz", labels=labels, background=plates, format_version=FORMAT_VERSION)
    return {f"cuts_p{p}": np.asarray(scene_cuts(np.stack(thumbs[p])), np.int64) for p in range(n_people)}


# --- reading a prepared folder ---------------------------------------------------------------


def prepare_sample(size: int = PrepareConfig.size) -> Path:
    """The shipped sample conversation (`data_samples/dialogue.mp4`) prepared at `size` pixels per
    person, in a temporary folder that the notebooks, benchmarks and tools share (its cache makes
    a second call quick). The shipped avatar needs it at the size it was trained at (`Avatar.size`)."""
    name = "minitalk_sample_prepared" + ("" if size == PrepareConfig.size else f"_{size}")
    return prepare(minitalk.SAMPLE_DIR / "dialogue.mp4", Path(tempfile.gettempdir()) / name, size=size,
                   progress=False)  # fmt: skip


TRACKS_KEYS = ("pose", "speaking", "blink", "fps", "expression", "mouth", "landmarks", "crop_box", "region",
               "intrinsics", "face3d", "zcr", "rms", "mel")  # fmt: skip


def load_tracks(folder) -> dict[str, np.ndarray]:
    """The arrays of `folder/tracks.npz`, after checking that the preparation finished."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected one written by minitalk prepare)")
    if not (folder / "prepare_report.json").is_file():
        raise PrepareError(
            f"{folder}: not a finished preparation (no prepare_report.json); run minitalk prepare"
        )
    return load_npz(folder / "tracks.npz", "tracks file", TRACKS_KEYS)


def read_person_frames(folder, person: int) -> np.ndarray:
    """Person `person`'s crops (T, S, S, 3) uint8."""
    return io.read_video(Path(folder) / f"frames_p{person}.mp4")[0]


def read_people_frames(
    folder, n_people: int, n_frames: int, size: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Every person's crops (P, T, S, S, 3) uint8, decoded straight into one array: no list of
    frames and no stacked copy beside it, so loading at 512 px costs the array alone
    (docs/results.md, "512 px faces"). `out` (P, T' >= T, S, S, 3): decode into its first T frames."""
    images = np.empty((n_people, n_frames, size, size, 3), np.uint8) if out is None else out[:, :n_frames]
    for p in range(n_people):
        path = Path(folder) / f"frames_p{p}.mp4"
        count = 0
        for frame in io.iter_frames(path):
            if count == n_frames or frame.shape != images.shape[2:]:
                found = (
                    "more frames"
                    if count == n_frames
                    else f"frame {count} of {frame.shape[1]}x{frame.shape[0]} px"
                )
                raise PrepareError(
                    f"{path}: does not match tracks.npz ({n_frames} frames of {size}x{size} px); {found}"
                )
            images[p, count] = frame
            count += 1
        if count != n_frames:
            raise PrepareError(f"{path}: {count} frames, where tracks.npz has {n_frames}")
    return images


def people_names(folder) -> list[str]:
    """A name for each person of a prepared folder, from the file names it was prepared from:
    `--left alice.mp4 --right bob.mp4` gives "alice" and "bob", `--single carol.mp4` "carol", one
    video `interview.mp4` "interview left" and "interview right" (three in a row: "... middle";
    a grid: "interview 1", "interview 2", ...) (what `minitalk train --names` replaces)."""
    report = json.loads((Path(folder) / "prepare_report.json").read_text())
    videos = [Path(v).stem for v in report.get("inputs", {}).get("videos", [])] or [Path(folder).name]
    if len(videos) == 2:
        return videos
    return [f"{videos[0]} {where}".strip() for where in report.get("people", ["left", "right"])]


def load_masks(folder) -> tuple[np.ndarray, np.ndarray]:
    """Labels (P, T, S, S) uint8 and background plates (P, S, S, 3) uint8."""
    z = load_npz(Path(folder) / "masks.npz", "masks file", ("labels", "background"))
    return z["labels"], z["background"]


# --- helpers -------------------------------------------------------------------------------


def _audio_features(wav: np.ndarray, n_frames: int, fps: float) -> dict[str, np.ndarray]:

    log_mel = au.log_mel(wav)
    zcr, rms = au.zcr_rms(wav, io.SAMPLE_RATE, fps, n_frames)
    return {"log_mel": log_mel, "mel": au.mel_windows(log_mel, fps, n_frames), "zcr": zcr, "rms": rms}


def crop_intrinsics(intrinsics: np.ndarray, box, size: int) -> np.ndarray:
    """The camera `intrinsics` seen through a square crop `box` = (x0, y0, side) resized to `size` pixels.

    Pixel coordinates here run from 0 at an image's edge (FaceMesh's
    convention), so cropping shifts the principal point and resizing scales
    everything by size / side.
    """
    x0, y0, side = box
    s = size / side
    out = np.array(intrinsics, dtype=np.float64)
    out[0, 2] -= x0
    out[1, 2] -= y0
    out[:2] *= s
    return out


def to_crop(landmarks: np.ndarray, box, size: int) -> np.ndarray:
    """Landmarks (..., 3) from region pixels to crop pixels (depth scaled alike)."""
    x0, y0, side = box
    return (landmarks - np.array([x0, y0, 0.0])) * (size / side)


@contextmanager
def _timed(seconds: dict, stage: str):
    """Add the seconds the block takes to `seconds[stage]` (the report's `stage_seconds`)."""
    clock = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - clock


def _num(x: float):
    return None if not np.isfinite(x) else round(float(x), 4)


class _Cache:
    """Finished stages under `folder`, each an npz tagged with the key of its inputs, settings and code."""

    CODE = ("prepare/audio.py", "prepare/face.py", "io.py", "prepare/masks.py", "prepare/sources.py",
            "prepare/data.py")  # fmt: skip

    def __init__(self, folder: Path, source_key: str, cfg: PrepareConfig):

        # the code that computes the cached stages is part of the key, so an edit invalidates them
        package = Path(minitalk.__file__).parent
        code = [(package / m).read_bytes() for m in self.CODE]
        text = json.dumps([source_key, asdict(cfg), minitalk.__version__], sort_keys=True)
        staged = text + hashlib.sha256(b"".join(code)).hexdigest()
        self.key = hashlib.sha256(staged.encode()).hexdigest()[:16]
        # the whole preparation's key: every module of the package (the stages not cached, such as who
        # speaks, read many), and whether the voice encoder's weights are installed (voice_print "auto")
        everything = b"".join(f.read_bytes() for f in sorted(package.rglob("*.py")))
        text += hashlib.sha256(everything).hexdigest() + str(voices.available())
        self.whole_key = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.folder = folder
        self.hits: set[str] = set()

    def get(self, stage: str, compute, outputs: list[Path] = ()) -> dict[str, np.ndarray]:
        """The stage's cached result, or `compute()`'s, cached. A stage that also writes `outputs`
        counts as finished only while they are all there."""
        path = self.folder / f"{stage}-{self.key}.npz"
        if path.is_file() and all(o.is_file() for o in outputs):
            try:
                cached = load_npz(path, "cached stage")
                self.hits.add(stage)
                return cached
            except FileFormatError:  # a stage cut short by a crash: compute it again
                pass
        for old in self.folder.glob(f"{stage}-*.npz"):  # another input's or setting's result, or
            old.unlink()  # this one's outputs overwritten: never trusted after a new start
        result = compute()
        save_npz_atomic(path, **result)
        return result
