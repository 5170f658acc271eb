"""Conversations of two or three people built from real single-person clips, with known turns.

The development clips (../shared/real_clips) are not part of the project: a
script that uses them calls `clips_available()` and prints a "skipped" line
when they are missing. A conversation is a list of turns (person, start, end
in seconds of that person's own clip): the speaker's video plays the frames
that go with their audio, each listener's video keeps looping through its own
clip with its sound muted, so the listeners' mouths move too, out of time with
the voice, the hard case for a mouth cue.

Two clips hold speech. A third person (`THIRD`) is the first clip's footage
mirrored with its voice pitched down five semitones: to the GE2E voice print
as far from the first voice as the second is (cosine 0.59 and 0.54 on these
clips), with a mouth that moves with its own voice. It is a stand-in for a
third real speaker, which the clips lack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import librosa
import numpy as np

from minitalk import io
from minitalk.prepare import audio as au
from minitalk.prepare import data, diarize

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "real_clips"
SPEECH_CLIPS = ("face_a.mp4", "face_b.mp4")  # the two clips with speech


@dataclass(frozen=True)
class Person:
    """A person of a built conversation: a clip's footage (mirrored or not) and its voice, pitched
    by `semitones` (librosa's phase-vocoder shift: the same length, another voice)."""

    clip: str
    mirrored: bool = False
    semitones: float = 0.0


TWO = (Person(SPEECH_CLIPS[0]), Person(SPEECH_CLIPS[1]))
THIRD = Person(SPEECH_CLIPS[0], mirrored=True, semitones=-5.0)
THREE = (*TWO, THIRD)

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
# three people (`THREE`); the third speaks parts of the first clip in its own voice
CONVERSATIONS_3 = {
    "three_turns": ([(0, 0.0, 2.5), (1, 0.0, 2.4), (2, 2.5, 5.0)], 0.0),
    "six_turns_gaps": (
        [(0, 0.0, 1.6), (1, 0.0, 1.6), (2, 1.6, 3.3), (0, 3.3, 5.0), (2, 0.0, 1.6), (1, 1.6, 3.2)],
        0.4,
    ),
    "quick_turns": (
        [(2, 0.0, 1.2), (0, 1.2, 2.4), (1, 0.0, 1.2), (2, 2.4, 3.6), (1, 1.2, 2.4), (0, 3.6, 4.8)],
        0.25,
    ),
    "third_speaks_first": ([(2, 0.0, 2.5), (0, 2.5, 5.0), (1, 0.0, 2.4), (2, 2.5, 5.0)], 0.3),
    "one_never_speaks": ([(0, 0.0, 2.5), (1, 0.0, 2.4), (0, 2.5, 5.0), (1, 2.4, 4.85)], 0.3),
}


def clips_available(clips: Path = CLIPS, names=SPEECH_CLIPS) -> bool:
    return all((clips / n).is_file() for n in names)


def read_clips(clips: Path, people=TWO) -> tuple[list, list, float]:
    """Every person's frames and 16 kHz audio, and their common frame rate."""
    read = {name: io.read_video(clips / name) for name in {p.clip for p in people}}
    rates = sorted({fps for _, fps in read.values()})
    if rates[-1] - rates[0] > 1e-3:
        raise ValueError(f"clips at {rates} fps: give clips of one frame rate")
    videos = [read[p.clip][0][:, :, ::-1] if p.mirrored else read[p.clip][0] for p in people]
    audios = []
    for p in people:
        audio = io.read_audio(clips / p.clip)
        if p.semitones:
            audio = librosa.effects.pitch_shift(audio, sr=io.SAMPLE_RATE, n_steps=p.semitones)
        audios.append(audio.astype(np.float32))
    return videos, audios, rates[0]


def build(turns, gap_s: float, out: Path, clips: Path = CLIPS, people=TWO, repeat: int = 1,
          row_height: int | None = None):  # fmt: skip
    """Write out/left.mp4, out/right.mp4 and out/audio.wav (two people), or with `row_height` one
    video out/row.mp4 of every person side by side at that height, with the audio; return the
    true speaking (P, T) at the clips' frame rate. `repeat` plays the turns that many times (a
    longer conversation). A second person cut from one clip starts its listening loop halfway
    through it, so the two never move alike."""
    videos, audios, fps = read_clips(clips, people)
    rate, n_people = io.SAMPLE_RATE, len(people)
    gap = int(round(gap_s * fps))
    frames: list[list[np.ndarray]] = [[] for _ in people]
    audio, speaking = [], [[] for _ in people]
    # where each listener's loop has got to: a clip used by a second person starts halfway through
    loop = [len(videos[p]) // 2 * [q.clip for q in people[:p]].count(people[p].clip) for p in range(n_people)]
    for _ in range(repeat):
        for person, start, end in turns:
            a, b = int(round(start * fps)), min(int(round(end * fps)), len(videos[person]))
            n = b - a
            frames[person] += list(videos[person][a:b])
            audio.append(audios[person][int(a / fps * rate) : int(a / fps * rate) + int(n / fps * rate)])
            audio[-1] = np.pad(audio[-1], (0, int(n / fps * rate) - len(audio[-1])))
            for other in range(n_people):
                if other != person:
                    frames[other] += [videos[other][(loop[other] + i) % len(videos[other])] for i in range(n)]
                    loop[other] += n
                speaking[other] += [other == person] * n
            for p in range(n_people):  # a pause: everyone listens
                frames[p] += [videos[p][(loop[p] + i) % len(videos[p])] for i in range(gap)]
                loop[p] += gap
                speaking[p] += [False] * gap
            audio.append(np.zeros(int(gap / fps * rate), np.float32))
    sound = np.concatenate(audio).astype(np.float32)
    if row_height is None:
        io.write_video(out / "left.mp4", np.stack(frames[0]), fps)
        io.write_video(out / "right.mp4", np.stack(frames[1]), fps)
        io.write_audio(out / "audio.wav", sound)
    else:

        def scaled(f):
            return cv2.resize(
                f, (row_height * f.shape[1] // f.shape[0], row_height), interpolation=cv2.INTER_AREA
            )

        row = [np.concatenate([scaled(f[t]) for f in frames], axis=1) for t in range(len(frames[0]))]
        io.write_video(out / "row.mp4", np.stack(row), fps, audio=sound)
    return np.array(speaking, bool)


def side_by_side(out: Path, switch_s: float, clips: Path = CLIPS, names=SPEECH_CLIPS):
    """Both clips played once, in parallel (left: the first, right: the second), the audio the
    first clip's before `switch_s` and the second's after: each frame is a moment of footage
    seen once, so frames held out from training have no copy in it. Writes out/left.mp4,
    out/right.mp4, out/audio.wav; returns the true speaking (2, T)."""
    videos, audios, fps = read_clips(clips, [Person(name) for name in names])
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


def score_who_speaks(folder: Path, truth: np.ndarray) -> dict:
    """Frames right with each voice print (`diarize.VOICE_PRINTS`) on a prepared folder's tracks,
    plainly and with a 0.25 s collar, against the true speaking (P, T)."""
    tracks, wav = data.load_tracks(folder), io.read_audio(folder / "audio.wav")
    fps, n = float(tracks["fps"]), tracks["speaking"].shape[1]
    out = {}
    for voice_print in diarize.VOICE_PRINTS:
        start = time.perf_counter()
        found = diarize.diarize(wav, au.log_mel(wav), n, fps, mouth=tracks["mouth"], voice_print=voice_print)
        out[voice_print] = {
            "acc": round(frame_accuracy(found.speaking, truth), 4),
            "acc_collar": round(frame_accuracy(found.speaking, truth, fps, 0.25), 4),
            "method": found.method,
            "voices": int(found.voice_cluster.max()) + 1,
            "seconds": round(time.perf_counter() - start, 2),
        }
    return out
