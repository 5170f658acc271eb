"""Scores of a trained DialogueNeRF on its held-out frames: PSNR and SSIM per person and role, and
the mouth opening read from rendered against real speaker frames."""

from __future__ import annotations

import numpy as np
import torch

from minitalk import metrics
from minitalk.nerf.frames import Frames, mouth_boxes
from minitalk.nerf.render import render_frame


def evaluate(model, frames: Frames, device, eval_frames: int | None = None) -> dict:
    """PSNR and SSIM on the held-out frames (or `eval_frames` of them spread over the clip), per
    person and per role."""
    model.eval()
    held = torch.nonzero(frames.held_out)[:, 0].numpy()
    if eval_frames is not None and eval_frames < len(held):
        held = held[np.linspace(0, len(held) - 1, eval_frames).round().astype(int)]
    rows = []  # (person, speaking, psnr, ssim)
    for person in range(frames.n_people):
        for t in held:
            img = render_frame(model, frames, person, int(t), device)
            real = frames.images[person, int(t)].numpy().astype(np.float32) / 255
            rows.append(
                (person, bool(frames.speaking[person, t]), metrics.psnr(img, real), metrics.ssim(img, real))
            )
    model.train()

    def mean(sel, k):
        vals = [r[k] for r in rows if sel(r)]
        return round(float(np.mean(vals)), 4) if vals else None

    return {
        "psnr": [mean(lambda r, p=p: r[0] == p, 2) for p in range(frames.n_people)],
        "ssim": [mean(lambda r, p=p: r[0] == p, 3) for p in range(frames.n_people)],
        "psnr_speaker": mean(lambda r: r[1], 2),
        "psnr_listener": mean(lambda r: not r[1], 2),
        "ssim_speaker": mean(lambda r: r[1], 3),
        "ssim_listener": mean(lambda r: not r[1], 3),
    }


def mouth_measures(frames: Frames, model=None, device=None) -> tuple[np.ndarray, dict]:
    """How open the mouth is on every held-out speaker frame, read two ways at the crop size: on
    renderings by `model` from the frame's audio, or, without a model, on the real frames (each
    measure's ceiling).

    - "facemesh": FaceMesh's inner-lip gap over face width (`minitalk.prepare.face.mouth_opening`), NaN
      where it finds no face. At 128 px a face is about 50 px tall, and on the sample FaceMesh
      reads person 0's mouth only weakly even on the real frames (r 0.27 with the true opening,
      0.86 at the source's resolution); and its scale differs per face (on the sample, 0.060
      against 0.123 per unit of true opening), so both people pooled correlate with the truth
      at most 0.64, even from the full-resolution tracking.
    - "interior": the share of the tracked mouth box that is open mouth
      (`minitalk.metrics.mouth_interior`), read from pixels, so it needs no landmark model to find
      the lips in the image (on the sample's real frames: 0.98 / 0.95 at 128 px, 0.90 / 0.65 at 64).

    Returns (person, frame) pairs (M, 2) and {name: (M,)}.
    """
    from minitalk.prepare import face

    pairs = torch.nonzero(frames.speaking & frames.held_out[None]).numpy()
    openings, interiors = np.full(len(pairs), np.nan), np.empty(len(pairs))  # NaN: no face found
    with face.LandmarkTracker(static=True) as track:
        for i, (p, t) in enumerate(pairs):
            if model is None:
                img = frames.images[p, t].numpy()
            else:
                img = (render_frame(model, frames, int(p), int(t), device) * 255).round().astype(np.uint8)
            lm = track(img)
            if np.isfinite(lm).all():
                openings[i] = float(face.mouth_opening(lm))
            interiors[i] = metrics.mouth_interior(img, mouth_boxes(frames.landmarks[p, t], frames.size))
    return pairs, {"facemesh": openings, "interior": interiors}
