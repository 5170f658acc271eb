"""Ground-truth motion of the sample dialogue, frame by frame.

Everything a face tracker should recover is decided here, from the audio and a
seeded random generator:

* who speaks: person p speaks from the start to the end of each utterance;
* mouth opening follows the envelope of the speaker's own voice;
* head pose (DialogueNeRF Fig. 3): the speaker moves more (turns, emphasis
  nods); the listener mostly nods, and its nods respond to the speaker's
  loudness (RMS) and zero-crossing rate with a short lag (Fig. 6), through a
  causal filter that a pose model can learn. The listener also partly mirrors
  the speaker's head turns, a moment later: it receives "both visual and
  acoustic information" from the speaker (Fig. 1), so the pose model has a
  reason to look at the speaker's pose as well as the audio;
* blinks at random moments; the torso follows the head loosely, with a lag.

Pose layout: (pitch, yaw, roll) in degrees, then (tx, ty, tz) in metres, as in
`minitalk.camera`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitalk.prepare.audio import zcr_rms
from minitalk.utils import lowpass

HEAD_REST = np.array([0.0, -0.045, 0.75])  # head centre at rest, camera coordinates (metres)
TORSO_OFFSET = np.array([0.0, 0.165, 0.03])  # torso origin relative to the head at rest
FACING_YAW = (-8.0, 8.0)  # each person turns a little toward the other
ANGLE_LIMITS = np.array([18.0, 28.0, 12.0])  # soft limits on pitch, yaw, roll
NOD_LAG_S = 0.2  # the listener responds this long after the speaker's voice
MIMIC_LAG_S = 0.4  # ... and mirrors the speaker's head turns this long after them


@dataclass
class Motion:
    pose: np.ndarray  # (2, T, 6) head
    torso_pose: np.ndarray  # (2, T, 6)
    speaking: np.ndarray  # (2, T) bool
    mouth: np.ndarray  # (2, T) 0..1
    blink: np.ndarray  # (2, T) 0..1, 1 = closed


def ou_noise(rng, n: int, fps: float, sigma: float, tau: float) -> np.ndarray:
    """Ornstein-Uhlenbeck process: smooth random wandering with std `sigma`, timescale `tau` s."""
    a = np.exp(-1.0 / (fps * tau))
    kick = sigma * np.sqrt(1.0 - a * a) * rng.standard_normal(n)
    x = np.empty(n)
    x[0] = sigma * rng.standard_normal()
    for i in range(1, n):
        x[i] = a * x[i - 1] + kick[i]
    return x


def smooth(x: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    """Centred Hann-window moving average along the last axis."""
    n = max(3, int(round(seconds * fps)) | 1)
    w = np.hanning(n + 2)[1:-1]
    w /= w.sum()
    pad = [(0, 0)] * (x.ndim - 1) + [(n // 2, n // 2)]
    xp = np.pad(x, pad, mode="edge")
    return np.apply_along_axis(lambda r: np.convolve(r, w, mode="valid"), -1, xp)


def normalise(x: np.ndarray) -> np.ndarray:
    """Scale to 0..1 by the 95th percentile of the non-silent part."""
    ref = np.percentile(x[x > 1e-4], 95) if np.any(x > 1e-4) else 1.0
    return np.clip(x / ref, 0.0, 1.0)


def nod_kernel(fps: float) -> np.ndarray:
    """Impulse response of a nod: down, back up and a small overshoot (1.6 s)."""
    tau = np.arange(int(1.6 * fps)) / fps
    return np.exp(-tau / 0.4) * np.sin(2 * np.pi * tau / 0.8)


def blink_track(rng, n: int, fps: float, mean_gap_s: float = 3.5) -> np.ndarray:
    """Blinks at Poisson moments at least 1 s apart; each closes and opens in ~0.3 s."""
    shape = np.array([0.35, 0.8, 1.0, 1.0, 0.7, 0.4, 0.15])
    out = np.zeros(n)
    t = rng.exponential(mean_gap_s) * fps
    while t < n - len(shape):
        i = int(t)
        out[i : i + len(shape)] = np.maximum(out[i : i + len(shape)], shape)
        t += (1.0 + rng.exponential(mean_gap_s - 1.0)) * fps
    return out


def mouth_opening(loud: np.ndarray, speaking: np.ndarray, fps: float) -> np.ndarray:
    """(2, T) 0..1: each mouth opens with the smoothed loudness (2, T, normalised) of its own voice."""
    return np.clip(smooth(loud, fps, 0.12), 0, 1) ** 0.7 * speaking


def speech_truth(audio: np.ndarray, turns: np.ndarray, sample_rate: int, fps: float) -> dict:
    """Who speaks (2, T) and each mouth's opening (2, T) for a dialogue of exact `turns` (n, 3) as
    (person, start, end seconds), e.g. `speech.script_turns` of the new speech: the ground truth
    the sample's generator would have drawn for it."""
    n_frames = int(np.floor(len(audio) / sample_rate * fps + 1e-6))
    t = (np.arange(n_frames) + 0.5) / fps
    speaking = np.zeros((2, n_frames), bool)
    tracks = np.zeros((2, len(audio)), np.float32)
    for person, start, end in turns:
        speaking[int(person)] |= (t >= start) & (t < end)
        a, b = int(round(start * sample_rate)), int(round(end * sample_rate))
        tracks[int(person), a:b] = audio[a:b]
    loud = np.stack([normalise(zcr_rms(tr, sample_rate, fps, n_frames)[1]) for tr in tracks])
    return {"speaking": speaking, "mouth": mouth_opening(loud, speaking, fps)}


