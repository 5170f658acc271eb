"""How well the pose model works: held-out split, baselines, ablations (DialogueNeRF Fig. 10).

The protocol, shared by `benchmarks/bench_pose.py` and notebook 03:

* the last 20% of every turn is held out; the model never learns from those
  frames' poses (their audio still feeds the causal context);
* listener metrics are computed on the held-out frames of whoever listens,
  speaker metrics on those of whoever speaks;
* every variant sees the same split and the same seed:
  - `tcn`: the full model, its listener given the speaker's tracked pose
    (the setting of DialogueNeRF Fig. 10);
  - `tcn_from_audio`: the full pipeline at inference, from audio alone (the
    listener is fed the generated speaker pose);
  - `no_speaker_pose`, `no_audio`: the ablations of Fig. 10, retrained;
  - `mean`: each person's mean training pose, held still;
  - `replay`: each person's own training pose track replayed from its start,
    which is what NeRF talking-head systems do at inference.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from minitalk import metrics
from minitalk.pose import PoseConfig, PoseGenerator, by_role, speaker_track, turn_segments


def held_out_mask(speaking: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """True on the last `fraction` of every turn."""
    speaker = speaker_track(speaking)
    held = np.zeros(len(speaker), bool)
    for a, b in turn_segments(speaker):
        held[b - max(1, int(round(fraction * (b - a)))) : b] = True
    return held


def replay_poses(pose: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(2, T, 6): each person's training frames played again from the start, looped."""
    out = np.empty_like(pose)
    for p in range(2):
        src = pose[p, train]
        out[p] = src[np.arange(pose.shape[1]) % len(src)]
    return out


def compare(
    pose, speaking, zcr, rms, config: PoseConfig | None = None, fraction: float = 0.2, ablations: bool = True
) -> dict:
    """Train the model (and its ablations), run the baselines, score all on held-out frames.

    Returns a dict with per-variant predictions by role and the metrics.
    """
    config = config or PoseConfig()
    held = held_out_mask(speaking, fraction)
    train = ~held
    speaker = speaker_track(speaking)
    real_spk, real_lst = by_role(pose, speaker)

    full = PoseGenerator(config).fit(pose, speaking, zcr, rms, train)
    variants = {
        "tcn": full.generate_by_role(zcr, rms, speaking, real_pose=pose),
        "tcn_from_audio": full.generate_by_role(zcr, rms, speaking),
    }
    for name, cfg in (
        ("no_speaker_pose", replace(config, use_speaker_pose=False)),
        ("no_audio", replace(config, use_audio=False)),
    ):
        model = PoseGenerator(cfg).fit(pose, speaking, zcr, rms, train)
        variants[name] = model.generate_by_role(zcr, rms, speaking, real_pose=pose)
    mean = np.stack([np.broadcast_to(pose[p, train].mean(0), pose[p].shape) for p in range(2)])
    variants["mean"] = by_role(mean, speaker)
    variants["replay"] = by_role(replay_poses(pose, train), speaker)

    scores = {
        "listener_pitch_corr": {},
        "listener_posefd": {},
        "listener_posel1": {},
        "speaker_posefd": {},
        "speaker_posel1": {},
    }
    for name, (spk, lst) in variants.items():
        scores["listener_pitch_corr"][name] = metrics.correlation(lst[held, 0], real_lst[held, 0])
        scores["listener_posefd"][name] = metrics.pose_fd(lst[held], real_lst[held])
        scores["listener_posel1"][name] = metrics.pose_l1(lst[held], real_lst[held])
        scores["speaker_posefd"][name] = metrics.pose_fd(spk[held], real_spk[held])
        scores["speaker_posel1"][name] = metrics.pose_l1(spk[held], real_spk[held])
    return {
        "model": full,
        "held_out": held,
        "variants": variants,
        "real": (real_spk, real_lst),
        "scores": scores,
    }
