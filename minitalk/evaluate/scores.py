"""The figures of one person over some frames (a role), from the readings of their panel: what
`minitalk evaluate` reports per person and role (the ViCo suite, the Preference Score paper's
Table 1), and the Preference Score of those figures.

Which figures a role gets depends on what it is compared with (see `minitalk.evaluate.clip`):
nothing, real footage of other moments (distributions: PoseFD, ExpFD), or real frames of the same
moments (frame by frame: PSNR, SSIM, LMD, Lip LMD, ExpL1, PoseL1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import minitalk
from minitalk import metrics
from minitalk.evaluate import sync
from minitalk.evaluate.faces import FaceModel, FaceReadings
from minitalk.evaluate.preference import load_scores, vector
from minitalk.evaluate.report import ROLES
from minitalk.prepare.face import lip_indices

PREFERENCE_FILE = minitalk.SAMPLE_DIR / "preference.pt"  # python -m minitalk.evaluate.dataset writes it


def preference_scores(people: list[dict], path=PREFERENCE_FILE) -> list[str]:
    """The Preference Score of each person's talking and listening frames (0 to 6, higher is
    preferred), added to their figures; returns what the report should say about it."""
    if not Path(path).is_file():
        return [f"no Preference Score: {path} is missing (python -m minitalk.evaluate.dataset writes it)"]
    scores, trained_on = load_scores(path)
    for person in people:
        for role in ROLES:
            if person[role].get("frames") and person[role].get("psnr") is not None:
                score = scores[role]
                person[role]["preference_score"] = float(score(vector(person[role], score.names)[None])[0])
    return [f"Preference Score (0-6, higher preferred) learned from {trained_on}"]


@dataclass
class Derived:
    """What the metrics need from one panel's readings, computed once: head pose, expression and
    blinks (pose and expression need a face model; None without one)."""

    readings: FaceReadings
    pose: np.ndarray | None  # (T, 6)
    expression: np.ndarray | None  # (T, K)
    blink: np.ndarray  # (T,)

    @classmethod
    def of(cls, r: FaceReadings, model: FaceModel | None) -> Derived:
        if model is None:
            return cls(r, None, None, r.blink())
        return cls(r, r.pose(model), r.expression(model), r.blink())


def role_metrics(d: Derived, mask, fps, envelope, image_scores, ref: Derived | None, ref_mask,
                 aligned: bool) -> dict:  # fmt: skip
    """The metrics of one person over the frames in `mask` (see the module docstring); None where a
    metric does not apply."""
    out: dict = {"frames": int(mask.sum())}
    if not mask.any():
        return out
    r, pose, expression = d.readings, d.pose, d.expression
    sel = np.flatnonzero(mask)
    out["cpbd"] = _mean(r.cpbd[sel])
    out.update(metrics.blink_statistics(d.blink[sel], fps))
    out["head_motion_var"] = metrics.head_motion_variance(pose[sel]) if pose is not None else None
    if envelope is not None:
        out.update(sync.lip_sync(r.opening, r.interior, envelope, mask))
    if ref is None or pose is None:
        return out
    ref_sel = np.flatnonzero(ref_mask) if ref_mask is not None else np.arange(len(ref.blink))
    ref_pose, ref_expression = ref.pose, ref.expression
    ours, theirs = _finite(pose[sel]), _finite(ref_pose[ref_sel])
    if len(ours) > 1 and len(theirs) > 1:  # a distribution needs more than one frame on each side
        out["pose_fd"] = metrics.pose_fd(ours, theirs)
        out["exp_fd"] = metrics.exp_fd(expression[sel], ref_expression[ref_sel])
        out["real_blink_rate"] = metrics.blink_statistics(ref.blink[ref_sel], fps)["blink_rate"]
    if aligned and image_scores:
        both = sel[sel < min(len(ref.blink), len(image_scores))]
        scores = np.asarray(image_scores)[both]
        out["psnr"], out["ssim"] = _mean(scores[:, 0]), _mean(scores[:, 1])
        out.update(frame_metrics(r.take(both), ref.readings.take(both), expression[both],
                                 ref_expression[both], pose[both], ref_pose[both]))  # fmt: skip
    return out


def frame_metrics(r: FaceReadings, ref: FaceReadings, expression, ref_expression, pose, ref_pose) -> dict:
    """The metrics that compare a clip with real frames of the same moments, frame by frame:
    LMD over the face and the lips, ExpL1 and PoseL1 (readings, expression and pose aligned)."""
    ok = np.isfinite(pose).all(-1) & np.isfinite(ref_pose).all(-1)
    return {
        "lmd": metrics.lmd(r.landmarks, ref.landmarks),
        "lip_lmd": metrics.lmd(r.landmarks, ref.landmarks, lip_indices()),
        "exp_l1": metrics.exp_l1(expression, ref_expression),
        "pose_l1": metrics.pose_l1(pose[ok], ref_pose[ok]) if ok.any() else None,
    }


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x).all(-1)]


def _mean(x) -> float | None:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None
