"""Head and torso masks and the background plate (DialogueNeRF section IV-B, AD-NeRF's parsing).

The NeRF renders a person as a head field and a torso field in front of a
fixed background image, so data preparation must say, per pixel and frame,
which of the three it sees. AD-NeRF uses a face-parsing network for this; we
use two MediaPipe models that ship in its wheel:

* the selfie segmenter gives the person (head, hair, neck, body) against the
  background;
* the FaceMesh face oval, grown to take in the hair and ears and cut at the
  chin, says which person pixels are head; the rest of the person is torso.

The background plate is the per-pixel median over the frames where the pixel
is not covered by the person (grown by a few pixels for the blurred edge);
pixels the person never uncovers (behind a head that never moves away) are
filled smoothly from the background around them (`fill_unseen`).

Labels: 0 background, 1 torso, 2 head.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from minitalk.prepare.face import CHIN, FOREHEAD, face_oval_indices
from minitalk.utils import quiet_native_stderr

BACKGROUND, TORSO, HEAD = 0, 1, 2


class PersonSegmenter:
    """MediaPipe's selfie segmenter, opened once for a stream of frames:
    `with PersonSegmenter() as seg: prob = seg(image)`, (H, W) float32 in 0..1 for RGB uint8."""

    def __enter__(self) -> PersonSegmenter:
        import mediapipe as mp  # lazy: a 0.7 s import (TensorFlow Lite), needed only where faces are tracked

        self._quiet = quiet_native_stderr()
        self._quiet.__enter__()
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        return self

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self._seg.process(np.ascontiguousarray(image)).segmentation_mask

    def __exit__(self, *exc) -> None:
        self._seg.close()
        self._quiet.__exit__(*exc)


def person_masks(images: np.ndarray) -> np.ndarray:
    """Person probability (T, H, W) float32 in 0..1 for RGB uint8 images (T, H, W, 3)."""
    with PersonSegmenter() as seg:
        return np.stack([seg(im) for im in images])


def head_region(landmarks: np.ndarray, shape: tuple[int, int], grow: float = 1.7) -> np.ndarray:
    """(H, W) bool where the head may be: the face oval widened by `grow` (ears, hair at the sides),
    open to the top of the image (hair of any height) and cut just below the chin (no neck).

    Only the person's pixels inside it become head, so the generous width takes
    in hair without taking in background. Hair hanging below the chin counts
    as torso, a limit of this landmark-based split.
    """
    oval = landmarks[face_oval_indices(), :2].astype(np.float64)
    centre = oval.mean(0)
    face_h = np.linalg.norm(landmarks[CHIN, :2] - landmarks[FOREHEAD, :2])
    grown = centre + (oval - centre) * [grow, 1.0]
    grown[grown[:, 1] < centre[1], 1] = -1.0  # the upper half reaches the top edge
    grown[:, 1] = np.minimum(grown[:, 1], landmarks[CHIN, 1] + 0.05 * face_h)
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [np.round(grown).astype(np.int32)], 1)
    return out.astype(bool)


def labels(person: np.ndarray, landmarks: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Per-frame labels (T, H, W) uint8 from person probabilities (T, H, W) and landmarks (T, 478, 2+)."""
    return np.stack([frame_labels(pr, lm, threshold) for pr, lm in zip(person, landmarks, strict=True)])


def frame_labels(person: np.ndarray, landmarks: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """One frame's labels (H, W) uint8 from its person probability (H, W) and landmarks (478, 2+)."""
    fg = person > threshold
    out = fg.astype(np.uint8) * TORSO
    if np.isfinite(landmarks).all():
        out[fg & head_region(landmarks, person.shape)] = HEAD
    return out


def background_plate(
    images: np.ndarray, person: np.ndarray, max_frames: int = 200, margin: int = 3
) -> np.ndarray:
    """(H, W, 3) uint8: median of each pixel over the frames where the person leaves it uncovered."""
    step = max(1, len(images) // max_frames)
    imgs, cover = images[::step], person[::step] > 0.1
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    cover = np.stack([cv2.dilate(c.astype(np.uint8), kernel) for c in cover]).astype(bool)
    stack = np.where(cover[..., None], np.nan, imgs.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels never uncovered: inpainted below
        plate = np.nanmedian(stack, axis=0)
    never_seen = ~np.isfinite(plate).all(axis=-1)
    plate = np.nan_to_num(plate)
    if never_seen.any():
        plate = fill_unseen(plate, never_seen)
    return plate.clip(0, 255).round().astype(np.uint8)


def fill_unseen(image: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """(H, W, C) float: `unseen` (H, W) pixels filled by pull-push (Gortler et al., "The
    Lumigraph", 1996, section 3.3): the seen pixels averaged down a pyramid with their weights,
    the coarse averages brought back up into the holes only.

    A hole the size of a head is filled with the smooth colour of the background around it.
    Inpainting by propagation (Telea) draws the border's colours inwards as streaks, which show
    wherever the rendered person is not fully opaque; a guess should be plain.
    """
    weight = (~unseen).astype(np.float32)
    levels = [(image.astype(np.float32) * weight[..., None], weight)]
    while min(levels[-1][1].shape) > 1 and (levels[-1][1] == 0).any():  # pull
        colour, w = levels[-1]
        levels.append((_half(colour), _half(w)))
    filled = levels[-1][0] / np.maximum(levels[-1][1], 1e-8)[..., None]
    for colour, w in reversed(levels[:-1]):  # push: fine levels keep what they saw
        up = cv2.resize(filled, (w.shape[1], w.shape[0]), interpolation=cv2.INTER_LINEAR)
        seen = np.clip(w, 0, 1)[..., None]
        filled = seen * colour / np.maximum(w, 1e-8)[..., None] + (1 - seen) * up
    return np.where(unseen[..., None], filled, image)


def _half(x: np.ndarray) -> np.ndarray:
    """Sum-pool by 2 (odd edges padded with zeros): weights and weighted colours alike."""
    h, w = x.shape[:2]
    x = np.pad(x, [(0, h % 2), (0, w % 2)] + [(0, 0)] * (x.ndim - 2))
    return x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]
