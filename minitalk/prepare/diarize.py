"""Who speaks when: voice activity split between the two people (DialogueNeRF section III-B).

DialogueNeRF labels its roles with pyannote, a hub-downloaded model. Ours runs
offline and uses the fact that we also see the faces:

1. voice activity (silero-vad) gives the voiced stretches, cut into short
   pieces (`PIECE_S`), so a piece rarely holds two voices;
2. each piece gets a voice print: a learned speaker embedding (GE2E,
   `voices.py`) where its weights are installed, else its median pitch (YIN)
   and mean MFCC, which tell apart voices of unlike pitch only; the pieces
   are clustered into two voices (2-means);
3. each voice goes to the person whose mouth moves with it over all of its
   frames (`voice_mouth_match`; a listener's mouth may move too, but not in
   time with the other's voice). Where the clusters are not two voices
   (`two_voices`), each piece goes to the mouth that follows it;
4. a speaker holds the turn through their own pauses under `max_pause_s`.

The result is `speaking` bool (2, T) on the video's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from scipy.fft import dct

from minitalk.prepare import voices
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
    voice_print: str  # "ge2e" (learned embedding) or "pitch+mfcc" (the fallback)


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


def compile_librosa() -> None:
    """Compile, in this one process, the librosa kernels that prepare and render call (YIN and the
    mel filter bank), so that their numba cache on disk is written once. librosa caches its
    gufuncs (`cache=True`); two processes compiling one gufunc at the same moment can leave an index
    and code that do not match, after which every call segfaults (numba issue #10128). `make
    install` runs this once, before any notebook or command can run two at a time."""
    noise = 0.1 * np.random.default_rng(0).standard_normal(16_000).astype(np.float32)  # 1 s at 16 kHz
    pitch_track(noise)
    voices.encoder_mel(noise)  # the mel filter bank, as audio.log_mel builds it too


def voice_features(audio: np.ndarray, pieces, mel: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(n_pieces, 13) [log median pitch, MFCC 1..12 means] per piece, in their own units, so the
    features of one recording can be compared with another's (a person's voice print)."""
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


def voice_prints(audio: np.ndarray, log_mel: np.ndarray, speaking: np.ndarray, fps: float):
    """Each person's voice print (2, 13) and the clip's spread of voice features (13,), from the
    training clip's 16 kHz audio, its log-mel and who speaks when (2, T). A person who never
    speaks has a print of NaN."""
    pieces = split_pieces(voice_activity(audio))
    prints = np.full((2, 13), np.nan)
    if not pieces:
        return prints, np.ones(13)
    feats = voice_features(audio, pieces, log_mel)
    owner = []
    for a, b in pieces:  # the person who speaks over most of the piece's frames, if anyone does
        frames = slice(int(a * fps), max(int(b * fps), int(a * fps) + 1))
        share = speaking[:, frames].mean(axis=1)
        owner.append(int(np.argmax(share)) if share.max() > 0.5 else -1)
    owner = np.asarray(owner)
    for p in (0, 1):
        if (owner == p).any():
            prints[p] = feats[owner == p].mean(0)
    return prints, feats.std(0) + 1e-8


def voice_signatures(audio: np.ndarray, pieces, mel: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(n_pieces, 13) `voice_features` standardised over the recording's pieces, for clustering."""
    feats = voice_features(audio, pieces, mel, sample_rate)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-8)


VOICE_PRINTS = ("ge2e", "pitch+mfcc")
# pitch and MFCC: two clusters are two voices when their silhouette reaches this
MIN_SEPARATION = 0.15
# embeddings: two clusters are two voices when their mean directions are less alike than this
# (cosine); one voice's two halves stay near 0.85-0.9, two people's voices near 0.65-0.72. The
# silhouette does not tell: pieces heard through overlapping windows cluster in time
MAX_VOICE_COSINE = 0.8
# voiced pieces are cut this short (s): a quarter second with the embedding, which hears 0.75 s
# of context about each (a turn changes within half a second of where it does); a second with
# pitch and MFCC, which need the whole second
PIECE_S = {"ge2e": 0.25, "pitch+mfcc": 1.0}


def choose_voice_print(voice_print: str = "auto") -> str:
    """The voice print to use: for "auto", the learned embedding where its weights are installed,
    else pitch and MFCC."""
    if voice_print == "auto":
        return "ge2e" if voices.available() else "pitch+mfcc"
    if voice_print not in VOICE_PRINTS:
        raise ValueError(f"voice_print: expected auto, {' or '.join(VOICE_PRINTS)}; got {voice_print!r}")
    if voice_print == "ge2e" and not voices.available():
        raise FileNotFoundError("voice_print ge2e: " + voices.MISSING)
    return voice_print


def voiced_pieces(audio: np.ndarray, voice_print: str, sample_rate: int = 16_000):
    """The voiced pieces (start, end) in seconds, `PIECE_S[voice_print]` long at most, and the
    voiced stretch each lies in (the embedding's context window stays inside it)."""
    pieces, bounds = [], []
    for segment in voice_activity(audio, sample_rate):
        cut = split_pieces([segment], PIECE_S[voice_print])
        pieces += cut
        bounds += [segment] * len(cut)
    return pieces, bounds


def two_voices(prints: np.ndarray, labels: np.ndarray, voice_print: str) -> bool:
    """Whether a two-cluster labelling of the pieces' prints is two voices rather than one split."""
    if len(set(labels.tolist())) < 2:
        return False
    if voice_print == "ge2e":
        centres = np.stack([prints[labels == c].mean(0) for c in (0, 1)])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        return float(centres[0] @ centres[1]) < MAX_VOICE_COSINE
    return separation(prints, labels) >= MIN_SEPARATION


def two_means(x: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Labels 0 / 1 from k-means with k = 2 (deterministic), started at two far-apart points: the
    point farthest from the mean and the point farthest from that one (O(n) memory: an hour's
    pieces are tens of thousands, their pairwise distances gigabytes)."""
    if len(x) < 2:
        return np.zeros(len(x), np.int64)
    i = int(np.argmax(np.linalg.norm(x - x.mean(0), axis=1)))
    j = int(np.argmax(np.linalg.norm(x - x[i], axis=1)))
    centres = x[[min(i, j), max(i, j)]].copy()
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        labels = np.argmin(np.linalg.norm(x[:, None] - centres[None], axis=-1), axis=1)
        new = np.stack([x[labels == c].mean(0) if (labels == c).any() else centres[c] for c in (0, 1)])
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
    for piece, (a, b) in enumerate(pieces):
        i, j = int(max(a - context_s, 0) * fps), int(np.ceil((b + context_s) * fps))
        env = loudness[i:j]
        for p in (0, 1):
            m = mouth[p, i:j]
            if len(m) > 2 and np.isfinite(m).all() and m.std() > 1e-6 and env.std() > 1e-9:
                out[piece, p] = np.corrcoef(m, env)[0, 1]
    return out


def separation(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a two-cluster labelling (1: tight, far apart clusters; 0: no structure)."""
    if len(set(labels.tolist())) < 2:
        return 0.0
    own, other = np.zeros(len(x)), np.zeros(len(x))
    for a in range(0, len(x), 256):  # a block of rows of the distance matrix at a time
        dist = np.linalg.norm(x[a : a + 256, None] - x[None], axis=-1)  # (block, n)
        same = labels[a : a + 256, None] == labels[None]
        own[a : a + 256] = (dist * same).sum(1) / np.maximum(same.sum(1) - 1, 1)
        other[a : a + 256] = (dist * ~same).sum(1) / (~same).sum(1)
    return float(np.mean((other - own) / np.maximum(own, other)))


def diarize(
    audio: np.ndarray,
    mel: np.ndarray,
    n_frames: int,
    fps: float,
    mouth: np.ndarray | None = None,
    sample_rate: int = 16_000,
    max_pause_s: float = 1.0,
    voice_print: str = "auto",
) -> Diarization:
    """Who speaks when, from 16 kHz audio, its log-mel and (optionally) both mouth openings (2, T).

    `voice_print`: "auto", "ge2e" or "pitch+mfcc" (see `choose_voice_print`)."""
    voice_print = choose_voice_print(voice_print)
    pieces, bounds = voiced_pieces(audio, voice_print, sample_rate)
    if not pieces:
        empty = np.zeros(0, np.int64)
        return Diarization(np.zeros((2, n_frames), bool), [], empty, empty, empty, 1.0, "none", voice_print)
    if voice_print == "ge2e":
        signatures = voices.embed_pieces(audio, pieces, bounds=bounds)
    else:
        signatures = voice_signatures(audio, pieces, mel, sample_rate)
    cluster = two_means(signatures)
    separated = two_voices(signatures, cluster, voice_print)
    if mouth is None:
        mouth_person = np.full(len(pieces), -1)
        person = cluster if cluster[0] == 0 else 1 - cluster  # person 0: whoever speaks first
        agreement, method = float("nan"), "voice"
    else:
        mouth = np.asarray(mouth, dtype=np.float64)
        _, rms = zcr_rms(audio, sample_rate, fps, n_frames)
        sync = mouth_sync(mouth, rms, pieces, fps)
        margin = sync[:, 0] - sync[:, 1]
        mouth_person = np.where(np.abs(margin) > 0.1, (margin < 0).astype(np.int64), -1)  # -1: undecided
        if separated:  # name each voice after the mouth that moves with it
            follows = voice_mouth_match(mouth, rms, pieces, cluster, fps)  # (voice, person)
            swap = follows[0, 1] + follows[1, 0] > follows[0, 0] + follows[1, 1]
            person = 1 - cluster if swap else cluster
            method = "voice+mouth"
        else:  # one voice, or voices too alike: each piece goes to the mouth that follows it
            person = _fill_undecided(mouth_person)
            method = "mouth"
        decided = mouth_person >= 0
        agreement = (
            float(np.mean(person[decided] == mouth_person[decided])) if decided.any() else float("nan")
        )
    speaking = speaking_from_pieces(pieces, person, n_frames, fps, max_pause_s)
    return Diarization(
        speaking, pieces, np.asarray(person), cluster, mouth_person, agreement, method, voice_print
    )


def voice_mouth_match(
    mouth: np.ndarray, loudness: np.ndarray, pieces, voice: np.ndarray, fps: float, max_lag: int = 2
) -> np.ndarray:
    """(2, 2) how well each person's mouth moves with each voice: over all of a voice's frames, the
    correlation of the mouth's opening (T,) with the loudness plus that of the mouth's speed
    |d opening / dt| with the log loudness, each the best over lags of up to `max_lag` frames
    either way (mouth and sound need not meet on a frame).

    Over all of a voice's frames at once, not piece by piece: a listener's mouth may move in time
    with a second of the other's speech by chance, rarely over all of it. Two cues, since each
    fails alone: how wide a mouth rests differs from face to face (the opening), and footage
    resampled from another frame rate repeats frames (the speed).
    """
    n = min(mouth.shape[1], len(loudness))
    cues = [
        (mouth[:, :n], loudness[:n]),
        (np.abs(np.diff(mouth[:, :n], axis=1, prepend=mouth[:, :1])), np.log(loudness[:n] + 1e-4)),
    ]
    out = np.zeros((2, 2))
    for v in (0, 1):
        frames = np.zeros(n, bool)
        for (a, b), w in zip(pieces, voice, strict=True):
            if w == v:
                frames[int(a * fps) : int(np.ceil(b * fps))] = True
        if frames.sum() <= 2 * max_lag + 2:
            continue
        for p in (0, 1):
            for signal, env in cues:
                if np.isfinite(signal[p]).all():
                    out[v, p] += max(
                        _correlation(np.roll(signal[p], lag)[frames], env[frames])
                        for lag in range(-max_lag, max_lag + 1)
                    )
    return out


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 1e-9 and y.std() > 1e-9 else 0.0


def speaking_from_pieces(pieces, person, n_frames: int, fps: float, max_pause_s: float = 1.0,
                         n_people: int = 2) -> np.ndarray:  # fmt: skip
    """(P, T) bool from voiced pieces (seconds) and the person each went to.

    Who holds the floor, not only who makes sound: a speaker holds the turn through their own
    pauses shorter than `max_pause_s` when the other does not speak (a silence between two
    people's turns belongs to nobody), and a shorter silence before the first turn or after the
    last belongs to that turn (a clip cut from a conversation starts and ends inside turns).
    """
    spans: list[list[float]] = []  # [start, end, person], in time order
    for (a, b), p in sorted(zip(pieces, person, strict=True)):
        if spans and spans[-1][2] == p and a - spans[-1][1] < max_pause_s:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b, p])
    duration = n_frames / fps
    if spans and spans[0][0] < max_pause_s:
        spans[0][0] = 0.0
    if spans and duration - spans[-1][1] < max_pause_s:
        spans[-1][1] = duration
    speaking = np.zeros((n_people, n_frames), bool)
    times = (np.arange(n_frames) + 0.5) / fps
    for a, b, p in spans:
        speaking[int(p)] |= (times >= a) & (times < b)
    return speaking


def _fill_undecided(labels: np.ndarray) -> np.ndarray:
    """Replace -1 by the nearest decided label (0 where nothing is decided)."""
    decided = np.flatnonzero(labels >= 0)
    if len(decided) == 0:
        return np.zeros_like(labels)
    nearest = decided[np.argmin(np.abs(np.arange(len(labels))[:, None] - decided[None]), axis=1)]
    return labels[nearest]
