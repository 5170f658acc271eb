"""`minitalk evaluate`: every metric that applies to a rendered clip, per person and role.

A clip written by `minitalk render` holds one square panel per person, side by side (two) or in a
grid (three or more; its render report, CLIP.json, says how many). Each panel
is streamed through FaceMesh (`FaceReader`), and the metrics of the ViCo suite (the Preference
Score paper, Table 1) are computed from the readings:

- without a reference: CPBD, blink rate and mean interval, head-motion variance, and for the
  speaker the sync proxy AVOffset / AVConf (`minitalk.evaluate.sync`);
- with real frames of the same moments (`--reference`, or `--prepared` of the same length):
  PSNR, SSIM, LMD over the face and over the lips, ExpL1 and PoseL1;
- with any real footage of the people (`--prepared`, or a reference of another length): PoseFD
  and ExpFD, which compare distributions, not frames, and what a viewer checks (blinks, a mouth
  closed in silence, flicker, faces present; `minitalk.evaluate.viewer`), pass or short against
  the footage.

Who speaks when comes from the clip's `CLIP.json` (written by `minitalk render`), else from the
prepared folder when it is the same length, else from the avatar's voice prints, else from whose
mouth moves while someone speaks. Its report is written by `minitalk.evaluate.report`.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from minitalk import io, metrics
from minitalk.dialogue.avatar import load_avatar
from minitalk.dialogue.render import GRIDS
from minitalk.dialogue.roles import assign_roles
from minitalk.evaluate import sync
from minitalk.evaluate.faces import FaceModel, FaceReadings, ThreadedReader
from minitalk.evaluate.report import ROLES
from minitalk.evaluate.scores import Derived, preference_scores, role_metrics
from minitalk.evaluate.viewer import viewer_checks
from minitalk.prepare import data
from minitalk.prepare.audio import log_mel, voice_activity
from minitalk.prepare.expression import events
from minitalk.settings import as_record, option
from minitalk.utils import MinitalkWarning, SettingError, lowpass


class EvaluateWarning(MinitalkWarning):
    """Some metrics could not be computed; the others were."""


@dataclass(frozen=True)
class EvaluateConfig:
    """The settings of `minitalk evaluate` (`minitalk.settings`), saved in CLIP.eval.json: what the
    clip is compared with, which decides the metrics that apply (see the module docstring)."""

    reference: str | None = option(None, "a clip of real frames in the same layout", metavar="REAL")
    prepared: str | None = option(None, "a folder written by minitalk prepare", metavar="DIR")
    avatar: str | None = option(
        None, "an avatar file: its voice prints say who speaks, when CLIP has no .json", metavar="AVATAR"
    )

    def __post_init__(self):
        if self.reference is not None and self.prepared is not None:
            raise SettingError("prepared", "not given with a reference clip", self.prepared)


def panels_of(frame: np.ndarray, n_people: int) -> list[np.ndarray]:
    """One frame of `n_people` square panels laid out as `minitalk render` lays them (`GRIDS`: side by
    side, then rows, left to right and top to bottom), cut into the panels in that order."""
    rows, _ = GRIDS[n_people]
    s = frame.shape[0] // rows
    cols = frame.shape[1] // s
    cells = [divmod(p, cols) for p in range(n_people)]  # (row, column)
    return [frame[r * s : (r + 1) * s, c * s : (c + 1) * s] for r, c in cells]


def clip_layout(path, info: io.VideoInfo, people: int | None = None) -> int:
    """How many people a clip shows, or a MediaError. `people`, when known (from the clip's render
    report, or the clip a reference stands beside), must fit the frame as `GRIDS[people]` square
    panels; otherwise a square frame is one person and one twice as wide two side by side (a grid of
    three or more cannot tell its empty cells from the frame's size alone)."""
    w, h = info.width, info.height
    if people is not None:
        rows, cols = GRIDS.get(people, (0, 0))
        if rows and h % rows == 0 and w * rows == h * cols:
            return people
        raise io.MediaError(f"{path}: {w}x{h} is not the layout of {people} people, {rows} x {cols} square "
                            "panels (as minitalk render lays them out)")  # fmt: skip
    if h > 0 and w % h == 0 and w // h in (1, 2):
        return w // h
    raise io.MediaError(
        f"{path}: {w}x{h} is not one or two square panels side by side, and no render report "
        f"({Path(path).with_suffix('.json').name}) says how many people it shows; for a real interview, "
        "prepare it and pass the folder with --prepared"
    )


def render_report(clip: Path) -> dict | None:
    """The report `minitalk render` wrote beside `clip` (CLIP.json: who speaks when, and who is in
    the clip), or None when there is none or it is not one."""
    sidecar = clip.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        report = json.loads(sidecar.read_text())
        if isinstance(report, dict) and isinstance(report["turns"], list):
            return report
    except (ValueError, KeyError):
        pass
    warnings.warn(f"{sidecar}: not a render report; who is in the clip and who speaks are read another way",
                  EvaluateWarning, stacklevel=3)  # fmt: skip
    return None


def _fit_panel(panel: np.ndarray, size: int) -> np.ndarray:
    if panel.shape[0] == size:
        return panel
    return cv2.resize(panel, (size, size), interpolation=cv2.INTER_AREA)


def _reference_frames(reference, prepared, tracks, fps: float, size: int, n_people: int):
    """An iterator of per-frame lists of real panels at the clip's rate and size, its frame count,
    and where it comes from; None when there is no reference. `tracks`: the prepared folder's."""
    if reference is not None:
        info = io.probe(reference)
        if n_people > 2:  # a grid: the reference must be laid out as the clip is
            clip_layout(reference, info, n_people)
        elif (n_ref := clip_layout(reference, info)) != n_people:
            raise io.MediaError(f"{reference}: shows {n_ref} people; the clip shows {n_people}")
        count = int(round(info.n_frames * fps / info.fps))
        frames = (
            [_fit_panel(p, size) for p in panels_of(f, n_people)] for f in io.iter_frames_at(reference, fps)
        )
        return frames, count, f"{Path(reference).name} ({info.n_frames} frames at {info.fps:g} fps)"
    if prepared is not None:
        if abs(float(tracks["fps"]) - fps) > 1e-3:
            raise io.MediaError(
                f"{prepared}: prepared at {float(tracks['fps']):g} fps, the clip runs at {fps:g} fps"
            )
        streams = [io.iter_frames(Path(prepared) / f"frames_p{p}.mp4") for p in range(n_people)]
        frames = ([_fit_panel(f, size) for f in row] for row in zip(*streams, strict=False))
        count = tracks["pose"].shape[1]
        return frames, count, f"{Path(prepared).name} ({count} frames at {fps:g} fps)"
    return None


def _speaking(clip: Path, rendered: dict | None, n_frames: int, fps: float, audio, readings, prepared, tracks,
              aligned, avatar):  # fmt: skip
    """(P, T) bool and where it came from (see the module docstring). `rendered`: the render report."""
    n_people = len(readings)
    if rendered is not None:
        try:
            speaking = np.zeros((n_people, n_frames), bool)
            for turn in rendered["turns"]:
                if 0 <= turn["speaker"] < n_people:
                    a, b = int(round(turn["start"] * fps)), int(round(turn["end"] * fps))
                    speaking[turn["speaker"], a:b] = True
            return speaking, f"turns in {clip.with_suffix('.json').name}"
        except (ValueError, KeyError, TypeError):
            warnings.warn(f"{clip.with_suffix('.json')}: its turns are not a render report's; who speaks is "
                          "read another way", EvaluateWarning, stacklevel=3)  # fmt: skip
    if prepared is not None and aligned:
        return tracks["speaking"][:n_people, :n_frames], f"the tracks in {Path(prepared).name}"
    if audio is None:
        return np.zeros((n_people, n_frames), bool), "nobody (no audio)"
    av = load_avatar(avatar) if avatar is not None and n_people == 2 else None
    if av is not None and av.n_people == 2:  # an avatar of more people: which two are here is not known
        roles = assign_roles(audio, log_mel(audio), n_frames, fps, av.voice_prints, av.voice_spread)
        return roles.speaking, f"voice prints in {Path(avatar).name}"
    return speaking_from_mouths(audio, readings, fps, n_frames), "whose mouth moves while someone speaks"


def speaking_from_mouths(audio: np.ndarray, readings: list[FaceReadings], fps: float, n_frames: int):
    """(P, T): during voiced stretches (silero-vad), the person whose mouth moves most over the
    surrounding second speaks (preparation's mouth cue, without its voice clustering)."""
    voiced = np.zeros(n_frames, bool)
    for a, b in voice_activity(audio):
        voiced[int(a * fps) : int(np.ceil(b * fps))] = True
    motion = []
    for r in readings:
        m = np.nan_to_num(sync.zscore(r.opening))
        motion.append(lowpass(np.abs(np.diff(m, prepend=m[:1])), fps, 0.5))
    motion = np.stack(motion)
    speaking = np.zeros((len(readings), n_frames), bool)
    speaking[np.argmax(motion, 0), np.arange(n_frames)] = True
    return speaking & voiced


def _frame_ranges(mask: np.ndarray, fps: float) -> str:
    runs = events(mask.astype(float))
    text = ", ".join(f"{a}-{b} ({a / fps:.2f}-{(b + 1) / fps:.2f} s)" for a, b in runs[:5])
    return text + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")


def evaluate_clip(clip, *, progress: bool = True, **settings) -> dict:
    """Every metric that applies to `clip`, per person and role (see the module docstring);
    `settings` are the fields of `EvaluateConfig`.

    Returns the report (what CLIP.eval.json holds) with the readings under "_readings".
    """
    cfg = EvaluateConfig(**settings)
    clip = Path(clip)
    clock = time.perf_counter()
    info = io.probe(clip)
    rendered = render_report(clip)
    listed = rendered.get("people") if rendered is not None else None
    n_people = clip_layout(clip, info, len(listed) if isinstance(listed, list) else None)
    size, fps = info.height // GRIDS[n_people][0], info.fps  # a panel's side
    notes: list[str] = []  # warnings
    remarks: list[str] = []  # what the reader should know, expected in normal use

    def note(message: str) -> None:
        notes.append(message)
        warnings.warn(message, EvaluateWarning, stacklevel=3)

    tracks = data.load_tracks(cfg.prepared) if cfg.prepared is not None else None  # read once
    ref = _reference_frames(cfg.reference, cfg.prepared, tracks, fps, size, n_people)
    readings, ref_readings, image_scores = _read_panels(clip, info, n_people, ref, progress)
    n_frames = len(readings[0])
    read_seconds = time.perf_counter() - clock

    aligned = _aligned(clip, n_frames, ref, ref_readings, fps, cfg.reference is not None, note, remarks)

    audio = None
    if not info.has_audio:
        note(f"{clip}: no audio track: the sync metrics (AVOffset, AVConf) are skipped")
    else:
        audio = io.read_audio(clip)
    speaking, speaking_from = _speaking(
        clip, rendered, n_frames, fps, audio, readings, cfg.prepared, tracks, aligned, cfg.avatar
    )
    envelope = sync.speech_envelope(audio, fps, n_frames) if audio is not None else None

    people, clip_derived, footage_derived = _score_people(
        clip, readings, ref_readings, tracks, speaking, envelope, image_scores, aligned, fps, size, note
    )

    checks = []
    if ref_readings:
        checks = _viewer_checks(clip_derived, footage_derived, speaking, tracks, aligned, fps)
        short = [f"person {c['person']}: {c['check']}" for c in checks if c["verdict"] == "short"]
        if short:
            remarks.append("short of the footage on what a viewer checks: " + "; ".join(short))
    if aligned:
        remarks += preference_scores(people)
    else:
        remarks.append(
            "no Preference Score: it weighs PSNR, SSIM, LMD, ExpL1 and PoseL1, which need real frames of "
            "the clip's own moments"
        )

    report = {
        "clip": str(clip),
        "frames": n_frames,
        "fps": fps,
        "size": size,
        "people": n_people,
        "reference": ref[2] if ref is not None else None,
        "reference_path": str(cfg.reference or cfg.prepared) if ref is not None else None,
        "frame_aligned": bool(aligned),
        "speaking_from": speaking_from,
        "per_person": people,
        "viewer_checks": checks,
        "remarks": remarks,
        "warnings": notes,
        "seconds": round(time.perf_counter() - clock, 2),
        "read_seconds": round(read_seconds, 2),
        "settings": as_record(cfg),
    }
    report["_readings"] = {
        "clip": readings,
        "reference": ref_readings,
        "speaking": speaking,
        "envelope": envelope,
    }
    return report


def _aligned(clip, n_frames: int, ref, ref_readings, fps: float, is_reference: bool, note, remarks) -> bool:
    """Whether the reference shows the clip's own moments (the same length within a second), which
    the frame metrics need; says so where it does not (a warning for a reference clip, meant to
    match; a remark for a prepared folder, which need not)."""
    n_ref = len(ref_readings[0]) if ref_readings else 0
    aligned = ref is not None and abs(n_ref - n_frames) <= max(1, round(fps))
    if ref is not None and not aligned:
        message = (
            f"{n_frames} frames against {n_ref} in {ref[2]}: not the same moments, so only the distribution "
            "metrics (PoseFD, ExpFD) compare them with real footage; PSNR, SSIM, LMD, ExpL1 and PoseL1 "
            "need real frames of the clip's own moments"
        )
        if is_reference:
            note(f"{clip}: {message}")
        else:
            remarks.append(message)
    elif ref is not None and n_ref != n_frames:
        shared = min(n_ref, n_frames)
        note(f"{clip}: {n_frames} frames against {n_ref} in {ref[2]}: the first {shared} compared")
    return aligned


def _score_people(clip, readings, ref_readings, tracks, speaking, envelope, image_scores, aligned: bool,
                  fps: float, size: int, note) -> tuple[list, list, list]:  # fmt: skip
    """Per person: the metrics of every role (`role_metrics`), and what the viewer checks compare
    (the clip's `Derived` readings and the reference's); `note` takes a warning."""
    n_frames = len(readings[0])
    n_ref = len(ref_readings[0]) if ref_readings else 0
    people, clip_derived, footage_derived = [], [], []
    for p in range(len(readings)):
        missing = ~readings[p].found
        if missing.all():
            note(f"{clip}: person {p}: no face found in any frame; only CPBD is measured")
        elif missing.any():
            note(f"{clip}: person {p}: no face found in frames {_frame_ranges(missing, fps)}")
        model = _face_model(readings[p], ref_readings[p] if ref_readings else None, tracks, p, size)
        derived = Derived.of(readings[p], model)
        ref_derived = Derived.of(ref_readings[p], model) if ref_readings else None
        ref_speaking = None  # who speaks in the reference's frames
        if tracks is not None:
            ref_speaking = tracks["speaking"][p]
        elif aligned:
            ref_speaking = (
                speaking[p][:n_ref] if n_ref <= n_frames else np.pad(speaking[p], (0, n_ref - n_frames))
            )
        person = {"person": p, "frames_without_face": int(missing.sum())}
        for role in ("all", *ROLES):
            person[role] = role_metrics(
                derived, _role_mask(role, speaking[p], speaking.any(0)), fps,
                envelope if role == "talking" else None, image_scores[p] if aligned else None,
                ref_derived, None if ref_speaking is None else _role_mask(role, ref_speaking), aligned,
            )  # fmt: skip
            if person[role].get("sync_note"):
                note(f"person {p}, {role}: {person[role]['sync_note']}")
        people.append(person)
        clip_derived.append(derived)
        footage_derived.append(ref_derived)
    return people, clip_derived, footage_derived


def _viewer_checks(clip_derived, footage_derived, speaking, tracks, aligned: bool, fps: float) -> list:
    """`viewer_checks` against the footage, whose speakers come from its prepared tracks, or from
    the clip's own moments where the footage is the same frames."""
    n_frames, n_ref = speaking.shape[1], len(footage_derived[0].readings)
    footage_speaking = None
    if tracks is not None and tracks["speaking"].shape[1] == n_ref:
        footage_speaking = tracks["speaking"]
    elif aligned and n_ref <= n_frames:
        footage_speaking = speaking[:, :n_ref]
    return viewer_checks(clip_derived, footage_derived, fps, speaking, footage_speaking)


def _read_panels(clip: Path, info: io.VideoInfo, n_people: int, ref, progress: bool):
    """Stream the clip (and the reference beside it) through FaceMesh, one thread per panel.
    Returns each person's readings of the clip and of the reference, and per person the (PSNR,
    SSIM) of each frame both have; the reference's frames past the clip's end are read too, for
    the distribution metrics."""
    readers = [ThreadedReader() for _ in range(n_people)]
    ref_readers = [ThreadedReader() for _ in range(n_people)] if ref is not None else []
    image_scores = [[] for _ in range(n_people)]  # per person: (psnr, ssim) per compared frame
    ref_iter = ref[0] if ref is not None else None
    for r in readers + ref_readers:
        r.__enter__()
    try:
        bar = tqdm(
            io.iter_frames(clip), total=info.n_frames, desc="evaluate", unit="frame", disable=not progress
        )
        for frame in bar:
            panels = panels_of(frame, n_people)
            for p in range(n_people):
                readers[p](panels[p])
            real = next(ref_iter, None) if ref_iter is not None else None
            if real is not None:
                for p in range(n_people):
                    ref_readers[p](real[p])
                    a, b = panels[p].astype(np.float64) / 255, real[p].astype(np.float64) / 255
                    image_scores[p].append((metrics.psnr(a, b), metrics.ssim(a, b)))
        for real in ref_iter or ():
            for p in range(n_people):
                ref_readers[p](real[p])
    finally:
        for r in readers + ref_readers:
            r.__exit__(None, None, None)
    return [r.readings() for r in readers], [r.readings() for r in ref_readers], image_scores


def _face_model(readings: FaceReadings, ref_readings, tracks, person: int, size: int) -> FaceModel | None:
    """The face model that turns a person's landmarks into pose and expression: the prepared
    tracks' own, else one fitted on the reference's faces, else on the clip's."""
    if tracks is not None:
        return FaceModel.from_tracks(tracks, person, size)
    for r in (ref_readings, readings):
        if r is not None and r.found.sum() >= 2:
            return FaceModel.fit(r.landmarks, size)
    return None


def _role_mask(role: str, speaking: np.ndarray, anyone: np.ndarray | None = None) -> np.ndarray:
    """The frames of a role for one person who speaks at `speaking` (T,): every frame ("all"),
    their own speech ("talking"), or the others' (listening: where `anyone` speaks but not they;
    without `anyone`, every frame they do not speak)."""
    if role == "all":
        return np.ones(len(speaking), bool)
    if role == "talking":
        return speaking
    return (anyone & ~speaking) if anyone is not None else ~speaking
