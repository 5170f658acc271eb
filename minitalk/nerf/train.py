"""Training DialogueNeRF on a prepared folder (`minitalk train DIR`), with exact resumption.

Each step draws 16 frames across both people and both roles (never a held-out one), 256 pixels
in each weighted toward the head and more again toward the mouth, casts their rays from the
frame's own head pose and renders them through the one model. The loss (DialogueNeRF IV-B) is
L2 on colour, plus a silhouette term (opacity 1 on the person, 0 elsewhere, the head field's on
the head) that keeps empty space empty for the occupancy grids, plus the audio terms of
`DialogueNeRF.audio_loss`. A quarter of the speaker frames are rendered from their tracked face
state (teacher forcing), the rest from the audio's prediction, which is all rendering gets.
Only samples that can show are differentiated (`min_transmittance`, Instant-NGP's compaction).
Adam with separate rates for grid texels and MLPs, both falling tenfold over 3,000 steps.
The evidence for each choice: docs/results.md, "Decisions before 2026-12-03".

Everything random comes from torch's global generator, saved in each checkpoint, so a resumed
run ends with the same weights as an uninterrupted one. Ctrl-C ends the current step, saves
and writes the report; a diverging loss stops training naming the step.
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

from minitalk.files import FileFormatError
from minitalk.nerf.checkpoint import read_checkpoint, save_checkpoint
from minitalk.nerf.evaluate import evaluate
from minitalk.nerf.frames import MIN_HELD_OUT_FRAMES, Frames
from minitalk.nerf.model import DialogueNeRF, DialogueNeRFConfig
from minitalk.nerf.render import render_rays
from minitalk.utils import (
    MinitalkWarning,
    SettingError,
    atomic_path,
    get_device,
    keep_freed_memory,
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
    held_out_every_s: float = 10.0
    held_out_at: tuple[float, ...] = ()  # and a held_out_s block from each of these seconds
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
        object.__setattr__(self, "held_out_at", tuple(float(t) for t in self.held_out_at))  # lists too
        if any(not 0 <= t for t in self.held_out_at):
            raise SettingError("held_out_at", "seconds from 0", self.held_out_at)
        if not self.held_out_every_s > self.held_out_s:
            raise SettingError(
                "held_out_every_s", f"more than held_out_s ({self.held_out_s})", self.held_out_every_s
            )


def restore(state: dict, path: Path, model, optim, mcfg, cfg: TrainConfig) -> tuple[int, float, list]:
    """Resume from a checkpoint's `state`; refuse one whose model or training settings differ
    (iters, minutes and eval_every may)."""
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


def peak_memory_gb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


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
    frames = Frames.for_run(folder, asdict(cfg), mcfg)  # checks the folder before anything is written
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
            step, elapsed, history = restore(read_checkpoint(ckpt), ckpt, model, optim, mcfg, cfg)
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
                    f"the last good checkpoint (step {_saved_step(ckpt)}) is kept in {ckpt}"
                )
            recent = (recent + [loss])[-200:]
            history.append([step, round(loss, 6), round(psnr, 3)])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", psnr=f"{psnr:.1f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.iters:
                save_checkpoint(
                    ckpt, model, optim, mcfg, asdict(cfg), step, time.perf_counter() - start, history
                )
            if step % cfg.eval_every == 0 and not stop.requested:
                bar.write(
                    f"step {step}: held-out PSNR {evaluate(model, frames, device, cfg.eval_frames)['psnr']}"
                )
        bar.close()
        minutes = (time.perf_counter() - start) / 60
        save_checkpoint(ckpt, model, optim, mcfg, asdict(cfg), step, minutes * 60, history)
        interrupted = stop.requested
    if interrupted:  # the scores wait for a finished run: the user asked to stop now
        roles = ("", "_speaker", "_listener", "_by_role")
        no_scores = dict.fromkeys(f"{k}{r}" for k in ("psnr", "ssim") for r in roles)
        scores = {**no_scores, "note": f"interrupted at step {step}; run the same command again to resume"}
    else:
        scores = evaluate(model, frames, device, cfg.eval_frames)
    report = {
        "iterations": step,
        "interrupted": interrupted,
        "minutes": round(minutes, 2),
        **scores,
        "held_out_frames": n_held,
        "pose_seen": pose_seen(frames),
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


def pose_seen(frames: Frames) -> list[dict]:
    """Per person, the head pose the training frames cover: {"pitch", "yaw", "roll": [lowest,
    highest] degrees}. A field has never seen a face from outside this range and cannot draw it
    (`minitalk render` keeps generated poses inside and warns about replayed ones)."""
    pose = frames.pose.numpy()[:, ~frames.held_out.numpy(), :3]  # (P, T_train, 3)
    return [
        {name: [round(float(pose[p, :, i].min()), 2), round(float(pose[p, :, i].max()), 2)]
         for i, name in enumerate(("pitch", "yaw", "roll"))}
        for p in range(frames.n_people)
    ]  # fmt: skip


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
    mel, exp, blink, speaking = frames.face_state_inputs(person_f, frame_f)
    speaking = speaking & (torch.rand(len(speaking)) >= cfg.teacher_forcing)  # forced: tracked coefficients
    state_f = model.face_state(mel.to(device), exp.to(device), blink.to(device), speaking.to(device))
    face_state = state_f.repeat_interleave(cfg.rays_per_frame, dim=0)  # (F * R, K + 1)
    out = render_rays(model, rays, face_state, min_transmittance=cfg.min_transmittance)
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
        mel, exp, _, _ = frames.face_state_inputs(sp[:, 0], sp[:, 1])
        loss = loss + cfg.audio_weight * model.audio_loss(mel.to(device), exp.to(device))
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return float(loss.detach()), float(-10 * torch.log10(mse.detach()))


@torch.no_grad()
def refresh_occupancy(model, frames: Frames, train_pairs, device) -> None:
    """Fold the fields' densities into the occupancy grids, under a random training frame per person."""
    states, ets = [], []
    for p in range(frames.n_people):
        mine = train_pairs[train_pairs[:, 0] == p]
        _, t = mine[torch.randint(len(mine), (1,))][0]
        one = torch.tensor([p]), t[None]
        states.append(model.face_state(*(x.to(device) for x in frames.face_state_inputs(*one))))
        ets.append(frames.et[p, t][None].to(device))
    model.update_occupancy(torch.cat(states), torch.cat(ets))


def _saved_step(path: Path):
    return int(read_checkpoint(path)["step"]) if path.is_file() else None
