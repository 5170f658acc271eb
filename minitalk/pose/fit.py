"""Every motion model of one person pair, fitted on a prepared clip's tracks in seconds.

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


def fit_motion_models(tracks: dict) -> MotionModels:
    """Fit every motion model on `tracks` (`minitalk.prepare.data.load_tracks`)."""
    pose, speaking, zcr, rms = tracks["pose"], tracks["speaking"], tracks["zcr"], tracks["rms"]
    expression = tracks["expression"].astype(np.float32)  # (P, T, K)
    return MotionModels(
        pose=PoseGenerator().fit(pose, speaking, zcr, rms),
        listener=ListenerExpression(expression.shape[-1]).fit(expression, pose, speaking, zcr, rms),
        blinks=BlinkModel.fit(tracks["blink"], speaking, float(tracks["fps"])),
        mouth_readout=fit_mouth_readout(expression, tracks["mouth"]),
    )


def fit_mouth_readout(expression: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """Least squares w (K + 1,) with mouth ~ expression @ w[:-1] + w[-1], over every frame of
    every person: expression (P, T, K), mouth opening (P, T)."""
    flat = expression.reshape(-1, expression.shape[-1])
    design = np.concatenate([flat, np.ones((len(flat), 1))], 1)
    return np.linalg.lstsq(design, mouth.reshape(-1), rcond=None)[0].astype(np.float32)
