"""Every motion model of the people of one or more prepared clips, fitted on their tracks in seconds.

What rendering new speech needs besides the radiance field (DialogueNeRF IV-A and Fig. 6): the
head-pose TCNs (`PoseGenerator`), the listener's expression TCN (`ListenerExpression`), the
blink rates and shape (`BlinkModel`), and a linear read-out of mouth opening from the
expression code, which turns a rendered speaker's expression into a mouth measure. Training
(`minitalk.export`) calls it once and packs the result into the avatar file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitalk.pose.face_state import BlinkModel, ListenerExpression
from minitalk.pose.generator import PoseGenerator


@dataclass
class MotionModels:
    pose: PoseGenerator
    listener: ListenerExpression
    blinks: BlinkModel
    mouth_readout: np.ndarray  # (K + 1,): mouth opening ~ expression @ w[:-1] + w[-1]


def fit_motion_models(tracks) -> MotionModels:
    """Fit every motion model on `tracks` (`minitalk.prepare.data.load_tracks`), or on a list of
    them, one per conversation, whose people are numbered in the order given."""
    clips = tracks if isinstance(tracks, (list, tuple)) else [tracks]
    pose, speaking, zcr, rms = ([c[k] for c in clips] for k in ("pose", "speaking", "zcr", "rms"))
    expression = [c["expression"].astype(np.float32) for c in clips]  # (P_f, T_f, K) each
    blinks = [BlinkModel.fit(c["blink"], c["speaking"], float(c["fps"])) for c in clips]
    return MotionModels(
        pose=PoseGenerator().fit(pose, speaking, zcr, rms),
        listener=ListenerExpression(expression[0].shape[-1]).fit(expression, pose, speaking, zcr, rms),
        blinks=BlinkModel(
            np.concatenate([b.rate for b in blinks]), np.concatenate([b.profile for b in blinks])
        ),
        mouth_readout=fit_mouth_readout(
            np.concatenate([e.reshape(-1, e.shape[-1]) for e in expression])[None],
            np.concatenate([c["mouth"].reshape(-1) for c in clips])[None],
        ),
    )


def fit_mouth_readout(expression: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """Least squares w (K + 1,) with mouth ~ expression @ w[:-1] + w[-1], over every frame of
    every person: expression (P, T, K), mouth opening (P, T)."""
    flat = expression.reshape(-1, expression.shape[-1])
    design = np.concatenate([flat, np.ones((len(flat), 1))], 1)
    return np.linalg.lstsq(design, mouth.reshape(-1), rcond=None)[0].astype(np.float32)
