"""What FaceMesh reads on each person's panel of a clip, frame by frame: the inputs of the motion,
landmark and sync metrics.

The readings are the ones preparation takes from real footage (`minitalk.prepare`), so a rendered
clip and its real frames are measured the same way: 478 landmarks, the mouth opening (lip gap,
and the dark share of the mouth box), the eye aspect ratio and blinks, the head pose by PnP of a
canonical face, and the expression coefficients of DialogueNeRF Eq. 1. Pose and expression need a
face model (the canonical face, the camera, the expression basis): `FaceModel` takes it from a
prepared folder, or fits it on the reference's landmarks, so that both sides of a comparison are
read in one basis.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from minitalk import metrics
from minitalk.camera import focal_from_fov, intrinsic_matrix
from minitalk.evaluate.sharpness import cpbd
from minitalk.prepare import expression, face, headpose


@dataclass
class FaceModel:
    """One person's canonical face, camera and expression basis (DialogueNeRF Eq. 1)."""

    face3d: np.ndarray  # (478, 3) metres
    intrinsics: np.ndarray  # (3, 3) at the panel's size
    morphable: expression.MorphableModel  # one person: identity (1, D)

    @classmethod
    def from_tracks(cls, tracks: dict, person: int, size: int) -> FaceModel:
        """The face model preparation fitted (`tracks.npz`), its camera scaled to `size` px panels."""
        intrinsics = np.array(tracks["intrinsics"][person], np.float64)
        scale = size / (2 * intrinsics[0, 2])  # the crop's principal point sits at its centre
        intrinsics[:2] *= scale
        model = expression.MorphableModel(
            tracks["exp_mean"], tracks["exp_identity"][person : person + 1], tracks["exp_basis"], np.ones(1)
        )
        return cls(np.asarray(tracks["face3d"][person], np.float64), intrinsics, model)

    @classmethod
    def fit(cls, landmarks: np.ndarray, size: int, fov: float = 26.0, n_components: int = 16) -> FaceModel:
        """Fitted on one person's landmarks (T, 478, 3), as preparation fits it, with a pinhole camera
        of horizontal field of view `fov` (preparation's default) over a `size` px panel."""
        face3d = headpose.canonical_face(landmarks)
        found = np.isfinite(landmarks).all(axis=(1, 2))
        shapes = expression.normalise_landmarks(landmarks[found], face3d)
        intrinsics = intrinsic_matrix(focal_from_fov(size, fov), size, size)
        return cls(face3d, intrinsics, expression.MorphableModel.fit([shapes], n_components))


@dataclass
class FaceReadings:
    """One person's panel, read frame by frame (NaN where FaceMesh finds no face)."""

    landmarks: np.ndarray  # (T, 478, 3) panel pixels
    opening: np.ndarray  # (T,) lip gap / face width (`minitalk.prepare.face.mouth_opening`)
    interior: np.ndarray  # (T,) dark share of the mouth box (`minitalk.metrics.mouth_interior`)
    ear: np.ndarray  # (T,) eye aspect ratio
    cpbd: np.ndarray  # (T,) sharpness of the panel
    change: np.ndarray  # (T,) mean |panel_t - panel_t-1| / 255 inside the face's box (NaN: first frame)
    seam: np.ndarray  # (T,) the step across the head-torso boundary over the neck's usual row step

    @property
    def found(self) -> np.ndarray:
        return np.isfinite(self.landmarks).all(axis=(1, 2))

    def __len__(self) -> int:
        return len(self.landmarks)

    def take(self, index) -> FaceReadings:
        """The readings of some frames (an index array or a slice), e.g. to stitch clips."""
        return FaceReadings(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    @staticmethod
    def concatenate(parts: list[FaceReadings]) -> FaceReadings:
        return FaceReadings(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in FaceReadings.__dataclass_fields__)
        )

    def pose(self, model: FaceModel) -> np.ndarray:
        """Head pose (T, 6) by PnP of the canonical face, unsmoothed (a metric must see jitter)."""
        return headpose.solve_pose(self.landmarks, model.face3d, model.intrinsics)

    def expression(self, model: FaceModel) -> np.ndarray:
        """Expression coefficients (T, K) of Eq. 1 in the model's basis; NaN rows where no face."""
        out = np.full((len(self), len(model.morphable.basis)), np.nan)
        ok = self.found
        if ok.any():
            shapes = expression.normalise_landmarks(self.landmarks[ok], model.face3d)
            out[ok] = model.morphable.coefficients(shapes, 0)
        return out

    def blink(self) -> np.ndarray:
        """Blink (T,) in 0..1 from the eye aspect ratio, as preparation reads it."""
        ear = np.where(np.isfinite(self.ear), self.ear, np.nanmedian(self.ear) if self.found.any() else 0)
        return expression.blink_from_ear(ear)


