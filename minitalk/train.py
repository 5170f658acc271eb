"""Training DialogueNeRF on a prepared folder (`minitalk train DIR`), with exact resumption.

Each step draws a few frames across both people and both roles (never a
held-out one), a batch of pixels in each weighted toward the head and more
again toward the mouth, casts their rays from the frame's own head pose, and
renders them through the one model. Loss: L2 on colour (DialogueNeRF IV-B);
a silhouette term (opacity 1 on the person's pixels and 0 elsewhere, the
head field's on the head), which makes the fields opaque and empty space
empty, so the occupancy grids skip it; and a term that ties audio to mouth
shapes (expression regression and InfoNCE). A quarter of the speaker frames
are rendered from their tracked expression coefficients (teacher forcing),
the rest from the audio's prediction, so the field learns what a mouth shape
looks like from a clean signal and stays usable with the predicted one,
which is all it gets at rendering time (1,000 steps: a quarter scored 0.25-0.46 dB
above half on speaker frames over two seeds, and 0.4 above none). Adam with
separate learning rates for the grid texels and the MLPs, both falling tenfold
over the first 3,000 steps (exponentially, as the original NeRF's did over its
run) and then staying: as many steps as 10 minutes gave without it, speaker /
listener frames went from 30.1 / 33.5 to 30.3 / 34.5 dB (seed 0, 2,298 steps)
and from 29.7 / 33.0 to 30.4 / 34.4 (seed 1, 2,352 steps).

Each step first runs the fields without gradients to find where every ray
turns opaque, and differentiates only the samples in front of that
(`min_transmittance` = 1e-3; `DialogueNeRF.render_rays`, Instant-NGP's
compaction): on a trained model 60% of the samples in occupied cells lie
behind the face, inside the head. A head sample stays if it shows in the
merged head and torso composite or through the head alone; keeping only those
the head alone shows broke a 10-minute run down near step 2,950 (training PSNR
from 32 to 28 dB), since the head alone has longer sample lengths than the
composite and so hid samples the picture still showed. Measured on the sample,
held-out PSNR on speaker / listener frames, first with constant learning rates:

    3,300 steps   seed 0: 30.1 / 34.3 in 11.7 min, without it 30.4 / 34.1 in 14.0
                  seed 1: 30.5 / 33.8 in 10.6 min, without it 30.6 / 34.4 in 13.6
    10 minutes    seed 0: 2,736 steps 29.7 / 33.6, without it 2,298 steps 30.1 / 33.5
                  seed 1: 3,113 steps 30.2 / 33.5, without it 2,352 steps 29.7 / 33.0

A fifth less time per step and a little less learned per step. With the
decaying learning rates that loss per step is gone within noise (seed 0,
2,422 steps: 30.2 / 34.4 dB in 8.1 minutes against 30.3 / 34.4 in 10.0;
seed 1, 2,352 steps: 30.6 / 34.3 in 8.1 minutes against 30.4 / 34.4), and
10 minutes gain on both seeds and both roles, which made it the default:

    10 minutes    seed 0: 3,075 steps 30.4 / 34.6, without it 2,422 steps 30.3 / 34.4
                  seed 1: 3,016 steps 30.7 / 34.6, without it 2,425 steps 30.4 / 34.3

Not adopted: seed 002's velocity loss (Eq. 7), || (I_j - I_j-1) - (I_gt,j -
I_gt,j-1) ||^2 over the same pixels of consecutive frames, with the batch's 16
frames drawn as 8 such pairs. At 1,500 steps (seed 0) speaker / listener
frames scored 29.6 / 34.6 dB with weight 1 and 30.1 / 34.7 with weight 3
against 30.2 / 34.5 without; FaceMesh's mouth opening on person 1's rendered
speaker frames correlated with the true opening at 0.85 in all three, and the
pooled figure fell from 0.38 to 0.23 and 0.22.

Everything random comes from torch's global generator, whose state goes into
each checkpoint with the model and the optimiser, so an interrupted run
resumed from its last checkpoint ends with the same weights as an
uninterrupted one. Checkpoints are written atomically and read with
`torch.load(weights_only=True)`. A non-finite or exploding loss stops
training with the step named, leaving the last good checkpoint in place.
"""