def generate_motion(
    tracks: np.ndarray, utterances, sample_rate: int, fps: float, n_frames: int, rng: np.random.Generator
) -> Motion:
    """All per-frame ground truth from each person's voice track (2, n_samples)."""
    t = (np.arange(n_frames) + 0.5) / fps
    speaking = np.zeros((2, n_frames), bool)
    for u in utterances:
        speaking[u.person] |= (t >= u.start) & (t < u.end)

    # the voice of each person, per frame: their own mouth follows it, the other one nods to it
    zcr, rms = zip(*(zcr_rms(tr, sample_rate, fps, n_frames) for tr in tracks), strict=True)
    loud = np.stack([normalise(r) for r in rms])  # (2, T)
    bright = np.stack([normalise(z * (r > 1e-3)) for z, r in zip(zcr, rms, strict=True)])
    mouth = mouth_opening(loud, speaking, fps)

    # role weight: 1 while speaking, crossfading over half a second at turn changes
    role = np.clip(smooth(speaking.astype(float), fps, 0.5), 0, 1)

    pose = np.zeros((2, n_frames, 6))
    lag = int(round(NOD_LAG_S * fps))
    kernel = nod_kernel(fps)
    # speaking: emphasis nods on one's own loudness, free turning and tilting
    spk_pitch = [4.0 * smooth(loud[p], fps, 0.3) + ou_noise(rng, n_frames, fps, 2.5, 0.8) for p in (0, 1)]
    spk_yaw = [ou_noise(rng, n_frames, fps, 9.0, 1.2) for _ in (0, 1)]
    spk_roll = [ou_noise(rng, n_frames, fps, 3.0, 1.5) for _ in (0, 1)]
    mimic = int(round(MIMIC_LAG_S * fps))
    for p in range(2):
        other = 1 - p
        # listening, acoustic: nods driven by the other's loudness and zero-crossing rate, after a lag
        drive = smooth(0.6 * loud[other] + 0.4 * bright[other], fps, 0.3)
        nod = np.convolve(drive, kernel)[:n_frames]
        nod = np.concatenate([np.zeros(lag), nod[: n_frames - lag]])
        nod *= 7.0 / (np.percentile(np.abs(nod), 99) + 1e-8)
        # listening, visual: partly mirror the speaker's turns and tilts, a little later
        follow_yaw = np.concatenate([np.zeros(mimic), smooth(spk_yaw[other], fps, 0.4)[: n_frames - mimic]])
        follow_roll = np.concatenate([np.zeros(mimic), smooth(spk_roll[other], fps, 0.4)[: n_frames - mimic]])
        lst_pitch = nod + ou_noise(rng, n_frames, fps, 0.5, 1.5)
        lst_yaw = 0.35 * follow_yaw + ou_noise(rng, n_frames, fps, 1.0, 3.0)
        lst_roll = 0.35 * follow_roll + ou_noise(rng, n_frames, fps, 0.6, 3.0)

        w = role[p]
        angles = np.stack(
            [
                w * spk_pitch[p] + (1 - w) * lst_pitch,
                FACING_YAW[p] + w * spk_yaw[p] + (1 - w) * lst_yaw,
                w * spk_roll[p] + (1 - w) * lst_roll,
            ],
            -1,
        )
        pose[p, :, :3] = ANGLE_LIMITS * np.tanh(angles / ANGLE_LIMITS)
        sway = np.stack([ou_noise(rng, n_frames, fps, s, 2.0) for s in (0.008, 0.005, 0.012)], -1)
        pose[p, :, 3:] = HEAD_REST + (0.4 + 0.6 * w[:, None]) * sway

    # the torso follows the head loosely: a fraction of its rotation and most of its sway, lagged
    slow = lowpass(np.moveaxis(pose, 1, -1), fps, 0.5)  # (2, 6, T)
    torso = np.zeros_like(pose)
    torso[..., :3] = np.moveaxis(slow[:, :3], -1, 1) * np.array([0.15, 0.35, 0.3])
    torso[..., 3:] = HEAD_REST + TORSO_OFFSET + 0.7 * (np.moveaxis(slow[:, 3:], -1, 1) - HEAD_REST)
    torso[..., 1] += np.array(FACING_YAW)[:, None] * 0.5

    blink = np.stack([blink_track(rng, n_frames, fps) for _ in range(2)])
    return Motion(
        pose.astype(np.float32),
        torso.astype(np.float32),
        speaking,
        mouth.astype(np.float32),
        blink.astype(np.float32),
    )
