"""Two synthetic voices reading scripted dialogues (espeak-ng, at generation time only).

The generated audio is committed to `data_samples/`, so nothing at run time
needs espeak-ng. Each utterance is synthesised on its own, trimmed of its
leading and trailing silence and placed on a shared timeline, which gives the
exact ground truth of who speaks when.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

# espeak-ng voice, pitch (0-99) and words per minute for person 0 (left) and 1 (right):
# a bright American voice and a low British one, far apart in pitch and timbre.
VOICES = (("en-us+f3", 70, 150), ("en-gb-x-rp+f2", 12, 140))

# (person, text): the sample the NeRF and the pose model learn from ...
TRAIN_SCRIPT = (
    (
        0,
        "Thank you for joining me today. I have wanted to ask you about your first "
        "big project for a long time.",
    ),
    (
        1,
        "Well, it started almost by accident. We had a small team, a borrowed room, "
        "and a deadline nobody believed in.",
    ),
    (0, "And you met it anyway? What kept everybody going?"),
    (1, "Mostly stubbornness, and good coffee. Every evening we wrote down one thing that worked."),
    (0, "That is a lovely habit. Do you still keep a list like that?"),
    (1, "I do. The notebook is on my desk right now, and every line reminds me why we started."),
)

# ... and a different conversation, in the same two voices, that drives rendering.
NEW_SCRIPT = (
    (1, "Tell me, what surprised you most when you first watched yourself on video?"),
    (
        0,
        "Honestly, how much I move my head. I thought I sat perfectly still, but I nod at almost everything.",
    ),
    (1, "Everybody does. Listeners nod to say, keep going, I am with you."),
    (0, "Then I must be a very encouraging listener. Shall we try that again tomorrow?"),
)


@dataclass(frozen=True)
class Utterance:
    person: int
    text: str
    start: float  # seconds on the dialogue timeline
    end: float
    audio: np.ndarray  # mono float32 at the dialogue's sample rate


def speak(text: str, person: int, sample_rate: int) -> np.ndarray:
    """One utterance in person `person`'s voice, trimmed, mono float32."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is needed to regenerate the sample (apt-get install espeak-ng)")
    voice, pitch, speed = VOICES[person]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "u.wav"
        subprocess.run(
            [exe, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        audio, sr = sf.read(str(wav), dtype="float32")
    audio = librosa.resample(audio, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    audio, _ = librosa.effects.trim(audio, top_db=40)
    return (0.5 * audio / np.max(np.abs(audio))).astype(np.float32)


def synthesize_dialogue(
    script, sample_rate: int, rng: np.random.Generator, lead_in: float = 1.0, tail: float = 1.5
) -> tuple[np.ndarray, list[Utterance]]:
    """Speak `script` turn by turn with short random pauses; return the mix and its utterances."""
    t = lead_in
    utterances = []
    for person, text in script:
        audio = speak(text, person, sample_rate)
        end = t + len(audio) / sample_rate
        utterances.append(Utterance(person, text, t, end, audio))
        t = end + rng.uniform(0.5, 0.9)
    total = int(np.ceil((t - 0.5 + tail) * sample_rate))
    mix = np.zeros(total, np.float32)
    for u in utterances:
        i = int(round(u.start * sample_rate))
        mix[i : i + len(u.audio)] += u.audio
    return mix, utterances


def person_tracks(utterances: list[Utterance], n_samples: int, sample_rate: int) -> np.ndarray:
    """Each person's own voice on the timeline (2, n_samples): what their mouth follows."""
    tracks = np.zeros((2, n_samples), np.float32)
    for u in utterances:
        i = int(round(u.start * sample_rate))
        tracks[u.person, i : i + len(u.audio)] += u.audio[: n_samples - i]
    return tracks


def script_turns(audio: np.ndarray, script, sample_rate: int, min_gap_s: float = 0.45) -> np.ndarray:
    """The exact turns (n, 3) as (person, start, end seconds) of a dialogue `synthesize_dialogue`
    made from `script`, read back from its audio: each utterance is trimmed speech and the gaps
    between them are digital silence (exact zeros), so the runs of sound are the utterances, in
    the script's order. Raises if the runs do not match the script's utterances one to one."""
    sound = np.flatnonzero(np.abs(audio) > 0)
    if len(sound) == 0:
        raise ValueError("the audio is silent")
    breaks = np.flatnonzero(np.diff(sound) > min_gap_s * sample_rate)
    starts = np.concatenate([[sound[0]], sound[breaks + 1]])
    ends = np.concatenate([sound[breaks], [sound[-1]]]) + 1
    if len(starts) != len(script):
        raise ValueError(f"{len(starts)} runs of sound for {len(script)} utterances")
    people = [person for person, _ in script]
    return np.array(
        [(p, a / sample_rate, b / sample_rate) for p, a, b in zip(people, starts, ends, strict=True)]
    )
