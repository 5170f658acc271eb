"""Controlled degradations of one person's rendered clip, each at levels of rising severity.

There are no human rankings here, so the Preference Score learns from orderings known by
construction: a clip is better than the same clip degraded, and a mild degradation better than a
severe one of the same kind. Each family damages one thing a viewer notices (the Preference
Score paper, section 3: lip sync for talking heads, responsive motion for listeners):

    audio_shift   the speech moved 3, 6, 12 frames later                  (talking)
    mouth_closed  the mouth box faded toward a closed mouth, 35/70/100%  (talking)
    frozen        the last third, two thirds, all of the clip held still
    replay        the person's own render of another moment              (level 2)
    no_blinks     each blink held on the frame before it                  (level 1)
    blur          Gaussian blur, sigma 0.8, 1.6, 3.2 px
    low_res       down-sampled by 2, 3, 4 and back up
    misalign      the head (above the chin) shifted 2, 4, 8 px off the torso

Each function takes frames (T, S, S, 3) uint8 (and what it needs: landmarks (T, 478, 3) in
panel pixels, blinks (T,)) and returns new frames; none changes its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from minitalk.prepare.face import CHIN, LIP_LOWER_INNER, LIP_UPPER_INNER, mouth_box_geometry


@dataclass(frozen=True)
class Family:
    name: str
    tracks: tuple[str, ...]  # "talking", "listening"
    levels: tuple  # one parameter per level, mildest first; level s (1-based) scores -s
    first_level: int = 1  # replay and no_blinks are single levels, placed at 2 and 1


FAMILIES = (
    Family("audio_shift", ("talking",), (3, 6, 12)),
    Family("mouth_closed", ("talking",), (0.35, 0.7, 1.0)),
    Family("frozen", ("talking", "listening"), (1 / 3, 2 / 3, 1.0)),
    Family("replay", ("talking", "listening"), (None,), first_level=2),
    Family("no_blinks", ("talking", "listening"), (None,)),
    Family("blur", ("talking", "listening"), (0.8, 1.6, 3.2)),
    Family("low_res", ("talking", "listening"), (2, 3, 4)),
    Family("misalign", ("talking", "listening"), (2, 4, 8)),
)


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:

    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in frames])


def low_res(frames: np.ndarray, factor: int) -> np.ndarray:

    s = frames.shape[1]
    small = max(1, s // factor)
    return np.stack(
        [cv2.resize(cv2.resize(f, (small, small), interpolation=cv2.INTER_AREA), (s, s)) for f in frames]
    )


def frozen(frames: np.ndarray, share: float) -> np.ndarray:
    """The last `share` of the clip held on the frame where it starts."""
    out = frames.copy()
    start = int(round(len(frames) * (1 - share)))
    out[start:] = frames[min(start, len(frames) - 1)]
    return out


def no_blinks(frames: np.ndarray, blink: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Every frame of a blink (and one on each side) replaced by the last frame before it."""
    closed = np.asarray(blink) > threshold
    closed = closed | np.roll(closed, 1) | np.roll(closed, -1)
    out = frames.copy()
    for t in range(len(frames)):
        if closed[t]:
            out[t] = (
                out[t - 1] if t > 0 else frames[np.flatnonzero(~closed)[0]] if (~closed).any() else frames[t]
            )
    return out


def misalign(frames: np.ndarray, landmarks: np.ndarray, shift: int) -> np.ndarray:
    """Rows above each frame's chin moved `shift` px sideways: the head no longer sits on its torso."""
    out = frames.copy()
    for t, (f, lm) in enumerate(zip(frames, landmarks, strict=True)):
        chin = int(np.clip(round(float(lm[CHIN, 1])), 0, f.shape[0]))
        out[t, :chin] = np.roll(f[:chin], shift, axis=1)
    return out


def mouth_closed(frames: np.ndarray, landmarks: np.ndarray, strength: float) -> np.ndarray:
    """Each frame's mouth blended toward the clip's most closed mouth (by the landmarks' lip gap),
    with a soft-edged mask `strength` strong at its centre."""
    gap = np.linalg.norm(landmarks[:, LIP_UPPER_INNER, :2] - landmarks[:, LIP_LOWER_INNER, :2], axis=-1)
    c = int(np.nanargmin(gap))
    s = frames.shape[1]
    centres, halves = mouth_box_geometry(landmarks)  # (T, 2), (T,): the box `mouth_interior` reads
    ys, xs = np.mgrid[0:s, 0:s] + 0.5
    out = frames.astype(np.float32)
    for t in range(len(frames)):
        centre, h = centres[t], halves[t]
        d = np.round(centres[c] - centre).astype(int)  # where frame t's mouth sits in the closed frame
        patch = np.roll(frames[c], (-d[1], -d[0]), axis=(0, 1)).astype(np.float32)
        r2 = ((xs - centre[0]) / h) ** 2 + ((ys - centre[1]) / (0.6 * h)) ** 2
        mask = strength * np.exp(-np.maximum(r2 - 0.5, 0) * 4)[..., None]  # 1 inside, fading out
        out[t] = out[t] * (1 - mask) + patch * mask
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def shift_audio(audio: np.ndarray, frames: int, fps: float, sample_rate: int = 16_000) -> np.ndarray:
    """The speech moved `frames` later (earlier when negative), same length, silence filling the gap."""
    n = int(round(abs(frames) / fps * sample_rate))
    gap = np.zeros(min(n, len(audio)), audio.dtype)
    if frames >= 0:
        return np.concatenate([gap, audio[: len(audio) - len(gap)]])
    return np.concatenate([audio[len(gap) :], gap])


def apply(family: str, level_value, frames: np.ndarray, audio: np.ndarray, fps: float,
          landmarks=None, blink=None, other=None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """One degradation: (frames, audio) -> degraded (frames, audio). `other` is the person's render
    of another moment (replay)."""
    if family == "audio_shift":
        return frames, shift_audio(audio, level_value, fps)
    if family == "mouth_closed":
        return mouth_closed(frames, landmarks, level_value), audio
    if family == "frozen":
        return frozen(frames, level_value), audio
    if family == "replay":
        return other[: len(frames)], audio
    if family == "no_blinks":
        return no_blinks(frames, blink), audio
    if family == "blur":
        return blur(frames, level_value), audio
    if family == "low_res":
        return low_res(frames, level_value), audio
    if family == "misalign":
        return misalign(frames, landmarks, level_value), audio
    raise ValueError(f"unknown degradation {family!r}")
