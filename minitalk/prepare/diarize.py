"""Who speaks when: voice activity split between the two people (DialogueNeRF section III-B).

DialogueNeRF labels its roles with pyannote, a hub-downloaded model. Ours runs
offline and uses the fact that we also see the faces:

1. voice activity (silero-vad) gives the voiced stretches; long ones are cut
   into pieces of about a second, so a piece rarely holds two voices;
2. each piece gets a voice signature, its median pitch (YIN) and mean MFCC,
   and the pieces are clustered into two voices (2-means);
3. each cluster is given to the person whose mouth moves with the sound
   during it (the correlation of their mouth opening with the loudness,
   summed over the cluster's pieces; a listener's mouth may move too, but
   not in time with the other's voice). Where the voices do not separate
   (a silhouette score below `min_separation`: one voice, or two alike),
   each piece goes to the mouth that follows it;
4. a person's pieces separated by a pause shorter than `max_pause_s` are
   joined, since a speaker holds the turn through their own pauses.

The result is `speaking` bool (2, T) on the video's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitalk.prepare.audio import MEL_HOP, voice_activity, zcr_rms


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


def pitch_track(audio: np.ndarray, sample_rate: int = 16_000, block_s: float = 30.0) -> np.ndarray:
    """YIN pitch (Hz) every `MEL_HOP` samples, one frame centred on each hop as `librosa.yin`
    centres them, computed `block_s` at a time with a frame's margin either side, so memory stays
    flat for audio of any length (librosa frames the whole signal at once)."""
    import librosa

    frame, hop = 1024, MEL_HOP
    n_hops = 1 + len(audio) // hop
    block = int(block_s * sample_rate) // hop  # hops per block
    margin = -(-frame // hop)  # hops of context either side, rounded up
    padded = np.pad(audio, (frame // 2, frame // 2))  # what center=True pads, as zeros
    out = []
    for a in range(0, n_hops, block):
        b = min(a + block, n_hops)
        lo, hi = max(a - margin, 0), min(b + margin, n_hops)
        piece = padded[lo * hop : (hi - 1) * hop + frame]
        f0 = librosa.yin(piece, fmin=60, fmax=400, sr=sample_rate, frame_length=frame, hop_length=hop,
                         center=False)  # fmt: skip
        out.append(f0[a - lo : b - lo])
    return np.concatenate(out)


def voice_features(audio: np.ndarray, pieces, mel: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(n_pieces, 13) [log median pitch, MFCC 1..12 means] per piece, in their own units, so the
    features of one recording can be compared with another's (a person's voice print)."""
    from scipy.fft import dct

    f0 = pitch_track(audio, sample_rate)
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
    return np.asarray(feats)


def voice_signatures(audio: np.ndarray, pieces, mel: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(n_pieces, 13) `voice_features` standardised over the recording's pieces, for clustering."""
    feats = voice_features(audio, pieces, mel, sample_rate)
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


def mouth_sync(
    mouth: np.ndarray, loudness: np.ndarray, pieces, fps: float, context_s: float = 1.0
) -> np.ndarray:
    """(n_pieces, 2): how well each person's mouth opening follows the audio's loudness in each piece.

    The correlation between the mouth opening and the RMS envelope over the
    piece's frames and `context_s` either side (over a one-second piece alone
    the correlation is noisy); a still or untracked mouth scores 0. It is the
    speaker's mouth that moves with the sound, whatever the other mouth does.
    """
    out = np.zeros((len(pieces), 2))
    for k, (a, b) in enumerate(pieces):
        i, j = int(max(a - context_s, 0) * fps), int(np.ceil((b + context_s) * fps))
        env = loudness[i:j]
        for p in (0, 1):
            m = mouth[p, i:j]
            if len(m) > 2 and np.isfinite(m).all() and m.std() > 1e-6 and env.std() > 1e-9:
                out[k, p] = np.corrcoef(m, env)[0, 1]
    return out


def separation(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a two-cluster labelling (1: tight, far apart clusters; 0: no structure)."""
    if len(set(labels.tolist())) < 2:
        return 0.0
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    own = np.array(
        [dist[i, labels == labels[i]].sum() / max((labels == labels[i]).sum() - 1, 1) for i in range(len(x))]
    )
    other = np.array([dist[i, labels != labels[i]].mean() for i in range(len(x))])
    return float(np.mean((other - own) / np.maximum(own, other)))


def diarize(
    audio: np.ndarray,
    mel: np.ndarray,
    n_frames: int,
    fps: float,
    mouth: np.ndarray | None = None,
    sample_rate: int = 16_000,
    max_pause_s: float = 0.6,
    min_separation: float = 0.15,
) -> Diarization:
    """Who speaks when, from 16 kHz audio, its log-mel and (optionally) both mouth openings (2, T)."""
    pieces = split_pieces(voice_activity(audio, sample_rate))
    if not pieces:
        empty = np.zeros(0, np.int64)
        return Diarization(np.zeros((2, n_frames), bool), [], empty, empty, empty, 1.0, "none")
    signatures = voice_signatures(audio, pieces, mel, sample_rate)
    cluster = two_means(signatures)
    separated = separation(signatures, cluster) >= min_separation
    if mouth is None:
        mouth_person = np.full(len(pieces), -1)
        person = cluster if cluster[0] == 0 else 1 - cluster  # person 0: whoever speaks first
        agreement, method = float("nan"), "voice"
    else:
        _, rms = zcr_rms(audio, sample_rate, fps, n_frames)
        sync = mouth_sync(np.asarray(mouth, dtype=np.float64), rms, pieces, fps)
        margin = sync[:, 0] - sync[:, 1]
        mouth_person = np.where(np.abs(margin) > 0.1, (margin < 0).astype(np.int64), -1)  # -1: undecided
        if separated:  # name each voice after the mouth that follows it
            person = cluster if margin[cluster == 0].sum() >= margin[cluster == 1].sum() else 1 - cluster
            method = "voice+mouth"
        else:  # one voice, or voices too alike: each piece goes to the mouth that follows it
            person = _fill_undecided(mouth_person)
            method = "mouth"
        decided = mouth_person >= 0
        agreement = (
            float(np.mean(person[decided] == mouth_person[decided])) if decided.any() else float("nan")
        )
    speaking = speaking_from_pieces(pieces, person, n_frames, fps, max_pause_s)
    return Diarization(speaking, pieces, np.asarray(person), cluster, mouth_person, agreement, method)


def speaking_from_pieces(pieces, person, n_frames: int, fps: float, max_pause_s: float = 0.6) -> np.ndarray:
    """(2, T) bool from voiced pieces (seconds) and the person each went to: a speaker holds the
    turn through their own pauses shorter than `max_pause_s` when the other does not speak."""
    speaking = np.zeros((2, n_frames), bool)
    times = (np.arange(n_frames) + 0.5) / fps
    spans: list[list[list[float]]] = [[], []]
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
    return speaking


def _no_other_between(t0: float, t1: float, pieces, person, p: int) -> bool:
    """True when no piece of the other person lies between t0 and t1."""
    return not any(q != p and a < t1 and b > t0 for (a, b), q in zip(pieces, person, strict=True))


def _fill_undecided(labels: np.ndarray) -> np.ndarray:
    """Replace -1 by the nearest decided label (0 where nothing is decided)."""
    decided = np.flatnonzero(labels >= 0)
    if len(decided) == 0:
        return np.zeros_like(labels)
    nearest = decided[np.argmin(np.abs(np.arange(len(labels))[:, None] - decided[None]), axis=1)]
    return labels[nearest]
