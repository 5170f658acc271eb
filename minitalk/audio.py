"""Audio features aligned to video frames (DialogueNeRF section IV-A).

The pose model listens to two cheap signals of the speaker's voice, computed
once per video frame over a window centred on the frame:

* zero-crossing rate (ZCR): the fraction of neighbouring samples that change
  sign; higher for brighter, faster, more fricative speech;
* root mean square (RMS): the signal's energy, i.e. loudness.

DialogueNeRF (Fig. 6) observes that listeners respond more when these get
larger and more rapid.
"""

from __future__ import annotations

import numpy as np


def frame_windows(
    audio: np.ndarray, sample_rate: int, fps: float, n_frames: int | None = None, window_s: float = 0.08
) -> np.ndarray:
    """Windows (T, W) of audio centred on each video frame, zero-padded at the ends."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if n_frames is None:
        n_frames = int(np.floor(len(audio) / sample_rate * fps))
    width = int(round(window_s * sample_rate))
    centres = np.round((np.arange(n_frames) + 0.5) * sample_rate / fps).astype(np.int64)
    padded = np.pad(audio, (width, width))
    idx = centres[:, None] - width // 2 + np.arange(width)[None, :] + width  # (T, W)
    return padded[np.clip(idx, 0, len(padded) - 1)]


def zcr_rms(
    audio: np.ndarray, sample_rate: int, fps: float, n_frames: int | None = None, window_s: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame zero-crossing rate (0..1) and RMS, each (T,) float32."""
    win = frame_windows(audio, sample_rate, fps, n_frames, window_s)  # (T, W)
    rms = np.sqrt(np.mean(win.astype(np.float64) ** 2, axis=1))
    signs = np.signbit(win)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    return zcr.astype(np.float32), rms.astype(np.float32)
