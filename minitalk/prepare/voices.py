"""A learned voice print: the GE2E speaker encoder, offline, for telling two voices apart.

Wan et al., "Generalized End-to-End Loss for Speaker Verification" (ICASSP 2018),
section 2: a 3-layer LSTM (256 units) over 40-channel mel frames; the last
layer's final hidden state through a linear layer and a ReLU, L2-normalised,
is a 256-d embedding in which utterances of one speaker lie close (cosine).

The weights are those trained and published with the Resemblyzer package,
whose wheel carries them (`pretrained.pt`, 17 MB). Only that file is read:
the package itself is never imported (it needs `webrtcvad` at import time),
so `pip install --no-deps resemblyzer` is all it takes and no compiler is
needed. Without the file, `available()` is False and who-speaks falls back
to pitch and MFCC signatures (`diarize.py`), saying so in its report.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import librosa
import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16_000
N_MELS = 40
WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s: the utterance length the encoder was trained on
TARGET_DBFS = -30.0  # loudness the training utterances were brought up to


MISSING = "the speaker encoder's weights are not installed (pip install --no-deps resemblyzer==0.1.4)"


def weights_path() -> Path | None:
    """Where the wheel put the encoder's weights, found without importing its package."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    return path if path.is_file() else None


def available() -> bool:
    return weights_path() is not None


class SpeakerEncoder(nn.Module):
    """mel (B, frames, 40) -> embedding (B, 256), unit length (GE2E section 2)."""

    def __init__(self, hidden: int = 256, layers: int = 3, size: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, size)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mel)  # hidden: (layers, B, hidden)
        embedding = torch.relu(self.linear(hidden[-1]))  # (B, size)
        return embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-8)


@functools.lru_cache(maxsize=1)
def load_encoder() -> SpeakerEncoder:
    path = weights_path()
    if path is None:
        raise FileNotFoundError(MISSING)
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    encoder = SpeakerEncoder()
    encoder.load_state_dict({k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))})
    return encoder.eval()


def encoder_mel(audio: np.ndarray) -> np.ndarray:
    """(frames, 40) power mel spectrogram, no log: the input the encoder was trained on."""
    mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=SAMPLE_RATE, n_fft=WINDOW,
                                         hop_length=HOP, n_mels=N_MELS)  # fmt: skip
    return mel.astype(np.float32).T


def louder(audio: np.ndarray) -> np.ndarray:
    """Raise (never lower) the level to `TARGET_DBFS`, as the encoder's training data was."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms <= 1e-9:
        return audio
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    return audio * 10 ** (gain_db / 20) if gain_db > 0 else audio


def embed_pieces(audio: np.ndarray, pieces, context_s: float = 0.75, bounds=None) -> np.ndarray:
    """(n_pieces, 256) one embedding per voiced piece (start, end) in seconds of 16 kHz audio.

    Each piece is heard through a window of at least `context_s` about its centre (a quarter
    second alone says little about the voice; a longer window reaches further over a change of
    speaker within one voiced stretch, so turn changes blur), kept inside the
    piece's `bounds` (start, end) when given, so the window does not reach over a pause into
    another voice. A window longer than 1.6 s is cut into 1.6 s partials at a 0.8 s step whose
    embeddings are averaged and renormalised, as GE2E embeds an utterance (its section 3.2).
    """
    if not len(pieces):
        return np.zeros((0, 256), np.float32)
    encoder = load_encoder()
    bounds = pieces if bounds is None else bounds
    out = []
    with torch.no_grad():
        for (a, b), (lo, hi) in zip(pieces, bounds, strict=True):
            half = max(b - a, context_s) / 2
            start, end = max((a + b) / 2 - half, lo), min((a + b) / 2 + half, hi)
            if end - start < 2 * half:  # against a bound: slide the window away from it
                start, end = max(min(start, end - 2 * half), lo), min(max(end, start + 2 * half), hi)
            mel = encoder_mel(louder(audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]))
            starts = range(0, max(len(mel) - PARTIAL_FRAMES, 0) + 1, PARTIAL_FRAMES // 2)
            windows = torch.from_numpy(np.stack([mel[i : i + PARTIAL_FRAMES] for i in starts]))
            embedding = encoder(windows).mean(0)
            out.append((embedding / embedding.norm().clamp_min(1e-8)).numpy())
    return np.asarray(out)
