"""Head pose from 478 face landmarks: a canonical face, PnP, and jitter-free smoothing.

DialogueNeRF (section IV-A) and AD-NeRF fit a 3D face model to every frame and keep its rigid
part as the head pose; the NeRF then holds the head still and moves the camera by the inverse
pose. We do the same with no licence-gated face model, in three steps:

1. **Canonical face.** Generalised Procrustes analysis aligns the clip's FaceMesh landmarks
   (x, y in pixels, relative depth z in the same unit) to one another and averages them: the
   person's own rigid 3D face, in metres after fixing the distance between the eye corners.
2. **PnP.** `cv2.solvePnP` projects the canonical face onto each frame's landmarks through the
   camera intrinsics, using only rigid points (forehead, nose, cheekbones, eye corners), so
   talking and blinking do not move the head.
3. **Smoothing.** A One-Euro filter (Casiez et al., CHI 2012), whose cut-off rises with the
   signal's speed: still stretches are smoothed hard and fast turns keep their timing. Run
   forward and backward and averaged, which cancels what lag is left.

Poses follow `minitalk.camera`: (pitch, yaw, roll) in degrees, then translation in metres.
"""

from __future__ import annotations

import cv2
import numpy as np

from minitalk.camera import matrix_to_euler

EYE_OUTER = (33, 263)  # outer eye corners, image-left first
EYE_CORNER_DISTANCE = 0.09  # metres between the outer eye corners of an adult face (about 9 cm)

