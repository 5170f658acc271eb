"""Expression and blinks from landmarks: a small morphable model (DialogueNeRF Eq. 1).

DialogueNeRF (section III-B, Eq. 1) describes a face shape as S = S_mean + B_id alpha + B_exp
beta. It fits a 3DMM with licensed bases; we build the same decomposition from the clip:

* landmarks are pose-normalised onto the person's canonical face (a similarity fitted on the
  rigid points), so only the face's own deformation is left;
* `S_mean` is the mean over both people; `B_id alpha_p` is person p's mean minus it;
* `B_exp` holds the principal components of the deviations from each person's mean, pooled over
  both people, so a coefficient means the same motion for each; `beta` [T, K] conditions the NeRF.

Blink (ER-NeRF's AU45 stand-in) comes from the eye aspect ratio, 0 open .. 1 closed, and is a
face-state value of its own: at render time the coefficients come from the audio or the
listener model, which never blink, and the blink planner sets only the blink. So each person's
blink direction is projected out before the basis is fitted, and no coefficient moves with a
blink (docs/results.md, "blinks carried by the blink value alone").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minitalk.prepare.face import eye_aspect_ratio, mouth_opening
from minitalk.prepare.headpose import align


def normalise_landmarks(landmarks: np.ndarray, face3d: np.ndarray) -> np.ndarray:
    """Landmarks (T, 478, 3) moved onto the canonical face (478, 3): head pose removed, metres."""
    return align(np.asarray(landmarks, dtype=np.float64), face3d).astype(np.float32)


@dataclass
class MorphableModel:
    """S = mean + identity[p] + basis^T @ coefficients, over flattened (478 * 3) shapes."""

    mean: np.ndarray  # (D,)
    identity: np.ndarray  # (P, D): person p's mean minus `mean`
    basis: np.ndarray  # (K, D): orthonormal expression directions
    stddev: np.ndarray  # (K,): the spread of each coefficient over the clip

    @classmethod
    def fit(
        cls, shapes: list[np.ndarray], n_components: int = 16, blinks: list | None = None
    ) -> MorphableModel:
        """Fit on the normalised landmarks of each person, a list of (T_p, 478, 3), with the blink
        directions projected out (`blink_directions`); `blinks` defaults to each person's blink
        read from the same landmarks (`blink_from_ear`)."""
        flat = [s.reshape(len(s), -1).astype(np.float64) for s in shapes]
        person_means = np.stack([f.mean(0) for f in flat])
        mean = person_means.mean(0)
        deviations = [f - m for f, m in zip(flat, person_means, strict=True)]  # (T_p, D) each
        if blinks is None:
            blinks = [blink_from_ear(eye_aspect_ratio(s)) for s in shapes]
        q = blink_directions(deviations, blinks)  # (D, <= P), orthonormal
        residual = np.concatenate(deviations)
        residual = residual - (residual @ q) @ q.T  # the deviations with no blink left in them
        _, sv, vt = np.linalg.svd(residual, full_matrices=False)
        k = min(n_components, len(vt))
        stddev = sv[:k] / np.sqrt(max(len(residual) - 1, 1))
        return cls(mean, person_means - mean, vt[:k], stddev)

    def coefficients(self, shapes: np.ndarray, person: int) -> np.ndarray:
        """Expression coefficients beta (T, K) of normalised landmarks (T, 478, 3) of `person`."""
        flat = shapes.reshape(len(shapes), -1) - self.mean - self.identity[person]
        return (flat @ self.basis.T).astype(np.float32)

    def shape(self, expression: np.ndarray, person: int) -> np.ndarray:
        """Eq. 1 forward: landmarks (..., 478, 3) from coefficients (..., K)."""
        flat = self.mean + self.identity[person] + np.asarray(expression) @ self.basis  # Eq. 1 (beta)
        return flat.reshape(*np.shape(expression)[:-1], -1, 3)

    def explained(self, shapes: list[np.ndarray]) -> float:
        """Fraction of the expression variance (about each person's mean) the basis keeps."""
        total = kept = 0.0
        for p, s in enumerate(shapes):
            flat = s.reshape(len(s), -1) - self.mean - self.identity[p]
            total += (flat**2).sum()
            kept += ((flat @ self.basis.T) ** 2).sum()
        return float(kept / total)


def blink_directions(deviations: list[np.ndarray], blinks: list) -> np.ndarray:
    """An orthonormal basis (D, n) of the people's blink directions in shape space.

    Person p's direction is the least-squares shape change per unit of blink,
    d_p = X_p^T (b_p - mean b_p) / |b_p - mean b_p|^2, with X_p (T_p, D) their deviations from
    their mean shape; removing the span of the d_p leaves every coefficient uncorrelated with each
    person's blink over the clip. A person who never blinks adds no direction."""
    directions = []
    for x, b in zip(deviations, blinks, strict=True):
        b = np.asarray(b, np.float64)
        centred = b - b.mean()
        if np.isfinite(centred).all() and centred @ centred > 1e-9:
            directions.append(x.T @ centred / (centred @ centred))
    if not directions:
        return np.zeros((deviations[0].shape[1], 0))
    q, r = np.linalg.qr(np.stack(directions, axis=1))
    return q[:, np.abs(np.diag(r)) > 1e-12]


def blink_from_ear(ear: np.ndarray) -> np.ndarray:
    """Eye aspect ratio (T,) -> blink (T,) in 0..1, 1 = closed.

    The open level is the clip's 80th percentile, and "closed" is taken as 30%
    of it, the lids' gap at a full blink measured on FaceMesh eyes; values in
    between map linearly. Robust to a person's eye shape, since both levels
    come from their own clip.
    """
    ear = np.asarray(ear, dtype=np.float64)
    open_level = np.nanpercentile(ear, 80)
    closed_level = 0.3 * open_level
    return np.clip((open_level - ear) / (open_level - closed_level), 0.0, 1.0).astype(np.float32)


def events(x: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int]]:
    """Runs of frames (first, last inclusive) where x exceeds threshold."""
    above = np.concatenate([[False], np.asarray(x) > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def event_f1(predicted: np.ndarray, truth: np.ndarray, threshold: float = 0.5, tolerance: int = 2) -> float:
    """F1 of detected events against true ones; a match is an overlap within `tolerance` frames."""
    pred, true = events(predicted, threshold), events(truth, threshold)
    if not pred and not true:
        return 1.0
    used = set()
    hits = 0
    for a, b in true:
        for j, (c, d) in enumerate(pred):
            if j not in used and c <= b + tolerance and d >= a - tolerance:
                used.add(j)
                hits += 1
                break
    precision = hits / len(pred) if pred else 0.0
    recall = hits / len(true) if true else 0.0
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


__all__ = [
    "MorphableModel",
    "blink_directions",
    "blink_from_ear",
    "event_f1",
    "events",
    "eye_aspect_ratio",
    "mouth_opening",
    "normalise_landmarks",
]