from __future__ import annotations

import json
import resource
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minitalk import data, metrics
from minitalk.camera import camera_to_head
from minitalk.dialogue_nerf import DialogueNeRF, DialogueNeRFConfig
from minitalk.files import FORMAT_VERSION, FileFormatError, load_torch
from minitalk.utils import (
    MinitalkWarning,
    SettingError,
    atomic_path,
    get_device,
    keep_freed_memory,
    lowpass,
    set_seed,
    stop_on_interrupt,
)


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, or a checkpoint that does not fit); says what and where."""


class TrainingInterrupted(Exception):
    """Ctrl-C stopped training after a checkpoint of the current step and the report were written."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"interrupted at step {step}; checkpoint written to {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


class TrainingWarning(MinitalkWarning):
    """Training goes on, but something about the data or the run deserves a look."""


@dataclass(frozen=True)
class TrainConfig:
    iters: int = 4000
    minutes: float | None = None  # wall-clock budget; stops at whichever of iters / minutes comes first
    frames_per_batch: int = 16
    rays_per_frame: int = 256
    lr_grid: float = 2e-2
    lr_mlp: float = 2e-3
    lr_decay_steps: int = 3000  # both rates fall tenfold over these steps, then stay (0: constant)
    audio_weight: float = 0.05  # audio -> mouth: expression regression and InfoNCE alignment
    teacher_forcing: float = 0.25  # share of speaker frames rendered from the tracked, not predicted, state
    min_transmittance: float = 1e-3  # samples hidden behind this get no pass with gradients (0: all do)
    mask_weight: float = 0.1  # silhouettes: opacity 1 on the person and 0 elsewhere, the head's on the head
    face_weight: float = 4.0  # head pixels are drawn this much more often
    mouth_weight: float = 4.0  # and pixels around the mouth this much more again
    held_out_s: float = 1.0  # the last second of every ten is never trained on
    eval_every: int = 1000
    eval_frames: int | None = None  # held-out frames scored per person, spread over the clip; None: all
    checkpoint_every: int = 250
    occupancy_every: int = 16  # steps between occupancy-grid refreshes
    occupancy_warmup: int = 64  # every sample is evaluated until then
    seed: int = 0

    def __post_init__(self):
        if self.iters < 1:
            raise SettingError("iters", "at least 1", self.iters)
        if self.minutes is not None and not self.minutes > 0:
            raise SettingError("minutes", "positive", self.minutes)
        if self.held_out_s < 0:
            raise SettingError("held_out_s", "0 or more seconds", self.held_out_s)


MIN_HELD_OUT_FRAMES = 25  # fewer held-out frames than this make the scores noisy: say so


def held_out_frames(n_frames: int, fps: float, held_out_s: float = 1.0, short_share: float = 0.1):
    """(T,) bool: the frames never trained on, scored after training.

    The last `held_out_s` of every ten seconds, so held-out frames fall in every part of
    the clip; a clip that has none of those (under ten seconds) holds out its last
    `short_share` instead, so every run is scored on something it never saw.
    """
    second = np.arange(n_frames) / fps
    held = (second % 10.0) >= 10.0 - held_out_s
    if held_out_s > 0 and not held.any() and n_frames > 1:
        held[-max(1, int(round(short_share * n_frames))) :] = True
    return held


# --- the prepared data as tensors --------------------------------------------------------------


class Frames:
    """A prepared folder as tensors: images, pixel weights, cameras, conditions, boxes."""

    def __init__(self, folder, face_weight: float = 4.0, held_out_s: float = 1.0, smooth_frames: int = 8,
                 mouth_weight: float = 4.0, torso_lag_s: float = 0.5):  # fmt: skip
        tracks = data.load_tracks(folder)
        labels, plates = data.load_masks(folder)
        self.fps = float(tracks["fps"])
        self.images = torch.from_numpy(np.stack([data.read_person_frames(folder, p) for p in range(2)]))
        self.n_people, self.n_frames, self.size = self.images.shape[:3]
        weights = np.where(labels == 2, face_weight, 1.0).astype(np.float32)
        self.landmarks = tracks["landmarks"]  # (P, T, 478, 3) in crop pixels
        weights[mouth_boxes(self.landmarks, labels.shape[-1])] *= mouth_weight
        self.weights = torch.from_numpy(weights.reshape(self.n_people, self.n_frames, -1))
        self.labels = torch.from_numpy(labels.reshape(self.n_people, self.n_frames, -1))  # 0, 1 torso, 2 head
        self.background = torch.from_numpy(plates.astype(np.float32) / 255).reshape(self.n_people, -1, 3)
        self._plates = {self.size: self.background}
        self.k = torch.from_numpy(tracks["intrinsics"].astype(np.float32))
        pose = frame_poses(tracks)
        self.pose = torch.from_numpy(pose.astype(np.float32))  # (P, T, 6)
        self.c2w = torch.from_numpy(camera_to_head(pose).astype(np.float32))  # (P, T, 4, 4)
        self.et = torch.from_numpy(pose_condition(pose, self.fps, torso_lag_s))  # the torso's condition
        self.mel = torch.from_numpy(tracks["mel"].astype(np.float32))  # (T, 16, 80)
        offsets = np.arange(smooth_frames) - smooth_frames // 2
        self.mel_index = torch.from_numpy(
            np.clip(np.arange(self.n_frames)[:, None] + offsets, 0, self.n_frames - 1)
        )
        exp = tracks["expression"].astype(np.float32)
        self.expression = torch.from_numpy(exp / (exp.reshape(-1, exp.shape[-1]).std(0) + 1e-8))
        self.blink = torch.from_numpy(tracks["blink"].astype(np.float32))
        self.speaking = torch.from_numpy(tracks["speaking"])
        self.mouth = tracks["mouth"]
        self.held_out = torch.from_numpy(held_out_frames(self.n_frames, self.fps, held_out_s))  # (T,)
        self.head_box = head_box(tracks["face3d"])
        self.torso_boxes = torso_boxes(pose)

    @classmethod
    def for_training(cls, folder, cfg: TrainConfig, mcfg: DialogueNeRFConfig) -> Frames:
        """The frames as a training run with these settings sees them."""
        return cls(folder, cfg.face_weight, cfg.held_out_s, mcfg.smooth_frames, cfg.mouth_weight,
                   mcfg.torso_lag_s)  # fmt: skip

    def condition_inputs(self, person: torch.Tensor, frame: torch.Tensor) -> tuple:
        """What `DialogueNeRF.condition` takes for frames (person, frame) (B,)."""
        mel = self.mel[self.mel_index[frame]]  # (B, W, 16, 80)
        return mel, self.expression[person, frame], self.blink[person, frame], self.speaking[person, frame]

    def rays(self, person: torch.Tensor, frame: torch.Tensor, pixel: torch.Tensor,
             size: int | None = None) -> dict:  # fmt: skip
        """Rays through pixels (flat indices) of frames (person, frame), all (N,).

        `size` puts the pixels on a finer (or coarser) size x size grid over the same view, as a
        field renders at any resolution: the camera's pixel units scale by size / self.size, and
        the background plate is resampled (`plates`).
        """
        size = size or self.size
        fx, fy, cx, cy = (self.k[person, i, j] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
        scale = self.size / size  # pixel centres, in the units of the grid the camera was calibrated on
        u = ((pixel % size).float() + 0.5) * scale
        v = ((pixel // size).float() + 0.5) * scale
        d = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], -1)
        d_cam = d / d.norm(dim=-1, keepdim=True)
        c2w = self.c2w[person, frame]
        return {
            "o_head": c2w[:, :3, 3],
            "d_head": torch.einsum("nij,nj->ni", c2w[:, :3, :3], d_cam),
            "d_cam": d_cam,
            "person": person,
            "et": self.et[person, frame],
            "background": self.plates(size)[person, pixel],
            # the tracked pose and face state, from which DialogueNeRF.corrected_rays corrects the camera
            "pose": self.pose[person, frame],
            "tracked": torch.cat([self.expression[person, frame], self.blink[person, frame, None]], -1),
        }

    def plates(self, size: int) -> torch.Tensor:
        """The background plates (P, size * size, 3), resampled bilinearly to size x size (cached)."""
        if size not in self._plates:
            square = self.background.reshape(self.n_people, self.size, self.size, 3).permute(0, 3, 1, 2)
            resized = F.interpolate(square, (size, size), mode="bilinear", antialias=True)
            self._plates[size] = resized.permute(0, 2, 3, 1).reshape(self.n_people, -1, 3).contiguous()
        return self._plates[size]

    def target(self, person, frame, pixel) -> torch.Tensor:
        """True colours (N, 3) in 0..1 of pixels (flat indices) of frames (person, frame)."""
        flat = (person * self.n_frames + frame) * self.size * self.size + pixel
        return self.images.reshape(-1, 3)[flat].float() / 255


def frame_poses(tracks: dict) -> np.ndarray:
    """The head pose (P, T, 6) that places each frame's camera: the frame's own PnP solution
    (`pose_raw`), not the smoothed `pose` (which is finite exactly where `pose_raw` is: one gap
    would leave the smoothing nothing finite).

    Smoothing trades each frame's fit to its own landmarks for a steady track, which is what a
    pose model should learn from; the field instead learns sharp outlines only from cameras that
    match their images. On the sample, smoothing lags the nods of a speaker: while speaking, the
    rigid landmarks reproject 0.92-0.93 px off under the smoothed pose and 0.65-0.68 px under the
    frame's own, and 5-minute training runs reached held-out PSNR 33.0 / 29.2 dB (person 0 / 1,
    8 frames each) with the frames' own poses against 32.3 / 28.7 with the smoothed ones.
    """
    return tracks["pose_raw"].astype(np.float64)


def pose_condition(pose: np.ndarray, fps: float, lag_s: float = 0.5) -> np.ndarray:
    """The torso's condition et from head poses (P, T, 6): (P, T, 6), or (P, T, 12) with lag_s > 0.

    Euler angles in units of 30 degrees and translations in decimetres from the person's mean
    position; with a lag, the same pose smoothed causally (a first-order low-pass of time
    constant lag_s) follows: a body trails its head, so where the shoulders are depends on
    where the head has been, not only where it is now.
    """
    mean_t = pose[..., 3:].mean(axis=1, keepdims=True)
    et = np.concatenate([pose[..., :3] / 30.0, (pose[..., 3:] - mean_t) * 10.0], axis=-1)
    if lag_s > 0:
        trail = np.moveaxis(lowpass(np.moveaxis(et, 1, -1), fps, lag_s), -1, 1)  # along time
        et = np.concatenate([et, trail], axis=-1)
    return et.astype(np.float32)


def mouth_boxes(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(..., S, S) bool: a box around each frame's mouth (corners and lips, widened by half the
    mouth's width) from the tracked landmarks (..., 478, 3) in crop pixels."""
    from minitalk.face import LIP_LOWER_INNER, MOUTH_CORNERS

    corners = landmarks[..., list(MOUTH_CORNERS), :2]  # (..., 2, 2)
    centre = (corners.mean(axis=-2) + landmarks[..., LIP_LOWER_INNER, :2]) / 2
    half = 0.75 * np.linalg.norm(corners[..., 0, :] - corners[..., 1, :], axis=-1)  # (...,)
    grid = np.arange(size) + 0.5
    inside_x = np.abs(grid - centre[..., 0, None]) <= half[..., None]  # (..., S)
    inside_y = np.abs(grid - centre[..., 1, None]) <= 0.6 * half[..., None]
    return inside_y[..., :, None] & inside_x[..., None, :]


def head_box(face3d: np.ndarray) -> np.ndarray:
    """(2, 3) box in the head frame around both canonical faces: hair above, skull behind, no neck."""
    lo, hi = face3d.min(axis=(0, 1)), face3d.max(axis=(0, 1))
    height = hi[1] - lo[1]
    return np.array(
        [
            [lo[0] - 0.03, lo[1] - 0.35 * height, lo[2] - 0.02],
            [hi[0] + 0.03, hi[1] + 0.05 * height, lo[2] + 0.2],
        ],
        np.float32,
    )


def torso_boxes(pose: np.ndarray) -> np.ndarray:
    """(P, 2, 3) camera-frame boxes below each person's mean head position, shoulders wide."""
    t = pose[..., 3:].mean(axis=1)  # (P, 3)
    lo = t + np.array([-0.32, -0.02, -0.15])
    hi = t + np.array([0.32, 0.5, 0.3])
    return np.stack([lo, hi], axis=1).astype(np.float32)


# --- training ------------------------------------------------------------------------------------


def learning_rate_factor(step: int, decay_steps: int) -> float:
    """0.1 ** (step / decay_steps) up to `decay_steps`, 0.1 after (1 throughout when decay_steps is 0).

    A function of the step alone, so a run resumed from a checkpoint follows the same schedule
    whatever its budget in minutes."""
    return 0.1 ** min(step / decay_steps, 1.0) if decay_steps > 0 else 1.0


def train(folder, run_dir=None, model_config: DialogueNeRFConfig | None = None, resume: bool = True,
          progress: bool = True, **train_settings) -> dict:  # fmt: skip
    """Train (or resume) a DialogueNeRF on prepared `folder`; returns the report also written to the run."""
    from tqdm.auto import tqdm

    cfg = TrainConfig(**train_settings)
    mcfg = model_config or DialogueNeRFConfig()
    frames = Frames.for_training(folder, cfg, mcfg)  # checks the folder before anything is written
    run = Path(run_dir) if run_dir is not None else Path(folder) / "run"
    run.mkdir(parents=True, exist_ok=True)
    n_held = int(frames.held_out.sum())
    if n_held < MIN_HELD_OUT_FRAMES:
        warnings.warn(
            f"{folder}: only {n_held} held-out frames ({frames.n_frames} in the clip); "
            "the held-out scores will be noisy",
            TrainingWarning,
            stacklevel=2,
        )
    device = get_device()
    keep_freed_memory()
    set_seed(cfg.seed)
    model = DialogueNeRF(mcfg, frames.head_box, frames.torso_boxes).to(device)
    optim = torch.optim.Adam(
        [
            {"params": model.grid_parameters(), "lr": cfg.lr_grid},
            {"params": model.mlp_parameters(), "lr": cfg.lr_mlp},
        ],
        betas=(0.9, 0.99),
    )
    step, elapsed, history = 0, 0.0, []
    ckpt = run / "checkpoint.pt"
    if resume and ckpt.is_file():
        try:
            step, elapsed, history = load_checkpoint(ckpt, model, optim, mcfg, cfg)
        except FileFormatError as err:
            raise TrainingError(f"{err}; resuming needs a good one (start over with --fresh)") from None
    train_pairs = torch.nonzero(~frames.held_out[None].expand(frames.n_people, -1))  # (M, 2): person, frame
    speaker_pairs = torch.nonzero(frames.speaking & ~frames.held_out[None])
    start = time.perf_counter() - elapsed
    recent: list[float] = []
    bar = tqdm(total=cfg.iters, initial=step, desc="train", unit="it", disable=not progress)
    with stop_on_interrupt() as stop:
        while step < cfg.iters and not stop.requested:
            if cfg.minutes is not None and time.perf_counter() - start >= 60 * cfg.minutes:
                break
            for group, rate in zip(optim.param_groups, (cfg.lr_grid, cfg.lr_mlp), strict=True):
                group["lr"] = rate * learning_rate_factor(step, cfg.lr_decay_steps)
            loss, psnr = train_step(model, optim, frames, train_pairs, speaker_pairs, cfg, device)
            step += 1
            if mcfg.skipping and step >= cfg.occupancy_warmup and step % cfg.occupancy_every == 0:
                refresh_occupancy(model, frames, train_pairs, device)
            if not np.isfinite(loss) or (len(recent) >= 50 and loss > 100 * np.median(recent)):
                raise TrainingError(
                    f"{folder}: training diverged at step {step} (loss {loss:.3g}); "
                    f"the last good checkpoint (step {_checkpoint_step(ckpt)}) is kept in {ckpt}"
                )
            recent = (recent + [loss])[-200:]
            history.append([step, round(loss, 6), round(psnr, 3)])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr:.1f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.iters:
                save_checkpoint(ckpt, model, optim, mcfg, cfg, step, time.perf_counter() - start, history)
            if step % cfg.eval_every == 0 and not stop.requested:
                bar.write(f"step {step}: held-out PSNR {evaluate(model, frames, cfg, device)['psnr']}")
        bar.close()
        minutes = (time.perf_counter() - start) / 60
        save_checkpoint(ckpt, model, optim, mcfg, cfg, step, minutes * 60, history)
        interrupted = stop.requested
    if interrupted:  # the scores wait for a finished run: the user asked to stop now
        roles = ("psnr_speaker", "psnr_listener", "ssim_speaker", "ssim_listener")
        no_scores = dict.fromkeys(("psnr", "ssim", *roles))
        scores = {**no_scores, "note": f"interrupted at step {step}; run the same command again to resume"}
    else:
        scores = evaluate(model, frames, cfg, device)
    report = {
        "iterations": step,
        "interrupted": interrupted,
        "minutes": round(minutes, 2),
        **scores,
        "held_out_frames": n_held,
        "peak_mem_gb": round(peak_memory_gb(device), 3),
        "device": str(device),
        "model": mcfg.to_dict(),
        "train": asdict(cfg),
        "history": history[:: max(1, len(history) // 200)],
    }
    with atomic_path(run / "train_report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    if interrupted:
        raise TrainingInterrupted(step, ckpt)
    return report


def train_step(model, optim, frames: Frames, train_pairs, speaker_pairs, cfg: TrainConfig, device):
    """One optimisation step; returns the loss and the batch's PSNR."""
    pick = train_pairs[torch.randint(len(train_pairs), (cfg.frames_per_batch,))]
    person_f, frame_f = pick[:, 0], pick[:, 1]
    pixels = torch.multinomial(
        frames.weights[person_f, frame_f], cfg.rays_per_frame, replacement=True
    )  # (F, R)
    person = person_f.repeat_interleave(cfg.rays_per_frame)
    frame = frame_f.repeat_interleave(cfg.rays_per_frame)
    pixel = pixels.reshape(-1)
    rays = {k: v.to(device) for k, v in frames.rays(person, frame, pixel).items()}
    target = frames.target(person, frame, pixel).to(device)
    mel, exp, blink, speaking = frames.condition_inputs(person_f, frame_f)
    speaking = speaking & (torch.rand(len(speaking)) >= cfg.teacher_forcing)  # forced: tracked coefficients
    cond_f = model.condition(mel.to(device), exp.to(device), blink.to(device), speaking.to(device))
    cond = cond_f.repeat_interleave(cfg.rays_per_frame, dim=0)
    out = model.render_rays(rays, cond, min_transmittance=cfg.min_transmittance)
    mse = ((out["colour"] - target) ** 2).mean()
    loss = mse
    if cfg.mask_weight > 0:  # silhouettes make the fields opaque where people are, empty elsewhere
        label = frames.labels[person, frame, pixel].to(device)
        person_px, head_px = (label > 0).float(), (label == 2).float()
        silhouette = ((out["opacity"] - person_px) ** 2).mean()
        silhouette = silhouette + ((out["head_opacity"] - head_px) ** 2).mean()
        loss = loss + cfg.mask_weight * silhouette
    if cfg.audio_weight > 0 and len(speaker_pairs) >= 2:
        sp = speaker_pairs[torch.randint(len(speaker_pairs), (32,))]
        mel, exp, _, _ = frames.condition_inputs(sp[:, 0], sp[:, 1])
        loss = loss + cfg.audio_weight * model.audio_loss(mel.to(device), exp.to(device))
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return float(loss.detach()), float(-10 * torch.log10(mse.detach()))


@torch.no_grad()
def refresh_occupancy(model, frames: Frames, train_pairs, device) -> None:
    """Fold the fields' densities into the occupancy grids, under a random training frame per person."""
    conds, ets = [], []
    for p in range(frames.n_people):
        mine = train_pairs[train_pairs[:, 0] == p]
        _, t = mine[torch.randint(len(mine), (1,))][0]
        one = torch.tensor([p]), t[None]
        conds.append(model.condition(*(x.to(device) for x in frames.condition_inputs(*one))))
        ets.append(frames.et[p, t][None].to(device))
    model.update_occupancy(torch.cat(conds), torch.cat(ets))


@torch.no_grad()
def render_frame(model, frames: Frames, person: int, frame: int, device, chunk: int = 16384,
                 parts: bool = False, state=None, size: int | None = None):  # fmt: skip
    """A whole (S, S, 3) image (and with `parts` the head-only and torso-only images).

    `state` (1, K + 1) replaces the frame's own face state (`DialogueNeRF.condition`): to render
    a frame with another frame's audio or with an edited expression. `size` renders the same view
    at another resolution than the frames' own S (`Frames.rays`). Rendering runs front to back
    with early ray termination (`render_rays_front_to_back`) unless `parts` are asked for.
    """
    keep_freed_memory()
    size = size or frames.size
    n = size * size
    pixel = torch.arange(n)
    p = torch.full((n,), person, dtype=torch.long)
    f = torch.full((n,), frame, dtype=torch.long)
    if state is None:
        one = torch.tensor([person]), torch.tensor([frame])
        state = model.condition(*(x.to(device) for x in frames.condition_inputs(*one)))
    keys = ("colour", "head", "torso") if parts else ("colour",)
    out = {k: [] for k in keys}
    for i in range(0, n, chunk):
        rays = {
            k: v.to(device)
            for k, v in frames.rays(p[i : i + chunk], f[i : i + chunk], pixel[i : i + chunk], size).items()
        }
        cond = state.to(device).expand(len(rays["person"]), -1)
        if parts:
            res = model.render_rays(rays, cond, jitter=False, parts=True)
        else:
            res = model.render_rays_front_to_back(rays, cond)
        for k in keys:
            out[k].append(res[k].cpu())
    imgs = {k: torch.cat(v).reshape(size, size, 3).clamp(0, 1).numpy() for k, v in out.items()}
    return imgs if parts else imgs["colour"]


def evaluate(model, frames: Frames, cfg: TrainConfig, device) -> dict:
    """PSNR and SSIM on the held-out frames (or `cfg.eval_frames` of them spread over the clip), per
    person and per role."""
    model.eval()
    held = torch.nonzero(frames.held_out)[:, 0].numpy()
    if cfg.eval_frames is not None and cfg.eval_frames < len(held):
        held = held[np.linspace(0, len(held) - 1, cfg.eval_frames).round().astype(int)]
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

    - "facemesh": FaceMesh's inner-lip gap over face width (`minitalk.face.mouth_opening`), NaN
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
    from minitalk import face

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


# --- checkpoints ---------------------------------------------------------------------------------


CHECKPOINT_KEYS = ("model", "optim", "model_config", "train_config", "step", "elapsed", "history",
                   "torch_rng")  # fmt: skip


def save_checkpoint(path: Path, model, optim, mcfg, cfg, step: int, elapsed: float, history) -> None:
    state = {
        "model": model.state_dict(),
        "optim": optim.state_dict(),
        "model_config": mcfg.to_dict(),
        "train_config": asdict(cfg),
        "step": step,
        "elapsed": elapsed,
        "history": history,
        "torch_rng": torch.get_rng_state(),
        "format_version": FORMAT_VERSION,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model, optim, mcfg, cfg) -> tuple[int, float, list]:
    """Restore a run; refuse one whose model or training settings differ (iters and minutes may)."""
    state = load_torch(path, "checkpoint", CHECKPOINT_KEYS)
    if state["model_config"] != mcfg.to_dict():
        diff = {k for k in state["model_config"] if state["model_config"][k] != mcfg.to_dict().get(k)}
        raise TrainingError(f"{path}: a checkpoint of another model config (differs in {sorted(diff)})")
    fixed = {f.name for f in fields(TrainConfig)} - {"iters", "minutes", "eval_every"}
    saved = {**asdict(TrainConfig()), **state["train_config"]}  # a setting added since: its default
    diff = {k for k in fixed if saved[k] != asdict(cfg)[k]}
    if diff:
        raise TrainingError(f"{path}: a checkpoint trained with other settings (differs in {sorted(diff)})")
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed"]), list(state["history"])


def load_model(run_dir, folder) -> tuple[DialogueNeRF, Frames]:
    """A trained model from `run_dir/checkpoint.pt` with the prepared data it was trained on."""
    path = Path(run_dir) / "checkpoint.pt"
    state = load_torch(path, "checkpoint", CHECKPOINT_KEYS)
    mcfg = DialogueNeRFConfig(**state["model_config"])
    tcfg = TrainConfig(**state["train_config"])
    frames = Frames.for_training(folder, tcfg, mcfg)
    model = DialogueNeRF(mcfg, frames.head_box, frames.torso_boxes)
    model.load_state_dict(state["model"])
    return model.eval(), frames


def _checkpoint_step(path: Path):
    if not path.is_file():
        return None
    return int(load_torch(path, "checkpoint", CHECKPOINT_KEYS)["step"])


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def export_model(run_dir, path) -> Path:
    """A trained model, slimmed for shipping: the weights and the occupancy grids in float16,
    without the optimiser or the grids' running densities (which only training needs)."""
    state = load_torch(Path(run_dir) / "checkpoint.pt", "checkpoint", CHECKPOINT_KEYS)
    weights = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in state["model"].items()
        if not k.endswith(".density")
    }
    out = {
        "model": weights,
        "model_config": state["model_config"],
        "train_config": state["train_config"],
        "step": state["step"],
        "format_version": FORMAT_VERSION,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path


def load_exported(path, folder) -> tuple[DialogueNeRF, Frames]:
    """A model written by `export_model`, in float32, ready to render, with the prepared data of
    `folder` as its training run saw it (held-out frames, condition windows: the exported settings)."""
    state = load_torch(path, "model export", ("model", "model_config", "train_config"))
    try:
        mcfg = DialogueNeRFConfig(**state["model_config"])
        tcfg = TrainConfig(**state["train_config"])
    except (KeyError, TypeError) as err:
        raise TrainingError(f"{path}: not a minitalk model export ({err})") from None
    model = DialogueNeRF(mcfg, torch.zeros(2, 3), torch.zeros(2, 2, 3))  # boxes: loaded with the weights
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    missing = {k for k in set(model.state_dict()) - set(weights) if not k.endswith(".density")}
    if missing:
        raise TrainingError(f"{path}: not a minitalk model export (missing {sorted(missing)[:3]} ...)")
    model.load_state_dict(weights, strict=False)
    return model.eval(), Frames.for_training(folder, tcfg, mcfg)
