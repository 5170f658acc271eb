"""Who speaks when: voice activity split among the people in view (DialogueNeRF section III-B).

DialogueNeRF labels its roles with pyannote, a hub-downloaded model. Ours runs
offline and uses the fact that we also see the faces:

1. voice activity (silero-vad) gives the voiced stretches, cut into short
   pieces (`PIECE_S`), so a piece rarely holds two voices;
2. each piece gets a voice print: a learned speaker embedding (GE2E,
   `voices.py`) where its weights are installed, else its median pitch (YIN)
   and mean MFCC, which tell apart voices of unlike pitch only; the pieces
   are clustered into as many voices as there are people, or fewer: the
   most k-means clusters that are still distinct voices (`count_voices`);
3. each voice goes to a different person, the one whose mouth moves with it
   over all of its frames (`voice_mouth_match`, `match_voices`; a listener's
   mouth may move too, but not in time with another's voice). Where the
   pieces are one voice, each piece goes to the mouth that follows it;
4. a speaker holds the turn through their own pauses under `max_pause_s`.

The result is `speaking` bool (P, T) on the video's frames, P the people in view.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from scipy.fft import dct
from scipy.optimize import linear_sum_assignment

from minitalk.prepare import voices
from minitalk.prepare.audio import MEL_HOP, voice_activity, zcr_rms


@dataclass
class Diarization:
    speaking: np.ndarray  # (P, T) bool
    pieces: list[tuple[float, float]]  # voiced pieces, seconds
    person: np.ndarray  # (n_pieces,) the person each piece went to
    voice_cluster: np.ndarray  # (n_pieces,) 0 .. voices - 1 from the voice signature alone
    mouth_person: np.ndarray  # (n_pieces,) whose mouth moved more, -1 without mouth tracks
    agreement: float  # fraction of pieces where the voice clusters and the mouths agree
    method: str  # "voice+mouth", "mouth", "voice", "one person" or "none"
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
    """Each person's voice print (P, 13) and the clip's spread of voice features (13,), from the
    training clip's 16 kHz audio, its log-mel and who speaks when (P, T). A person who never
    speaks has a print of NaN."""
    pieces = split_pieces(voice_activity(audio))
    prints = np.full((len(speaking), 13), np.nan)
    if not pieces:
        return prints, np.ones(13)
    feats = voice_features(audio, pieces, log_mel)
    owner = []
    for a, b in pieces:  # the person who speaks over most of the piece's frames, if anyone does
        frames = slice(int(a * fps), max(int(b * fps), int(a * fps) + 1))
        share = speaking[:, frames].mean(axis=1)
        owner.append(int(np.argmax(share)) if share.max() > 0.5 else -1)
    owner = np.asarray(owner)
    for p in range(len(speaking)):
        if (owner == p).any():
            prints[p] = feats[owner == p].mean(0)
    return prints, feats.std(0) + 1e-8


def voice_signatures(audio: np.ndarray, pieces, mel: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(n_pieces, 13) `voice_features` standardised over the recording's pieces, for clustering."""
    feats = voice_features(audio, pieces, mel, sample_rate)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-8)


VOICE_PRINTS = ("ge2e", "pitch+mfcc")
# pitch and MFCC: k clusters are k voices when their silhouette reaches this
MIN_SEPARATION = 0.15
# embeddings: clusters are distinct voices when every two of their mean directions are less alike
# than this (cosine); one voice's two halves stay near 0.85-0.9, two people's voices near
# 0.65-0.72. The silhouette does not tell: pieces heard through overlapping windows cluster in time
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


def distinct_voices(prints: np.ndarray, labels: np.ndarray, voice_print: str) -> bool:
    """Whether a labelling of the pieces' prints into k >= 2 clusters is k voices rather than
    fewer voices split: with embeddings, every two clusters' mean directions differ (cosine under
    `MAX_VOICE_COSINE`); with pitch and MFCC, the clusters' silhouette reaches `MIN_SEPARATION`."""
    clusters = sorted(set(labels.tolist()))
    if len(clusters) < 2:
        return False
    if voice_print == "ge2e":
        centres = np.stack([prints[labels == c].mean(0) for c in clusters])
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        cosine = centres @ centres.T
        return bool(cosine[np.triu_indices(len(clusters), 1)].max() < MAX_VOICE_COSINE)
    return separation(prints, labels) >= MIN_SEPARATION