# Landmarks that move with the skull, not with the lips, lids or jaw: forehead,
# brows, nose bridge, eye corners, cheekbones, temples. The lower nose is left
# out: FaceMesh shifts it a little when the mouth opens (measured on the sample,
# it pulled pitch toward the mouth opening).
RIGID = (
    10, 151, 9, 8, 168, 6, 197, 195,  # midline: forehead to the nose bridge
    33, 133, 362, 263,  # eye corners
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    116, 117, 118, 123, 345, 346, 347, 352,  # cheekbones
    234, 454, 127, 356, 21, 251, 54, 284, 103, 332, 67, 297, 109, 338,  # face sides and upper oval
)  # fmt: skip


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Rotation R, scale s, translation t minimising |s R src + t - dst| (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = (sig * np.diag(fix)).sum() / (a**2).sum()
    return rot, scale, mu_d - scale * rot @ mu_s


def align(points: np.ndarray, reference: np.ndarray, subset=RIGID) -> np.ndarray:
    """Each frame of `points` (T, N, 3) moved onto `reference` (N, 3) by a similarity fitted on `subset`."""
    out = np.empty_like(points, dtype=np.float64)
    idx = list(subset)
    for i, p in enumerate(points):
        rot, scale, t = _similarity(p[idx], reference[idx])
        out[i] = scale * p @ rot.T + t
    return out


def canonical_face(landmarks: np.ndarray, iterations: int = 3) -> np.ndarray:
    """The person's rigid 3D face (478, 3) in metres from tracked landmarks (T, 478, 3).

    Generalised Procrustes: align every frame to the current mean, average,
    repeat. The result is centred on its rigid points, in camera-like axes (x
    right, y down, z away from the camera) and scaled so the outer eye
    corners lie `EYE_CORNER_DISTANCE` apart. Frames with NaN are skipped.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=(1, 2))]
    if len(pts) == 0:
        raise ValueError("canonical_face: no frame with a complete face")
    mean = pts[len(pts) // 2]
    for _ in range(iterations):
        mean = align(pts, mean).mean(0)
    mean -= mean[list(RIGID)].mean(0)
    return mean * EYE_CORNER_DISTANCE / np.linalg.norm(mean[EYE_OUTER[0]] - mean[EYE_OUTER[1]])


def solve_pose(landmarks: np.ndarray, face3d: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Per-frame head pose (T, 6) by PnP of the canonical face onto the landmarks' x, y.

    Frames without a face give NaN. Each solve starts from the previous
    frame's answer, which keeps the iterative solver on the right branch.
    """
    idx = list(RIGID)
    obj = np.ascontiguousarray(face3d[idx], dtype=np.float64)
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    out = np.full((len(landmarks), 6), np.nan)
    guess = None
    for i, lm in enumerate(np.asarray(landmarks, dtype=np.float64)):
        img = np.ascontiguousarray(lm[idx, :2])
        if not np.isfinite(img).all():
            continue
        if guess is None:
            ok, rvec, tvec = cv2.solvePnP(obj, img, intrinsics, None, flags=cv2.SOLVEPNP_SQPNP)
        else:
            ok, rvec, tvec = cv2.solvePnP(
                obj, img, intrinsics, None, rvec=guess[0].copy(), tvec=guess[1].copy(), useExtrinsicGuess=True
            )
        if not ok:
            continue
        guess = (rvec, tvec)
        rot, _ = cv2.Rodrigues(rvec)
        out[i, :3] = matrix_to_euler(rot)
        out[i, 3:] = tvec[:, 0]
    return out


def one_euro(
    x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0
) -> np.ndarray:
    """Causal One-Euro filter along axis 0 of `x` (T, ...).

    Each step is an exponential smoother whose cut-off frequency is
    `min_cutoff + beta * |speed|` (Hz), the speed itself low-passed at
    `d_cutoff`: slow signals are smoothed hard, fast ones pass with little lag.
    """
    x = np.asarray(x, dtype=np.float64)

    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    out = np.empty_like(x)
    out[0] = x[0]
    speed = np.zeros_like(x[0])
    a_d = alpha(d_cutoff)
    for i in range(1, len(x)):
        speed = a_d * (x[i] - out[i - 1]) * fps + (1 - a_d) * speed
        a = alpha(min_cutoff + beta * np.abs(speed))
        out[i] = a * x[i] + (1 - a) * out[i - 1]
    return out


def smooth_pose(pose: np.ndarray, fps: float, min_cutoff: float = 1.5, beta: float = 0.05) -> np.ndarray:
    """Zero-lag One-Euro smoothing of a pose track (T, 6): forward and backward passes averaged.

    Angles (degrees) and translations (metres) get cut-offs matched to their
    units: `beta` is per degree per second, scaled by 1000 for millimetres.
    """
    pose = np.asarray(pose, dtype=np.float64)
    scaled = pose * np.array([1, 1, 1, 1000, 1000, 1000])  # translations in mm, like degrees in size
    fwd = one_euro(scaled, fps, min_cutoff, beta)
    bwd = one_euro(scaled[::-1], fps, min_cutoff, beta)[::-1]
    return ((fwd + bwd) / 2 / np.array([1, 1, 1, 1000, 1000, 1000])).astype(np.float32)


def fill_gaps(x: np.ndarray, max_gap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Linearly interpolate NaN runs of at most `max_gap` frames along axis 0.

    Returns the filled array and the runs (first, last frame, inclusive) that
    were longer and stay NaN. Runs touching either end are held at the nearest
    value when short enough.
    """
    x = np.array(x, dtype=np.float64)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    long_runs = []
    i = 0
    while i < len(x):
        if not bad[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(x) and bad[j + 1]:
            j += 1
        if j - i + 1 > max_gap or (i == 0 and j == len(x) - 1):
            long_runs.append((i, j))
        elif i == 0:
            x[: j + 1] = x[j + 1]
        elif j == len(x) - 1:
            x[i:] = x[i - 1]
        else:
            w = (np.arange(i, j + 1) - (i - 1)) / (j + 1 - (i - 1))
            w = w.reshape(-1, *([1] * (x.ndim - 1)))
            x[i : j + 1] = (1 - w) * x[i - 1] + w * x[j + 1]
        i = j + 1
    return x, long_runs
