"""Lip sync without SyncNet's weights: an audio-visual offset and a confidence, reported as
SyncNet reports AVOffset and AVConf (the Preference Score paper, Table 1; DialogueNeRF V-A).

SyncNet slides 0.2 s of mouth pixels against the audio over +-15 frames. Its weights cannot be
fetched here, so the embedding is replaced by signals read without a learned model, mouth(t)
(how open the mouth is) and envelope(t) (log RMS loudness per frame), and the distance by their
correlation over the frames where the person speaks:

    c(k) = corr(mouth(t), envelope(t + k)),   k in [-15, 15]
    AVOffset = argmax_k c(k),   AVConf = max_k c(k) - median_k c(k)

A positive offset means the sound comes k frames after the mouth that makes it. The mouth is
read from the pixels (the dark share of the mouth box) and from FaceMesh's lip gap, which a
smile showing teeth fools; `lip_sync` reports the pixels' offset with the lip gap's beside it,
warns where they disagree and gives no offset on a flat curve (the evidence: docs/results.md,
"sync from each mouth reading on its own").
"""

from __future__ import annotations

import numpy as np

from minitalk.prepare.audio import zcr_rms

MAX_OFFSET = 15  # frames, SyncNet's search range
MIN_CONFIDENCE = 0.1  # AVConf below this: a flat curve, no confident offset (real crops: >= 0.2)


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the finite values; NaN stays NaN; a constant signal gives zeros."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.where(ok, 0.0, np.nan)
    sd = x[ok].std()
    return np.where(ok, (x - x[ok].mean()) / (sd if sd > 1e-12 else 1.0), np.nan)


def speech_envelope(audio: np.ndarray, fps: float, n_frames: int, sample_rate: int = 16_000) -> np.ndarray:
    """Log RMS loudness per video frame (n_frames,), in dB over the clip's quietest tenth."""
    _, rms = zcr_rms(np.asarray(audio, np.float32), sample_rate, fps, n_frames)
    db = 20 * np.log10(np.maximum(rms, 1e-5))
    return db - np.percentile(db, 10)


def mouth_reading(opening: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """The mouth signal (T,) `lip_sync` reports from, z-scored: the dark share of the mouth box,
    or the lip gap where the dark share was never read (see the module docstring)."""
    return zscore(interior) if np.isfinite(interior).sum() >= 2 else zscore(opening)


def offset_curve(mouth: np.ndarray, envelope: np.ndarray, mask=None, max_offset: int = MAX_OFFSET):
    """c(k) for k = -max_offset..max_offset, each over the frames t in `mask` where both mouth(t)
    and envelope(t + k) exist. Returns (offsets (2m + 1,), correlations (2m + 1,))."""
    mouth, envelope = np.asarray(mouth, np.float64), np.asarray(envelope, np.float64)
    t_all = np.arange(len(mouth))
    mask = np.ones(len(mouth), bool) if mask is None else np.asarray(mask, bool)
    offsets = np.arange(-max_offset, max_offset + 1)
    curve = np.full(len(offsets), np.nan)
    for i, k in enumerate(offsets):
        src = t_all + k
        ok = mask & (src >= 0) & (src < len(envelope))
        ok[ok] &= np.isfinite(mouth[ok]) & np.isfinite(envelope[src[ok]])
        if ok.sum() < 10:
            continue
        a, b = mouth[ok], envelope[src[ok]]
        if a.std() > 1e-12 and b.std() > 1e-12:
            curve[i] = np.corrcoef(a, b)[0, 1]
    return offsets, curve


def av_sync(mouth: np.ndarray, envelope: np.ndarray, mask=None, max_offset: int = MAX_OFFSET) -> dict:
    """AVOffset (frames) and AVConf of one person's mouth against the speech envelope.

    NaN for both when fewer than ten frames can be compared at every offset (a person who never
    speaks, a face never found)."""
    offsets, curve = offset_curve(mouth, envelope, mask, max_offset)
    if not np.isfinite(curve).any():
        return {"av_offset": float("nan"), "av_conf": float("nan")}
    best = int(np.nanargmax(curve))
    return {"av_offset": float(offsets[best]), "av_conf": float(curve[best] - np.nanmedian(curve))}


def lip_sync(opening: np.ndarray, interior: np.ndarray, envelope: np.ndarray, mask=None,
             max_offset: int = MAX_OFFSET) -> dict:  # fmt: skip
    """AVOffset and AVConf of one person from the dark share of the mouth box (`interior`, (T,)),
    with the lip gap's (`opening`, (T,)) beside it; the lip gap's stand in only where the dark
    share gives no curve. `sync_note` warns where the readings disagree (correlate at or below 0
    over the frames in `mask`) and where the curve is flat (AVConf under `MIN_CONFIDENCE`: the
    offset is NaN then). Keys: av_offset, av_conf, av_offset_lip_gap, av_conf_lip_gap,
    av_offset_dark_share, av_conf_dark_share, mouth_readings_agreement, sync_note."""
    mask = np.ones(len(opening), bool) if mask is None else np.asarray(mask, bool)
    out: dict = {"sync_note": None}
    alone = {}
    for name, reading in (("lip_gap", opening), ("dark_share", interior)):
        alone[name] = av_sync(zscore(reading), envelope, mask, max_offset)
        out[f"av_offset_{name}"], out[f"av_conf_{name}"] = alone[name]["av_offset"], alone[name]["av_conf"]
    both = mask & np.isfinite(opening) & np.isfinite(interior)
    agreement = float("nan")
    if both.sum() >= 10 and np.std(opening[both]) > 1e-12 and np.std(interior[both]) > 1e-12:
        agreement = float(np.corrcoef(opening[both], interior[both])[0, 1])
    out["mouth_readings_agreement"] = agreement
    used = "dark_share" if np.isfinite(alone["dark_share"]["av_conf"]) else "lip_gap"
    found = dict(alone[used])
    if np.isfinite(agreement) and agreement <= 0:
        out["sync_note"] = (
            f"the lip gap and the dark share of the mouth disagree (correlation {agreement:+.2f} while "
            f"talking: teeth or a smile fool the lip gap); AVOffset from the {used.replace('_', ' ')}"
        )
    if np.isfinite(found["av_conf"]) and found["av_conf"] < MIN_CONFIDENCE:
        note = (
            f"the sync curve is flat (AVConf {found['av_conf']:.2f} < {MIN_CONFIDENCE}): no confident offset"
        )
        out["sync_note"] = f"{out['sync_note']}; {note}" if out["sync_note"] else note
        found["av_offset"] = float("nan")
    out.update(found)
    return out
