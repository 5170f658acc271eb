"""Faces: 478 MediaPipe FaceMesh landmarks per image.

MediaPipe 0.10.21 ships the FaceMesh models inside its wheel, so this runs
offline. The "refined" mesh has 468 face points plus 10 iris points; each point
comes with a relative depth. The data-preparation stages (head pose by PnP, the
expression basis of DialogueNeRF Eq. 1, blinks, masks) build on this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

import numpy as np

N_LANDMARKS = 478

# A few named FaceMesh indices (canonical face model numbering).
LIP_UPPER_INNER, LIP_LOWER_INNER = 13, 14
MOUTH_CORNERS = (61, 291)
CHIN, FOREHEAD = 152, 10
CHEEKS = (234, 454)
# per eye: (outer corner, inner corner, upper lid, lower lid), image-left eye first
EYES = ((33, 133, 159, 145), (362, 263, 386, 374))


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what MediaPipe's C++ side writes straight to file descriptor 2.

    Its start-up notices (TensorFlow Lite delegates, feedback tensors) carry
    timestamps and thread ids, which would clutter notebooks and logs. Python
    exceptions are unaffected: they are raised, and printed, after the
    descriptor is restored.
    """
    fd = 2  # the descriptor C++ writes to (not sys.stderr, which Jupyter replaces)
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _face_mesh(static: bool):
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static,
        max_num_faces=1,
        refine_landmarks=True,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    )


def detect_landmarks(images: Iterable[np.ndarray], static: bool = True) -> np.ndarray:
    """Landmarks (N, 478, 3) in pixels for each RGB uint8 image; NaN where no face.

    x and y are pixel coordinates; z is MediaPipe's relative depth scaled by the
    image width, so all three share one unit. `static=True` runs the face
    detector on every image independently (use it to ask "is there a face?");
    `static=False` tracks from frame to frame, as a video pipeline would.
    """
    out = []
    with _quiet_native_stderr(), _face_mesh(static) as mesh:
        for image in images:
            h, w = image.shape[:2]
            result = mesh.process(np.ascontiguousarray(image))
            pts = np.full((N_LANDMARKS, 3), np.nan, np.float32)
            if result.multi_face_landmarks:
                lm = result.multi_face_landmarks[0].landmark
                pts[:] = [(p.x * w, p.y * h, p.z * w) for p in lm]
            out.append(pts)
    return np.stack(out) if out else np.zeros((0, N_LANDMARKS, 3), np.float32)


def face_oval_indices() -> list[int]:
    """FaceMesh's face-oval contour as an ordered ring of landmark indices."""
    import mediapipe as mp

    edges = dict(mp.solutions.face_mesh.FACEMESH_FACE_OVAL)
    ring = [FOREHEAD]
    while len(ring) < len(edges):
        ring.append(edges[ring[-1]])
    return ring


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face width, (...,) from landmarks (..., 478, 2 or 3)."""
    gap = np.linalg.norm(landmarks[..., LIP_UPPER_INNER, :2] - landmarks[..., LIP_LOWER_INNER, :2], axis=-1)
    width = np.linalg.norm(landmarks[..., CHEEKS[0], :2] - landmarks[..., CHEEKS[1], :2], axis=-1)
    return gap / width


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Lid gap over eye width, averaged over both eyes: small when the eyes close."""
    ratios = []
    for outer, inner, up, low in EYES:
        gap = np.linalg.norm(landmarks[..., up, :2] - landmarks[..., low, :2], axis=-1)
        width = np.linalg.norm(landmarks[..., outer, :2] - landmarks[..., inner, :2], axis=-1)
        ratios.append(gap / width)
    return np.mean(ratios, axis=0)
