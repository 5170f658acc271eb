"""Faces: 478 MediaPipe FaceMesh landmarks per image.

MediaPipe 0.10.21 ships the FaceMesh models inside its wheel, so this runs
offline. The "refined" mesh has 468 face points plus 10 iris points; each point
comes with a relative depth. The data-preparation stages (head pose by PnP, the
expression basis of DialogueNeRF Eq. 1, blinks, masks) build on this module, and its landmark
geometry (mouth opening, eye aspect ratio, mouth boxes) is shared by training and evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from minitalk.utils import quiet_native_stderr

N_LANDMARKS = 478

# A few named FaceMesh indices (canonical face model numbering).
LIP_UPPER_INNER, LIP_LOWER_INNER = 13, 14
MOUTH_CORNERS = (61, 291)
CHIN, FOREHEAD = 152, 10
CHEEKS = (234, 454)
# per eye: (outer corner, inner corner, upper lid, lower lid), image-left eye first
EYES = ((33, 133, 159, 145), (362, 263, 386, 374))


def _face_mesh(static: bool):
    import mediapipe as mp  # lazy: a 0.7 s import (TensorFlow Lite), needed only where faces are tracked

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static,
        max_num_faces=1,
        refine_landmarks=True,
        min_detection_confidence=0.5,
        min_tracking_confidence=0.5,
    )


class LandmarkTracker:
    """FaceMesh on one image stream: `tracker(image)` -> (478, 3) pixels, NaN where no face.

    A context manager, so several streams (one per person) can be tracked side by
    side. x and y are pixel coordinates; z is MediaPipe's relative depth scaled
    by the image width, so all three share one unit. `static=True` runs the
    face detector on every image independently (use it to ask "is there a
    face?"); `static=False` tracks from frame to frame, as a video pipeline would.
    """

    def __init__(self, static: bool = False):
        self.static = static

    def __enter__(self) -> LandmarkTracker:
        self._quiet = quiet_native_stderr()
        self._quiet.__enter__()
        self._mesh = _face_mesh(self.static)
        return self

    def __exit__(self, *exc) -> None:
        self._mesh.close()
        self._quiet.__exit__(*exc)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        pts = np.full((N_LANDMARKS, 3), np.nan, np.float32)
        if result.multi_face_landmarks:
            pts[:] = [(p.x * w, p.y * h, p.z * w) for p in result.multi_face_landmarks[0].landmark]
        return pts


def detect_landmarks(images: Iterable[np.ndarray], static: bool = True) -> np.ndarray:
    """Landmarks (N, 478, 3) in pixels for each RGB uint8 image; NaN where no face (see LandmarkTracker)."""
    with LandmarkTracker(static) as track:
        out = [track(image) for image in images]
    return np.stack(out) if out else np.zeros((0, N_LANDMARKS, 3), np.float32)


def face_oval_indices() -> list[int]:
    """FaceMesh's face-oval contour as an ordered ring of landmark indices."""
    import mediapipe as mp  # lazy: a 0.7 s import (TensorFlow Lite), needed only where faces are tracked

    edges = dict(mp.solutions.face_mesh.FACEMESH_FACE_OVAL)
    ring = [FOREHEAD]
    while len(ring) < len(edges):
        ring.append(edges[ring[-1]])
    return ring


def identity_indices() -> list[int]:
    """Landmarks that expressions move least: the nose, the eyebrows and the eyes' corners. Their
    layout says whose face it is (the swaps of `minitalk.nerf.disentangle` keep it)."""
    import mediapipe as mp  # lazy: a 0.7 s import (TensorFlow Lite), needed only where faces are tracked

    mesh = mp.solutions.face_mesh
    edges = mesh.FACEMESH_NOSE | mesh.FACEMESH_LEFT_EYEBROW | mesh.FACEMESH_RIGHT_EYEBROW
    corners = {i for eye in EYES for i in eye[:2]}
    return sorted({i for edge in edges for i in edge} | corners)


def lip_indices() -> list[int]:
    """The 40 FaceMesh landmarks on the lips' outer and inner contours (Lip LMD's points)."""
    import mediapipe as mp  # lazy: a 0.7 s import (TensorFlow Lite), needed only where faces are tracked

    return sorted({i for edge in mp.solutions.face_mesh.FACEMESH_LIPS for i in edge})


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


def mouth_box_geometry(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mouth box of landmarks (..., 478, 3) in pixels: its centre (..., 2), between the corners
    and the lower lip, and its half width (...,), half the mouth's width beyond each corner; its
    half height is 0.6 of that."""
    corners = landmarks[..., list(MOUTH_CORNERS), :2]  # (..., 2, 2)
    centre = (corners.mean(axis=-2) + landmarks[..., LIP_LOWER_INNER, :2]) / 2
    return centre, 0.75 * np.linalg.norm(corners[..., 0, :] - corners[..., 1, :], axis=-1)


def mouth_boxes(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(..., S, S) bool: each frame's mouth box (`mouth_box_geometry`) from the tracked landmarks
    (..., 478, 3) in crop pixels."""
    centre, half = mouth_box_geometry(landmarks)
    grid = np.arange(size) + 0.5
    inside_x = np.abs(grid - centre[..., 0, None]) <= half[..., None]  # (..., S)
    inside_y = np.abs(grid - centre[..., 1, None]) <= 0.6 * half[..., None]
    return inside_y[..., :, None] & inside_x[..., None, :]


def detect_faces(image: np.ndarray, min_confidence: float = 0.5) -> np.ndarray:
    """Face boxes (n, 5) as (x0, y0, x1, y1, score) in pixels, left to right, by MediaPipe's face detector."""
    import mediapipe as mp  # lazy: a 0.7 s import (TensorFlow Lite), needed only where faces are tracked

    h, w = image.shape[:2]
    with (
        quiet_native_stderr(),
        mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_confidence
        ) as detector,
    ):
        result = detector.process(np.ascontiguousarray(image))
    boxes = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h, d.score[0]))
    boxes.sort(key=lambda b: b[0] + b[2])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 5)


def square_crop(
    landmarks: np.ndarray, region: tuple[int, int, int, int], scale: float = 2.4
) -> tuple[int, int, int]:
    """A fixed square crop (x0, y0, side) around a tracked face, padded down to take in the shoulders.

    `landmarks` (T, 478, 2+) are in the coordinates of `region` = (x0, y0, x1, y1)
    of the frame. The side is `scale` times the face's height (forehead to
    chin, the clip's median), the centre sits a third of a face height below
    the face's centre, and the square is shifted (and, if it must, shrunk) to
    stay inside the region.
    """
    rw, rh = region[2] - region[0], region[3] - region[1]
    centre = np.nanmedian(np.nanmean(landmarks[..., :2], axis=1), axis=0)
    face_h = np.nanmedian(np.linalg.norm(landmarks[:, CHIN, :2] - landmarks[:, FOREHEAD, :2], axis=-1))
    side = int(min(round(scale * face_h), rw, rh))
    cx, cy = centre[0], centre[1] + face_h / 3
    x0 = int(np.clip(round(cx - side / 2), 0, rw - side))
    y0 = int(np.clip(round(cy - side / 2), 0, rh - side))
    return x0, y0, side
