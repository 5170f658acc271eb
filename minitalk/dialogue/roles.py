"""Who speaks when in new speech, and which of the avatar's people owns each voice.

The same voice activity and clustering as preparation (`minitalk.prepare.diarize`): voiced
pieces of about a second, each described by its median pitch and mean MFCC, clustered into as
many voices as the call has people, or fewer (`count_voices`). New audio has no faces to say
whose voice is whose, so each voice goes to the person whose voice print is nearest (the mean
features of that person's pieces in the training clip, kept in the avatar file, compared in
units of the training clip's spread of features). Where the pieces do not cluster, or two
clusters are nearest one print (one voice, voices alike, a few pieces), each piece goes to its
nearest print. One voice only: the others listen throughout; silence: everyone listens. A
voice far from every print (someone not in the avatar, or more voices than people) still goes
to the nearest one, with a warning.

`--roles` overrides all of it: `0-4.2:0,4.2-9:1` (seconds: person), or a file of such entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minitalk.prepare.audio import voice_activity
from minitalk.prepare.diarize import count_voices, speaking_from_pieces, split_pieces, voice_features

# a piece this far from both prints (root mean square over the 13 features, in spreads of the
# training clip) is taken for nobody's voice: the sample's own voices reach 1.2 on new speech
FOREIGN_VOICE = 1.4


@dataclass
class Roles:
    speaking: np.ndarray  # (P, T) bool
    method: str  # "voices", "one voice", "silence" or "given"
    voice_distance: list[float] = field(default_factory=list)  # per voice, to the print it went to
    warnings: list[str] = field(default_factory=list)

    def turns(self, fps: float) -> list[dict]:
        """Stretches of one speaker (or nobody, -1) as {"start", "end" (seconds), "speaker"}."""
        speaker = np.where(self.speaking.any(0), self.speaking.argmax(0), -1)
        cuts = np.flatnonzero(np.diff(speaker)) + 1
        bounds = np.concatenate([[0], cuts, [len(speaker)]])
        return [
            {"start": round(a / fps, 3), "end": round(b / fps, 3), "speaker": int(speaker[a])}
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]


def assign_roles(
    audio: np.ndarray,
    log_mel: np.ndarray,
    n_frames: int,
    fps: float,
    prints: np.ndarray,
    spread: np.ndarray,
) -> Roles:
    """Who speaks when (P, T) in new 16 kHz audio: each voice given to the nearest of the P voice
    prints (P, 13) where the voices' nearest prints all differ, else each piece to its nearest."""
    pieces = split_pieces(voice_activity(audio))
    if not pieces:
        return Roles(np.zeros((len(prints), n_frames), bool), "silence")
    feats = voice_features(audio, pieces, log_mel) / spread  # (n, 13) in the training clip's units
    known = np.isfinite(prints).all(axis=1)
    scaled = prints / spread
    standardised = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    to_print = np.linalg.norm(feats[:, None] - scaled[None], axis=-1)  # (n, P): each piece to each print
    to_print[:, ~known] = np.inf
    voice = count_voices(standardised, int(known.sum()), "pitch+mfcc")  # (n,) 0 .. V - 1
    distance = np.stack([to_print[voice == v].mean(0) for v in range(voice.max() + 1)])  # (V, P)
    nearest = distance.argmin(axis=1)  # (V,): each voice's nearest print
    if len(nearest) > 1 and len(set(nearest.tolist())) == len(nearest):  # V voices, V people
        person = nearest[voice]
    else:  # no clusters to trust (one voice, voices alike, few pieces, two near one print): piece by piece
        person = np.argmin(to_print, axis=1)
    voices = sorted(set(person.tolist()))
    kept = [float(to_print[person == p, p].mean()) / np.sqrt(feats.shape[1]) for p in voices]
    roles = Roles(
        speaking_from_pieces(pieces, person, n_frames, fps, n_people=len(prints)),
        "voices" if len(voices) >= 2 else "one voice",
        [round(d, 3) for d in kept],
    )
    nearest_distance = to_print[np.arange(len(pieces)), person] / np.sqrt(feats.shape[1])
    for (a, b), p, d in zip(pieces, person, nearest_distance, strict=True):
        if d > FOREIGN_VOICE:
            roles.warnings.append(
                f"{a:.1f}-{b:.1f} s: a voice unlike every person's (distance {d:.1f}), given to person {p}"
            )
    return roles


def parse_roles(spec: str, n_frames: int, fps: float, n_people: int = 2) -> Roles:
    """Roles from `0-4.2:0,4.2-9:1` (start-end seconds: person), or from a file holding such entries
    (commas or new lines); frames outside every entry have everyone listening."""
    path = Path(spec)
    text = path.read_text() if path.is_file() else spec
    speaking = np.zeros((n_people, n_frames), bool)
    times = (np.arange(n_frames) + 0.5) / fps
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            span, person = entry.split(":")
            start, end = (float(x) for x in span.split("-"))
            person = int(person)
        except ValueError:
            raise ValueError(
                f"--roles: cannot read {entry!r}; write START-END:PERSON, e.g. 0-4.2:0"
            ) from None
        if not 0 <= person < n_people or not end > start >= 0:
            raise ValueError(
                f"--roles: {entry!r}: the person must be 0 to {n_people - 1} and 0 <= START < END"
            )
        speaking[person] |= (times >= start) & (times < end)
    return Roles(speaking, "given")
