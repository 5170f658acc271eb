"""Audio features aligned to video frames (DialogueNeRF section IV-A), and voice activity.

The pose model listens to two cheap signals of the speaker's voice, computed
once per video frame over a window centred on the frame:

* zero-crossing rate (ZCR): the fraction of neighbouring samples that change
  sign; higher for brighter, faster, more fricative speech;
* root mean square (RMS): the signal's energy, i.e. loudness.

DialogueNeRF (Fig. 6) observes that listeners respond more when these get
larger and more rapid.

The NeRF's speaker condition is richer: a log-mel spectrogram window of
`MEL_STEPS` steps x `N_MELS` bands (200 ms) centred on each frame, the input
size Wav2Lip's audio encoder uses. Voice activity (who is talking at all)
comes from silero-vad, whose model ships inside its wheel.
"""

from __future__ import annotations

import librosa
import numpy as np
import torch


def frame_windows(
    audio: np.ndarray,
    sample_rate: int,
    fps: float,
    n_frames: int | None = None,
    window_s: float = 0.08,
    frames: slice = slice(None),
) -> np.ndarray:
    """Windows (T, W) of audio centred on each video frame (or on `frames` of them), zero-padded
    at the ends."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if n_frames is None:
        n_frames = int(np.floor(len(audio) / sample_rate * fps))
    width = int(round(window_s * sample_rate))
    centres = np.round((np.arange(n_frames)[frames] + 0.5) * sample_rate / fps).astype(np.int64)
    padded = np.pad(audio, (width, width))
    idx = centres[:, None] - width // 2 + np.arange(width)[None, :] + width  # (T, W)
    return padded[np.clip(idx, 0, len(padded) - 1)]


def zcr_rms(
    audio: np.ndarray, sample_rate: int, fps: float, n_frames: int | None = None, window_s: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame zero-crossing rate (0..1) and RMS, each (T,) float32.

    Computed a block of frames at a time, so memory stays flat for audio of any length.
    """
    if n_frames is None:
        n_frames = int(np.floor(len(audio) / sample_rate * fps))
    zcr, rms = np.empty(n_frames, np.float32), np.empty(n_frames, np.float32)
    for a in range(0, n_frames, 2048):
        block = frame_windows(audio, sample_rate, fps, n_frames, window_s, slice(a, a + 2048))  # (B, W)
        rms[a : a + 2048] = np.sqrt(np.mean(block.astype(np.float64) ** 2, axis=1))
        signs = np.signbit(block)
        zcr[a : a + 2048] = np.mean(signs[:, 1:] != signs[:, :-1], axis=1)
    return zcr, rms


N_MELS = 80
MEL_HOP = 200  # samples at 16 kHz: 80 mel steps per second
MEL_STEPS = 16  # steps per window: 200 ms


def log_mel(audio: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """Log-mel spectrogram (steps, N_MELS) float32, one step every `MEL_HOP` samples, in dB / 20.

    A 50 ms Hann window, 80 bands from 55 Hz to 7.6 kHz, power in decibels
    clipped 80 dB below the loudest step and scaled to about [-4, 0].
    """
    spec = librosa.feature.melspectrogram(
        y=np.asarray(audio, dtype=np.float32),
        sr=sample_rate,
        n_fft=800,
        hop_length=MEL_HOP,
        win_length=800,
        n_mels=N_MELS,
        fmin=55,
        fmax=min(7600, sample_rate / 2),
    )
    db = librosa.power_to_db(spec, ref=np.max, top_db=80.0)
    return (db.T / 20.0).astype(np.float32)


def mel_windows(mel: np.ndarray, fps: float, n_frames: int, sample_rate: int = 16_000) -> np.ndarray:
    """Windows (T, MEL_STEPS, N_MELS) of a log-mel spectrogram centred on each video frame.

    Steps before the start or past the end repeat the quietest value (silence).
    """
    steps_per_s = sample_rate / MEL_HOP
    centres = np.round((np.arange(n_frames) + 0.5) / fps * steps_per_s).astype(np.int64)
    idx = centres[:, None] - MEL_STEPS // 2 + np.arange(MEL_STEPS)[None, :]
    padded = np.concatenate([mel, np.full((1, mel.shape[1]), mel.min(), mel.dtype)])
    idx = np.where((idx >= 0) & (idx < len(mel)), idx, len(mel))  # out of range -> the silence row
    return padded[idx]


def voice_activity(
    audio: np.ndarray, sample_rate: int = 16_000, threshold: float = 0.5, min_silence_s: float = 0.1
) -> list[tuple[float, float]]:
    """Voiced stretches (start, end) in seconds, by silero-vad (offline: the model is in its wheel)."""
    if sample_rate != 16_000:
        raise ValueError(f"voice_activity expects 16 kHz audio, got {sample_rate} Hz")
    threads = torch.get_num_threads()
    try:  # lazy (a 1.5 s import); importing silero_vad sets torch's thread count to 1: undone below
        from silero_vad import get_speech_timestamps, load_silero_vad

        model = load_silero_vad()
        with torch.no_grad():
            stamps = get_speech_timestamps(
                torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
                model,
                threshold=threshold,
                sampling_rate=sample_rate,
                min_silence_duration_ms=int(min_silence_s * 1000),
                return_seconds=True,
                time_resolution=3,
            )
    finally:  # (training after preparation in one process had run on one core)
        torch.set_num_threads(threads)
    return [(float(s["start"]), float(s["end"])) for s in stamps]