def count_voices(prints: np.ndarray, max_voices: int, voice_print: str) -> np.ndarray:
    """Labels 0 .. k - 1 of the pieces' prints (n, D): the most voices k <= `max_voices` into which
    k-means splits them as distinct voices (`distinct_voices`), or all 0 (one voice).

    From the most down: a recording's voices are at most the people in view, and k-means with
    too many clusters splits one voice, which `distinct_voices` refuses (its halves stay alike)."""
    for k in range(min(max_voices, len(prints)), 1, -1):
        labels = k_means(prints, k)
        if distinct_voices(prints, labels, voice_print):
            return labels
    return np.zeros(len(prints), np.int64)


def k_means(x: np.ndarray, k: int = 2, iterations: int = 50) -> np.ndarray:
    """Labels 0 .. k - 1 from k-means (deterministic), started at far-apart points: the point
    farthest from the mean, then each time the point farthest from all chosen so far (O(n k)
    memory: an hour's pieces are tens of thousands, their pairwise distances gigabytes). Labels
    are numbered in the order the clusters first occur."""
    if len(x) < k:
        return np.arange(len(x), dtype=np.int64)
    chosen = [int(np.argmax(np.linalg.norm(x - x.mean(0), axis=1)))]
    while len(chosen) < k:
        nearest = np.min(np.linalg.norm(x[:, None] - x[chosen][None], axis=-1), axis=1)
        chosen.append(int(np.argmax(nearest)))
    centres = x[sorted(chosen)].copy()
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        labels = np.argmin(np.linalg.norm(x[:, None] - centres[None], axis=-1), axis=1)
        new = np.stack([x[labels == c].mean(0) if (labels == c).any() else centres[c] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    order = list(dict.fromkeys(labels.tolist()))  # clusters in the order they first occur
    return np.asarray([order.index(c) for c in labels.tolist()], np.int64)


def mouth_sync(
    mouth: np.ndarray, loudness: np.ndarray, pieces, fps: float, context_s: float = 1.0
) -> np.ndarray:
    """(n_pieces, P): how well each person's mouth opening (P, T) follows the audio's loudness in
    each piece.

    The correlation between the mouth opening and the RMS envelope over the
    piece's frames and `context_s` either side (over a one-second piece alone
    the correlation is noisy); a still or untracked mouth scores 0. It is the
    speaker's mouth that moves with the sound, whatever the other mouth does.
    """
    out = np.zeros((len(pieces), len(mouth)))
    for piece, (a, b) in enumerate(pieces):
        i, j = int(max(a - context_s, 0) * fps), int(np.ceil((b + context_s) * fps))
        env = loudness[i:j]
        for p in range(len(mouth)):
            m = mouth[p, i:j]
            if len(m) > 2 and np.isfinite(m).all() and m.std() > 1e-6 and env.std() > 1e-9:
                out[piece, p] = np.corrcoef(m, env)[0, 1]
    return out


def separation(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of a labelling (1: tight, far apart clusters; 0: no structure): per point,
    (b - a) / max(a, b), a its mean distance to its own cluster, b to the nearest other cluster."""
    clusters = sorted(set(labels.tolist()))
    if len(clusters) < 2:
        return 0.0
    one_hot = (labels[:, None] == np.asarray(clusters)[None]).astype(np.float64)  # (n, k)
    sizes = one_hot.sum(0)
    own, other = np.zeros(len(x)), np.zeros(len(x))
    for a in range(0, len(x), 256):  # a block of rows of the distance matrix at a time
        dist = np.linalg.norm(x[a : a + 256, None] - x[None], axis=-1)  # (block, n)
        mine = one_hot[a : a + 256].astype(bool)  # (block, k)
        mean = dist @ one_hot / np.maximum(sizes - mine, 1)  # (block, k), without the point itself
        own[a : a + 256] = mean[mine]
        other[a : a + 256] = np.where(mine, np.inf, mean).min(1)
    return float(np.mean((other - own) / np.maximum(np.maximum(own, other), 1e-12)))


def diarize(
    audio: np.ndarray,
    mel: np.ndarray,
    n_frames: int,
    fps: float,
    mouth: np.ndarray | None = None,
    sample_rate: int = 16_000,
    max_pause_s: float = 1.0,
    voice_print: str = "auto",
    n_people: int = 2,
) -> Diarization:
    """Who speaks when, from 16 kHz audio, its log-mel and (optionally) every person's mouth
    opening (P, T); without mouths, among `n_people`.

    `voice_print`: "auto", "ge2e" or "pitch+mfcc" (see `choose_voice_print`)."""
    voice_print = choose_voice_print(voice_print)
    n_people = n_people if mouth is None else len(mouth)
    pieces, bounds = voiced_pieces(audio, voice_print, sample_rate)
    if not pieces:
        empty = np.zeros(0, np.int64)
        return Diarization(np.zeros((n_people, n_frames), bool), [], empty, empty, empty, 1.0, "none",
                           voice_print)  # fmt: skip
    if n_people == 1:  # one person in view: every voiced piece is theirs
        zeros = np.zeros(len(pieces), np.int64)
        speaking = speaking_from_pieces(pieces, zeros, n_frames, fps, max_pause_s, n_people=1)
        return Diarization(speaking, pieces, zeros, zeros, zeros, 1.0, "one person", voice_print)
    if voice_print == "ge2e":
        signatures = voices.embed_pieces(audio, pieces, bounds=bounds)
    else:
        signatures = voice_signatures(audio, pieces, mel, sample_rate)
    cluster = count_voices(signatures, n_people, voice_print)
    separated = cluster.max() > 0
    if mouth is None:  # voices numbered in the order they are first heard
        mouth_person = np.full(len(pieces), -1)
        person, agreement, method = cluster, float("nan"), "voice"
    else:
        mouth = np.asarray(mouth, dtype=np.float64)
        _, rms = zcr_rms(audio, sample_rate, fps, n_frames)
        sync = mouth_sync(mouth, rms, pieces, fps)  # (n_pieces, P)
        ranked = np.sort(sync, axis=1)
        margin = ranked[:, -1] - ranked[:, -2]  # the best mouth's lead over the next
        mouth_person = np.where(margin > 0.1, sync.argmax(axis=1), -1)  # -1: undecided
        if separated:  # name each voice after the mouth that moves with it
            follows = voice_mouth_match(mouth, rms, pieces, cluster, fps)  # (voice, person)
            person = match_voices(follows)[cluster]
            method = "voice+mouth"
        else:  # one voice, or voices too alike: each piece goes to the mouth that follows it
            person = _fill_undecided(mouth_person)
            method = "mouth"
        decided = mouth_person >= 0
        agreement = (
            float(np.mean(person[decided] == mouth_person[decided])) if decided.any() else float("nan")
        )
    speaking = speaking_from_pieces(pieces, person, n_frames, fps, max_pause_s, n_people=n_people)
    return Diarization(
        speaking, pieces, np.asarray(person), cluster, mouth_person, agreement, method, voice_print
    )


def match_voices(score: np.ndarray) -> np.ndarray:
    """(V,) a different person for each voice, of highest total score (V, P), V <= P: each voice
    goes to the mouth that follows it best, two voices never to one person (the Hungarian method,
    `scipy.optimize.linear_sum_assignment`)."""
    voice, person = linear_sum_assignment(score, maximize=True)
    out = np.zeros(len(score), np.int64)
    out[voice] = person
    return out


def voice_mouth_match(
    mouth: np.ndarray, loudness: np.ndarray, pieces, voice: np.ndarray, fps: float, max_lag: int = 2
) -> np.ndarray:
    """(V, P) how well each person's mouth moves with each voice: over all of a voice's frames, the
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
    out = np.zeros((int(voice.max()) + 1, len(mouth)))
    for v in range(len(out)):
        frames = np.zeros(n, bool)
        for (a, b), w in zip(pieces, voice, strict=True):
            if w == v:
                frames[int(a * fps) : int(np.ceil(b * fps))] = True
        if frames.sum() <= 2 * max_lag + 2:
            continue
        for p in range(len(mouth)):
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
