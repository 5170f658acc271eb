"""Scores of a trained DialogueNeRF on its held-out frames: PSNR and SSIM per person and role, the
torso's PSNR and the error at the seam where the neck meets the body, and the mouth opening read
from rendered against real speaker frames."""

from __future__ import annotations

import numpy as np
import torch

from minitalk import metrics
from minitalk.nerf.frames import Frames
from minitalk.nerf.render import render_frame
from minitalk.prepare import face
from minitalk.prepare.face import mouth_boxes
from minitalk.prepare.masks import HEAD, TORSO


def frame_scores(model, frames: Frames, device, eval_frames: int | None = None) -> list[dict]:
    """One row per held-out (person, frame): {"person", "frame", "speaking", "psnr", "ssim"}, on
    all held-out frames or `eval_frames` of them spread over the clip."""
    model.eval()
    rows = []
    for person in range(frames.n_people):
        held = torch.nonzero(frames.held_out[person])[:, 0].numpy()
        if eval_frames is not None and eval_frames < len(held):
            held = held[np.linspace(0, len(held) - 1, eval_frames).round().astype(int)]
        for t in held:
            img = render_frame(model, frames, person, int(t), device)
            real = frames.images[person, int(t)].numpy().astype(np.float32) / 255
            rows.append({"person": person, "frame": int(t), "speaking": bool(frames.speaking[person, t]),
                         "psnr": metrics.psnr(img, real), "ssim": metrics.ssim(img, real)})  # fmt: skip
    model.train()
    return rows


def summarise(rows: list[dict], n_people: int = 2) -> dict:
    """Mean PSNR and SSIM per person, per role (both people pooled), and per person and role
    ([[speaker, listener] per person]; None where a person has no held-out frame in a role)."""

    def mean(key, **match):
        vals = [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
        return round(float(np.mean(vals)), 4) if vals else None

    out = {}
    for key in ("psnr", "ssim"):
        out[key] = [mean(key, person=p) for p in range(n_people)]
        out[f"{key}_speaker"], out[f"{key}_listener"] = mean(key, speaking=True), mean(key, speaking=False)
        out[f"{key}_by_role"] = [
            [mean(key, person=p, speaking=s) for s in (True, False)] for p in range(n_people)
        ]
    return out


def evaluate(model, frames: Frames, device, eval_frames: int | None = None) -> dict:
    """PSNR and SSIM on the held-out frames (or `eval_frames` of them spread over the clip), per
    person, per role, and per person and role (`summarise`)."""
    return summarise(frame_scores(model, frames, device, eval_frames), frames.n_people)


def seam_band(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within `width` of both the head and the torso in the real frames' labels (T, S, S)
    (`minitalk.prepare.masks`): where the neck joins the body, the place where a torso that does
    not follow its head shows (AD-NeRF's head-torso separation; ER-NeRF section 3.4)."""
    masks = np.stack([labels == HEAD, labels == TORSO], 1).astype(np.float32)  # (T, 2, S, S)
    near = torch.nn.functional.max_pool2d(torch.from_numpy(masks), 2 * width + 1, stride=1, padding=width) > 0
    return (near[:, 0] & near[:, 1]).numpy()


def region_scores(fake: np.ndarray, real: np.ndarray, labels: np.ndarray) -> dict:
    """Rendered against real frames (T, S, S, 3) in 0..1 with the real frames' labels (T, S, S):
    the torso's PSNR on its pixels, and the seam error, the mean absolute error in grey levels of
    255 on the `seam_band`, pixels within S / 32 of both (4 px at 128 px)."""
    band = seam_band(labels, width=max(2, labels.shape[-1] // 32))
    torso = labels == TORSO
    return {"torso_psnr": metrics.psnr(fake[torso], real[torso]),
            "seam_error": float(np.abs(fake[band] - real[band]).mean() * 255)}  # fmt: skip


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
    pairs = torch.nonzero(frames.speaking & frames.held_out).numpy()
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
