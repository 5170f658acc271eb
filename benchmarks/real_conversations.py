"""Two-person conversations built from real single-person clips, with known turns.

The development clips (../shared/real_clips) are not part of the project: a
script that uses them calls `clips_available()` and prints a "skipped" line
when they are missing. A conversation is a list of turns (person, start, end
in seconds of that person's own clip): the speaker's video plays the frames
that go with their audio, the listener's video keeps looping through its own
clip with its sound muted, so the listener's mouth moves too, out of time with
the voice, the hard case for a mouth cue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minitalk import io

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "real_clips"
SPEECH_CLIPS = ("face_a.mp4", "face_b.mp4")  # the two clips with speech

# name -> turns (person, start s, end s) and the silence between turns (s); person 0 is on the left
CONVERSATIONS = {
    "two_turns": ([(0, 0.0, 5.0), (1, 0.0, 4.85)], 0.0),
    "four_turns_gaps": ([(0, 0.0, 2.5), (1, 0.0, 2.4), (0, 2.5, 5.0), (1, 2.4, 4.85)], 0.4),
    "quick_turns": (
        [(0, 0.0, 1.6), (1, 0.0, 1.6), (0, 1.6, 3.3), (1, 1.6, 3.2), (0, 3.3, 5.0), (1, 3.2, 4.85)],
        0.25,
    ),
    "four_turns": ([(0, 0.0, 2.5), (1, 0.0, 2.4), (0, 2.5, 5.0), (1, 2.4, 4.85)], 0.0),
    "second_speaks_first": ([(1, 0.0, 2.4), (0, 0.0, 2.5), (1, 2.4, 4.85), (0, 2.5, 5.0)], 0.3),
}


def clips_available(clips: Path = CLIPS, names=SPEECH_CLIPS) -> bool:
    return all((clips / n).is_file() for n in names)


def read_clips(clips: Path, names) -> tuple[list, list, float]:
    """Both clips' frames and 16 kHz audio, and their common frame rate."""
    videos, fps = zip(*(io.read_video(clips / n) for n in names), strict=True)
    if abs(fps[0] - fps[1]) > 1e-3:
        raise ValueError(f"clips at {fps[0]} and {fps[1]} fps: give two clips of one frame rate")
    return list(videos), [io.read_audio(clips / n) for n in names], fps[0]


def build(turns, gap_s: float, out: Path, clips: Path = CLIPS, names=SPEECH_CLIPS, repeat: int = 1):
    """Write out/left.mp4, out/right.mp4 and out/audio.wav; return the true speaking (2, T) at the
    clips' frame rate. `repeat` plays the turns that many times (a longer conversation)."""
    videos, audios, fps = read_clips(clips, names)
    rate = io.SAMPLE_RATE
    gap = int(round(gap_s * fps))
    frames: list[list[np.ndarray]] = [[], []]
    audio, speaking = [], [[], []]
    loop = [0, 0]  # where each listener's loop has got to
    for _ in range(repeat):
        for person, start, end in turns:
            a, b = int(round(start * fps)), min(int(round(end * fps)), len(videos[person]))
            n = b - a
            frames[person] += list(videos[person][a:b])
            audio.append(audios[person][int(a / fps * rate) : int(a / fps * rate) + int(n / fps * rate)])
            audio[-1] = np.pad(audio[-1], (0, int(n / fps * rate) - len(audio[-1])))
            other = 1 - person
            frames[other] += [videos[other][(loop[other] + i) % len(videos[other])] for i in range(n)]
            loop[other] += n
            speaking[person] += [True] * n
            speaking[other] += [False] * n
            for p in (0, 1):  # a pause: both listen
                frames[p] += [videos[p][(loop[p] + i) % len(videos[p])] for i in range(gap)]
                loop[p] += gap
                speaking[p] += [False] * gap
            audio.append(np.zeros(int(gap / fps * rate), np.float32))
    io.write_video(out / "left.mp4", np.stack(frames[0]), fps)
    io.write_video(out / "right.mp4", np.stack(frames[1]), fps)
    io.write_audio(out / "audio.wav", np.concatenate(audio).astype(np.float32))
    return np.array(speaking, bool)


def side_by_side(out: Path, switch_s: float, clips: Path = CLIPS, names=SPEECH_CLIPS):
    """Both clips played once, in parallel (left: the first, right: the second), the audio the
    first clip's before `switch_s` and the second's after: each frame is a moment of footage
    seen once, so frames held out from training have no copy in it. Writes out/left.mp4,
    out/right.mp4, out/audio.wav; returns the true speaking (2, T)."""
    videos, audios, fps = read_clips(clips, names)
    rate = io.SAMPLE_RATE
    n = min(len(videos[0]), len(videos[1]), *(int(len(a) / rate * fps) for a in audios))
    cut, end = int(round(switch_s * fps)), int(n / fps * rate)
    audio = np.concatenate([audios[0][: int(cut / fps * rate)], audios[1][int(cut / fps * rate) : end]])
    io.write_video(out / "left.mp4", videos[0][:n], fps)
    io.write_video(out / "right.mp4", videos[1][:n], fps)
    io.write_audio(out / "audio.wav", audio.astype(np.float32))
    speaking = np.zeros((2, n), bool)
    speaking[0, :cut], speaking[1, cut:] = True, True
    return speaking


def frame_accuracy(found: np.ndarray, truth: np.ndarray, fps: float = 25.0, collar_s: float = 0.0) -> float:
    """Share of frames where both people's speaking flags are right; with `collar_s`, frames within
    that many seconds of a change in the true flags are not counted (the forgiveness collar of
    diarization scoring, 0.25 s in NIST's: where a silence between turns belongs is moot)."""
    n = min(found.shape[1], truth.shape[1])
    counted = np.ones(n, bool)
    if collar_s > 0:
        change = np.flatnonzero((np.diff(truth[:, :n].astype(np.int8), axis=1) != 0).any(axis=0)) + 0.5
        near = np.abs(np.arange(n)[:, None] - change[None]).min(axis=1, initial=np.inf) <= collar_s * fps
        counted = ~near
    return float((found[:, :n] == truth[:, :n]).all(axis=0)[counted].mean())
