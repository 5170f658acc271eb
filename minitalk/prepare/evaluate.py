"""How well data preparation recovers the sample's ground truth (the `bench_prepare` protocol).

`data_samples/dialogue_gt.npz` holds the true head pose, speaking flags,
mouth opening and blinks of the synthetic dialogue, in the same conventions
as a prepared `tracks.npz`, so the two compare directly:

* rotation error: per person and angle, the median absolute difference after
  removing the person's constant offset (the tracker's canonical face is the
  person's average head, not the renderer's zero pose);
* jitter: the mean frame-to-frame change of the three angles on still
  stretches (the frames whose true angular speed is in the lowest 30%),
  beside the truth's own on the same frames;
* lag: the shift (frames) that best aligns tracked and true yaw;
* who speaks: the fraction of frames where both people's flags are right;
* blink: F1 of blink events (`expression.event_f1`); mouth: correlation.
"""

from __future__ import annotations

import numpy as np

from minitalk.prepare.expression import event_f1


def still_frames(rotation: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    """(T-1,) bool: steps whose angular speed (T, 3 degrees) is in the lowest `fraction`."""
    speed = np.abs(np.diff(rotation, axis=0)).mean(axis=1)
    return speed <= np.quantile(speed, fraction)


def jitter(rotation: np.ndarray, still: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of the angles (degrees) on the `still` steps."""
    return float(np.abs(np.diff(rotation, axis=0))[still].mean())


def best_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 10) -> int:
    """The shift k maximising corr(x[t + k], y[t]); positive: x lags behind y."""
    x, y = x - x.mean(), y - y.mean()
    n = len(x)

    def corr(k):
        a, b = (x[k:], y[: n - k]) if k >= 0 else (x[: n + k], y[-k:])
        return np.corrcoef(a, b)[0, 1]

    return max(range(-max_lag, max_lag + 1), key=corr)


def compare(tracks: dict, truth: dict) -> dict:
    """The figures of the module docstring; `tracks` and `truth` hold pose, speaking, blink, mouth."""
    n = min(tracks["pose"].shape[1], truth["pose"].shape[1])
    rot_err, jit, gt_jit, lags, blink_f1, mouth_corr = [], [], [], [], [], []
    for p in range(truth["pose"].shape[0]):
        est, gt = tracks["pose"][p, :n, :3].astype(np.float64), truth["pose"][p, :n, :3].astype(np.float64)
        err = est - gt
        err -= np.median(err, axis=0)
        rot_err.append(np.median(np.abs(err), axis=0))
        still = still_frames(gt)
        jit.append(jitter(est, still))
        gt_jit.append(jitter(gt, still))
        lags.append(best_lag(est[:, 1], gt[:, 1]))
        blink_f1.append(event_f1(tracks["blink"][p, :n], truth["blink"][p, :n]))
        mouth_corr.append(float(np.corrcoef(tracks["mouth"][p, :n], truth["mouth"][p, :n])[0, 1]))
    rot_err = np.array(rot_err)  # (P, 3)
    speaking_acc = float((tracks["speaking"][:, :n] == truth["speaking"][:, :n]).all(axis=0).mean())
    return {
        "rot_err_deg_median": round(float(rot_err.max()), 3),  # the worst person and angle
        "rot_err_deg": {
            k: [round(float(v), 3) for v in rot_err[:, i]] for i, k in enumerate(("pitch", "yaw", "roll"))
        },
        "jitter_deg": round(float(np.mean(jit)), 4),
        "gt_jitter_deg": round(float(np.mean(gt_jit)), 4),
        "yaw_lag_frames": lags,
        "speaking_acc": round(speaking_acc, 4),
        "blink_f1": round(float(np.min(blink_f1)), 4),  # the worse person
        "mouth_corr": [round(c, 4) for c in mouth_corr],
    }
