"""Who speaks when: voice activity split between the two people (DialogueNeRF section III-B).

DialogueNeRF labels its roles with pyannote, a hub-downloaded model. Ours runs
offline and uses the fact that we also see the faces:

1. voice activity (silero-vad) gives the voiced stretches; long ones are cut
   into pieces of about a second, so a piece rarely holds two voices;
2. each piece gets a voice signature, its median pitch (YIN) and mean MFCC,
   and the pieces are clustered into two voices (2-means);
3. each cluster is given to the person whose mouth moves during it (the
   spread of their mouth opening over the piece, against their own usual
   spread). Where the voices do not separate (the clusters disagree with the
   mouths on most pieces), each piece goes to the moving mouth directly;
4. a person's pieces separated by a pause shorter than `max_pause_s` are
   joined, since a speaker holds the turn through their own pauses.

The result is `speaking` bool (2, T) on the video's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitalk.audio import MEL_HOP, voice_activity


@dataclass
class Diarization:
    speaking: np.ndarray  # (2, T) bool
    pieces: list[tuple[float, float]]  # voiced pieces, seconds
    person: np.ndarray  # (n_pieces,) the person each piece went to
    voice_cluster: np.ndarray  # (n_pieces,) 0 / 1 from the voice signature alone
    mouth_person: np.ndarray  # (n_pieces,) whose mouth moved more, -1 without mouth tracks
    agreement: float  # fraction of pieces where the voice clusters and the mouths agree
    method: str  # "voice+mouth", "mouth" or "voice"


def split_pieces(segments: list[tuple[float, float]], max_len_s: float = 1.0) -> list[tuple[float, float]]:
    """Cut each (start, end) into equal pieces no longer than `max_len_s`."""
    out = []
    for start, end in segments:
        n = max(1, int(np.ceil((end - start) / max_len_s)))
        edges = np.linspace(start, end, n + 1)
        out += [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return out


def voice_signatures(audio: np.ndarray, pieces, mel: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(n_pieces, 13) standardised [log median pitch, MFCC 1..12 means] per piece."""
    import librosa
    from scipy.fft import dct

    f0 = librosa.yin(audio, fmin=60, fmax=400, sr=sample_rate, frame_length=1024, hop_length=MEL_HOP)
    n = min(len(f0), len(mel))  # one pitch and one mel step per hop
    f0, mel = f0[:n], mel[:n]
    loud = mel.max(axis=1) > np.percentile(mel.max(axis=1), 30)  # steps with voice energy
    mfcc = dct(mel, type=2, norm="ortho", axis=1)[:, 1:13]
    feats = []
    steps = sample_rate / MEL_HOP
    for a, b in pieces:
        i, j = int(a * steps), max(int(b * steps), int(a * steps) + 1)
        sel = loud[i:j] if loud[i:j].any() else np.ones(len(loud[i:j]), bool)
        feats.append([np.log(np.median(f0[i:j][sel])), *mfcc[i:j][sel].mean(0)])
    feats = np.asarray(feats)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-8)


def two_means(x: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Labels 0 / 1 from k-means with k = 2, started at the two most distant points (deterministic)."""
    if len(x) < 2:
        return np.zeros(len(x), np.int64)
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    centres = x[[min(i, j), max(i, j)]].copy()
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        labels = np.argmin(np.linalg.norm(x[:, None] - centres[None], axis=-1), axis=1)
        new = np.stack([x[labels == k].mean(0) if (labels == k).any() else centres[k] for k in (0, 1)])
        if np.allclose(new, centres):
            break
        centres = new
    return labels


def mouth_motion(mouth: np.ndarray, pieces, fps: float) -> np.ndarray:
    """(n_pieces, 2) how much each person's mouth moves in each piece, in units of their usual spread."""
    mouth = np.asarray(mouth, dtype=np.float64)
    scale = np.nanstd(mouth, axis=1) + 1e-8
    out = np.zeros((len(pieces), 2))
    for k, (a, b) in enumerate(pieces):
        i, j = int(a * fps), max(int(np.ceil(b * fps)), int(a * fps) + 2)
        out[k] = np.nanstd(mouth[:, i:j], axis=1) / scale
    return out


def diarize(
    audio: np.ndarray,
    mel: np.ndarray,
    n_frames: int,
    fps: float,
    mouth: np.ndarray | None = None,
    sample_rate: int = 16_000,
    max_pause_s: float = 0.6,
) -> Diarization:
    """Who speaks when, from 16 kHz audio, its log-mel and (optionally) both mouth openings (2, T)."""
    pieces = split_pieces(voice_activity(audio, sample_rate))
    speaking = np.zeros((2, n_frames), bool)
    if not pieces:
        empty = np.zeros(0, np.int64)
        return Diarization(speaking, [], empty, empty, empty, 1.0, "none")
    cluster = two_means(voice_signatures(audio, pieces, mel, sample_rate))
    if mouth is None:
        mouth_person = np.full(len(pieces), -1)
        person = cluster if cluster[0] == 0 else 1 - cluster  # person 0: whoever speaks first
        agreement, method = float("nan"), "voice"
    else:
        motion = mouth_motion(mouth, pieces, fps)
        mouth_person = np.argmax(motion, axis=1)
        agree_same = float(np.mean(cluster == mouth_person))
        if agree_same >= 0.5:
            person, agreement = cluster, agree_same
        else:
            person, agreement = 1 - cluster, 1 - agree_same
        method = "voice+mouth"
        if agreement < 0.6:  # the voices do not separate: trust the mouths piece by piece
            person, method = mouth_person, "mouth"
    # a speaker holds the turn through their own short pauses
    times = (np.arange(n_frames) + 0.5) / fps
    spans: list[list[float]] = [[], []]
    for (a, b), p in zip(pieces, person, strict=True):
        if (
            spans[p]
            and a - spans[p][-1][1] < max_pause_s
            and _no_other_between(spans[p][-1][1], a, pieces, person, p)
        ):
            spans[p][-1][1] = b
        else:
            spans[p].append([a, b])
    for p in (0, 1):
        for a, b in spans[p]:
            speaking[p] |= (times >= a) & (times < b)
    return Diarization(speaking, pieces, np.asarray(person), cluster, mouth_person, agreement, method)


def _no_other_between(t0: float, t1: float, pieces, person, p: int) -> bool:
    """True when no piece of the other person lies between t0 and t1."""
    return not any(q != p and a < t1 and b > t0 for (a, b), q in zip(pieces, person, strict=True))
