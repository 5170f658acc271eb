"""`minitalk evaluate`: every metric that applies to a rendered clip, per person and role.

A clip written by `minitalk render` holds one square panel per person, side by side. Each panel
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
from pathlib import Path

import numpy as np

from minitalk import io, metrics
from minitalk.evaluate import sync
from minitalk.evaluate.faces import FaceModel, FaceReadings, ThreadedReader
from minitalk.evaluate.report import ROLES
from minitalk.evaluate.scores import Derived, preference_scores, role_metrics
from minitalk.evaluate.viewer import viewer_checks
from minitalk.utils import MinitalkWarning


class EvaluateWarning(MinitalkWarning):
    """Some metrics could not be computed; the others were."""


def panels_of(frame: np.ndarray, n_people: int) -> list[np.ndarray]:
    """One frame (S, n S, 3) cut into its square panels, left to right."""
    s = frame.shape[0]
    return [frame[:, p * s : (p + 1) * s] for p in range(n_people)]


def clip_layout(path, info: io.VideoInfo) -> int:
    """How many people a clip shows: one or two square panels side by side, or a MediaError."""
    w, h = info.width, info.height
    if h > 0 and w % h == 0 and w // h in (1, 2):
        return w // h
    raise io.MediaError(
        f"{path}: {w}x{h} is not one or two square panels side by side (the layout minitalk render "
        "writes); for a real interview, prepare it and pass the folder with --prepared"
    )


def _fit_panel(panel: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if panel.shape[0] == size:
        return panel
    return cv2.resize(panel, (size, size), interpolation=cv2.INTER_AREA)


def _reference_frames(reference, prepared, fps: float, size: int, n_people: int):
    """An iterator of per-frame lists of real panels at the clip's rate and size, its frame count,
    and where it comes from; None when there is no reference."""
    if reference is not None:
        info = io.probe(reference)
        n_ref = clip_layout(reference, info)
        if n_ref != n_people:
            raise io.MediaError(f"{reference}: shows {n_ref} people; the clip shows {n_people}")
        count = int(round(info.n_frames * fps / info.fps))
        frames = (
            [_fit_panel(p, size) for p in panels_of(f, n_people)] for f in io.iter_frames_at(reference, fps)
        )
        return frames, count, f"{Path(reference).name} ({info.n_frames} frames at {info.fps:g} fps)"
    if prepared is not None:
        from minitalk.prepare import data

        tracks = data.load_tracks(prepared)
        if abs(float(tracks["fps"]) - fps) > 1e-3:
            raise io.MediaError(
                f"{prepared}: prepared at {float(tracks['fps']):g} fps, the clip runs at {fps:g} fps"
            )
        streams = [io.iter_frames(Path(prepared) / f"frames_p{p}.mp4") for p in range(n_people)]
        frames = ([_fit_panel(f, size) for f in row] for row in zip(*streams, strict=False))
        count = tracks["pose"].shape[1]
        return frames, count, f"{Path(prepared).name} ({count} frames at {fps:g} fps)"
    return None


def _speaking(clip: Path, n_frames: int, fps: float, audio, readings, prepared, aligned, avatar):
    """(P, T) bool and where it came from (see the module docstring)."""
    n_people = len(readings)
    sidecar = clip.with_suffix(".json")
    if sidecar.is_file():
        try:
            turns = json.loads(sidecar.read_text())["turns"]
            speaking = np.zeros((n_people, n_frames), bool)
            for turn in turns:
                if 0 <= turn["speaker"] < n_people:
                    a, b = int(round(turn["start"] * fps)), int(round(turn["end"] * fps))
                    speaking[turn["speaker"], a:b] = True
            return speaking, f"turns in {sidecar.name}"
        except (ValueError, KeyError, TypeError):
            warnings.warn(f"{sidecar}: not a render report; who speaks is read another way", EvaluateWarning,
                          stacklevel=3)  # fmt: skip
    if prepared is not None and aligned:
        from minitalk.prepare import data

        return data.load_tracks(prepared)["speaking"][
            :n_people, :n_frames
        ], f"the tracks in {Path(prepared).name}"
    if audio is None:
        return np.zeros((n_people, n_frames), bool), "nobody (no audio)"
    if avatar is not None and n_people == 2:
        from minitalk.dialogue.avatar import load_avatar
        from minitalk.dialogue.roles import assign_roles
        from minitalk.prepare.audio import log_mel

        av = load_avatar(avatar)
        roles = assign_roles(audio, log_mel(audio), n_frames, fps, av.voice_prints, av.voice_spread)
        return roles.speaking, f"voice prints in {Path(avatar).name}"
    return speaking_from_mouths(audio, readings, fps, n_frames), "whose mouth moves while someone speaks"


def speaking_from_mouths(audio: np.ndarray, readings: list[FaceReadings], fps: float, n_frames: int):
    """(P, T): during voiced stretches (silero-vad), the person whose mouth moves most over the
    surrounding second speaks (preparation's mouth cue, without its voice clustering)."""
    from minitalk.prepare.audio import voice_activity
    from minitalk.utils import lowpass

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
    from minitalk.prepare.expression import events

    runs = events(mask.astype(float))
    text = ", ".join(f"{a}-{b} ({a / fps:.2f}-{(b + 1) / fps:.2f} s)" for a, b in runs[:5])
    return text + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")


def evaluate_clip(clip, reference=None, prepared=None, avatar=None, progress: bool = True) -> dict:
    """Every metric that applies to `clip`, per person and role (see the module docstring).

    Returns the report (what CLIP.eval.json holds) with the readings under "_readings".
    """
    from tqdm.auto import tqdm

    clip = Path(clip)
    clock = time.perf_counter()
    info = io.probe(clip)
    n_people = clip_layout(clip, info)
    size, fps = info.height, info.fps
    notes: list[str] = []  # warnings
    remarks: list[str] = []  # what the reader should know, expected in normal use

    def note(message: str) -> None:
        notes.append(message)
        warnings.warn(message, EvaluateWarning, stacklevel=3)

    ref = _reference_frames(reference, prepared, fps, size, n_people)
    readers = [ThreadedReader() for _ in range(n_people)]  # one thread per panel: FaceMesh in parallel
    ref_readers = [ThreadedReader() for _ in range(n_people)] if ref is not None else []
    image_scores = [[] for _ in range(n_people)]  # per person: (psnr, ssim) per compared frame
    ref_iter = ref[0] if ref is not None else None
    n_frames = 0
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
            n_frames += 1
        if ref_iter is not None:  # the reference's frames past the clip's end, read for the FD metrics
            for real in ref_iter:
                for p in range(n_people):
                    ref_readers[p](real[p])
    finally:
        for r in readers + ref_readers:
            r.__exit__(None, None, None)
    readings = [r.readings() for r in readers]
    ref_readings = [r.readings() for r in ref_readers]
    read_seconds = time.perf_counter() - clock

    n_ref = len(ref_readings[0]) if ref_readings else 0
    aligned = ref is not None and abs(n_ref - n_frames) <= max(1, round(fps))  # within a second
    if ref is not None and not aligned:
        message = (
            f"{n_frames} frames against {n_ref} in {ref[2]}: not the same moments, so only the distribution "
            "metrics (PoseFD, ExpFD) compare them with real footage; PSNR, SSIM, LMD, ExpL1 and PoseL1 "
            "need real frames of the clip's own moments"
        )
        if reference is not None:  # a reference is meant to match; a prepared folder need not
            note(f"{clip}: {message}")
        else:
            remarks.append(message)
    elif ref is not None and n_ref != n_frames:
        shared = min(n_ref, n_frames)
        note(f"{clip}: {n_frames} frames against {n_ref} in {ref[2]}: the first {shared} compared")

    audio = None
    if not info.has_audio:
        note(f"{clip}: no audio track: the sync metrics (AVOffset, AVConf) are skipped")
    else:
        audio = io.read_audio(clip)
    speaking, speaking_from = _speaking(clip, n_frames, fps, audio, readings, prepared, aligned, avatar)
    envelope = sync.speech_envelope(audio, fps, n_frames) if audio is not None else None

    tracks = None
    if prepared is not None:
        from minitalk.prepare import data

        tracks = data.load_tracks(prepared)
    people, clip_derived, footage_derived = [], [], []
    for p in range(n_people):
        r = readings[p]
        missing = ~r.found
        if missing.all():
            note(f"{clip}: person {p}: no face found in any frame; only CPBD is measured")
        elif missing.any():
            note(f"{clip}: person {p}: no face found in frames {_frame_ranges(missing, fps)}")
        if tracks is not None:
            model = FaceModel.from_tracks(tracks, p, size)
        elif ref_readings and ref_readings[p].found.sum() >= 2:
            model = FaceModel.fit(ref_readings[p].landmarks, size)
        elif r.found.sum() >= 2:
            model = FaceModel.fit(r.landmarks, size)
        else:
            model = None
        ref_speaking = None
        if tracks is not None:
            ref_speaking = tracks["speaking"][p]
        elif aligned:
            ref_speaking = (
                speaking[p][:n_ref] if n_ref <= n_frames else np.pad(speaking[p], (0, n_ref - n_frames))
            )
        derived = Derived.of(r, model)
        ref_derived = Derived.of(ref_readings[p], model) if ref_readings else None
        clip_derived.append(derived)
        footage_derived.append(ref_derived)
        person = {"person": p, "frames_without_face": int(missing.sum())}
        for role in ("all", *ROLES):
            mask = np.ones(n_frames, bool) if role == "all" else speaking[p] if role == "talking" else (
                speaking.any(0) & ~speaking[p])  # fmt: skip
            ref_mask = None
            if ref_speaking is not None:
                ref_mask = (
                    np.ones(n_ref, bool)
                    if role == "all"
                    else ref_speaking
                    if role == "talking"
                    else ~ref_speaking
                )
            person[role] = role_metrics(
                derived, mask, fps, envelope if role == "talking" else None,
                image_scores[p] if aligned else None, ref_derived, ref_mask, aligned,
            )  # fmt: skip
            if person[role].get("sync_note"):
                note(f"person {p}, {role}: {person[role]['sync_note']}")
        people.append(person)

    checks = []
    if ref_readings:
        footage_speaking = None  # who speaks in the footage: its prepared tracks, or the clip's own moments
        if tracks is not None and tracks["speaking"].shape[1] == n_ref:
            footage_speaking = tracks["speaking"]
        elif aligned and n_ref <= n_frames:
            footage_speaking = speaking[:, :n_ref]
        checks = viewer_checks(clip_derived, footage_derived, fps, speaking, footage_speaking)
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
        "reference_path": str(reference or prepared) if ref is not None else None,
        "frame_aligned": bool(aligned),
        "speaking_from": speaking_from,
        "per_person": people,
        "viewer_checks": checks,
        "remarks": remarks,
        "warnings": notes,
        "seconds": round(time.perf_counter() - clock, 2),
        "read_seconds": round(read_seconds, 2),
    }
    report["_readings"] = {
        "clip": readings,
        "reference": ref_readings,
        "speaking": speaking,
        "envelope": envelope,
    }
    return report