def face_change(panel: np.ndarray, previous: np.ndarray, landmarks: np.ndarray) -> float:
    """Mean absolute difference (0..1) of two panels (S, S, 3) uint8 inside the face's bounding box
    (the landmarks' extent, clipped to the panel): how much the face changes from one frame to the
    next, which a viewer sees as flicker where the head is still."""
    size = panel.shape[0]
    x0, y0 = np.clip(np.floor(landmarks[:, :2].min(0)).astype(int), 0, size - 1)
    x1, y1 = np.clip(np.ceil(landmarks[:, :2].max(0)).astype(int) + 1, 1, size)
    a = panel[y0:y1, x0:x1].astype(np.float32)
    b = previous[y0:y1, x0:x1].astype(np.float32)
    return float(np.abs(a - b).mean() / 255) if a.size else float("nan")


def seam_contrast(panel: np.ndarray, landmarks: np.ndarray) -> float:
    """How sharply the image breaks where the head meets the torso, as a ratio (about 1-5 on real
    footage): the largest row-to-row step across the neck near the chin over the median step of
    the rows around it.

    The head and torso fields meet at a horizontal cut just below the chin (`prepare.masks`); a
    head that does not sit on its torso (shifted, or with background showing between them) adds
    a step along that line that no row of the neck has. Columns: the chin's x +- 0.3 face widths;
    rows: 0.1 face heights above the chin to 0.25 below, the boundary zone from 0.02 above to
    0.12 below. NaN where the band leaves the panel or holds no rows.
    """
    size = panel.shape[0]
    (cx, cy), fw = landmarks[face.CHIN, :2], float(metrics.face_width(landmarks))
    fh = float(np.linalg.norm(landmarks[face.CHIN, :2] - landmarks[face.FOREHEAD, :2]))
    x0, x1 = int(max(0, cx - 0.3 * fw)), int(min(size, cx + 0.3 * fw))
    y0, y1 = int(max(0, cy - 0.1 * fh)), int(min(size - 1, cy + 0.25 * fh))
    if x1 - x0 < 2 or y1 - y0 < 4:
        return float("nan")
    band = panel[y0 : y1 + 1, x0:x1].astype(np.float32)
    step = np.abs(band[1:] - band[:-1]).mean(axis=(1, 2))  # (rows,): row y to y + 1
    rows = np.arange(y0, y1)
    zone = (rows >= cy - 0.02 * fh) & (rows <= cy + 0.12 * fh)
    if not zone.any():
        return float("nan")
    return float(step[zone].max() / max(float(np.median(step)), 1e-3))


class FaceReader:
    """Reads panels one frame at a time (a video is streamed, never held whole): `reader(panel)`.

    FaceMesh tracks from frame to frame, as preparation does; the mouth box for the pixel measure
    is placed by the landmarks of the frame, or the last frame where a face was found.
    """

    def __init__(self):
        self._tracker = face.LandmarkTracker(static=False)
        self._last = None
        self._previous: np.ndarray | None = None  # the last panel, for the frame-to-frame change
        self.rows: list[tuple] = []

    def __enter__(self) -> FaceReader:
        self._tracker.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._tracker.__exit__(*exc)

    def __call__(self, panel: np.ndarray) -> None:
        lm = self._tracker(panel)
        found = bool(np.isfinite(lm).all())
        if found:
            self._last = lm
        opening = float(face.mouth_opening(lm)) if found else np.nan
        ear = float(face.eye_aspect_ratio(lm)) if found else np.nan
        interior = change = np.nan
        seam = seam_contrast(panel, lm) if found else np.nan
        if self._last is not None:
            box = face.mouth_boxes(self._last, panel.shape[0])
            if box.any():
                interior = metrics.mouth_interior(panel, box)
            if self._previous is not None:
                change = face_change(panel, self._previous, self._last)
        self._previous = panel
        self.rows.append((lm, opening, interior, ear, cpbd(panel), change, seam))

    def readings(self) -> FaceReadings:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [[]] * 7
        lm = np.stack(cols[0]) if self.rows else np.zeros((0, face.N_LANDMARKS, 3), np.float32)
        return FaceReadings(lm, *(np.asarray(c, np.float64) for c in cols[1:]))


class ThreadedReader:
    """A `FaceReader` fed through a bounded queue and run in its own thread.

    FaceMesh releases the GIL while it runs, so one thread per person reads a clip's people in
    parallel (on 2 cores, the time FaceMesh takes for two people halves); the queue keeps memory
    flat however long the clip. Used like a `FaceReader`; an error in the thread is raised in the
    caller at the next panel or on exit.
    """

    def __init__(self, queue_size: int = 32):
        self._reader = FaceReader()
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ThreadedReader:
        self._reader.__enter__()
        self._thread.start()
        return self

    def _run(self) -> None:
        while (panel := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._reader(panel)
                except BaseException as err:  # handed to the caller
                    self._error = err

    def __call__(self, panel: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(panel)

    def __exit__(self, *exc) -> None:
        self._queue.put(None)
        self._thread.join()
        self._reader.__exit__(*exc)
        if self._error is not None and exc[0] is None:
            raise self._error

    def readings(self) -> FaceReadings:
        return self._reader.readings()


def read_panels(panels) -> FaceReadings:
    """Readings of a sequence of one person's panels (T, S, S, 3) uint8, or any iterable of them."""
    with FaceReader() as reader:
        for panel in panels:
            reader(np.asarray(panel))
    return reader.readings()
