"""Training DialogueNeRF on a prepared folder (`minitalk train DIR`), with exact resumption.

Each step draws 16 frames across both people and both roles (never a held-out one), 256 pixels
in each weighted toward the head and more again toward the mouth, casts their rays from the
frame's own head pose and renders them through the one model. The loss (DialogueNeRF IV-B) is
L2 on colour, plus a silhouette term (opacity 1 on the person, 0 elsewhere, the head field's on
the head; a 2D torso's alpha on the torso) that keeps empty space empty for the occupancy grids,
plus the audio terms of `DialogueNeRF.audio_loss`, plus with disentangled codes Eq. 6 of the
Disentangling Head NeRF (`minitalk.nerf.disentangle`, its reference encoder trained first, with
a generator of its own).
A quarter of the speaker frames are rendered from their tracked face state (teacher forcing),
the rest from the audio's prediction, which is all rendering gets.
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
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from minitalk.files import FileFormatError
from minitalk.nerf import disentangle
from minitalk.nerf.checkpoint import read_checkpoint, save_checkpoint
from minitalk.nerf.evaluate import evaluate
from minitalk.nerf.frames import MIN_HELD_OUT_FRAMES, Frames
from minitalk.nerf.model import DialogueNeRF, DialogueNeRFConfig
from minitalk.nerf.render import render_rays
from minitalk.settings import option
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
    """The training loop's settings (`minitalk train`; the model's are `DialogueNeRFConfig`)."""

    iters: int = option(4000, "training steps")
    minutes: float | None = option(None, "wall-clock budget; stops at whichever comes first", type=float)
    frames_per_batch: int = 16
    rays_per_frame: int = 256
    lr_grid: float = 2e-2
    lr_mlp: float = 2e-3
    lr_decay_steps: int = 3000  # both rates fall tenfold over these steps, then stay (0: constant)
    audio_weight: float = 0.05  # audio -> mouth: expression regression and InfoNCE alignment
    lip_sync: bool = True  # the InfoNCE alignment (Disentangling Head NeRF's lip-sync module); off: L2 only
    disentangle_weight: float = 5.0  # lambda_dis of Eq. 6 with codes="disentangled" (the paper's 5)
    reference_steps: int = 300  # contrastive steps of the reference encoder, with codes="disentangled"
    teacher_forcing: float = 0.25  # share of speaker frames rendered from the tracked, not predicted, state
    min_transmittance: float = 1e-3  # samples hidden behind this get no pass with gradients (0: all do)
    mask_weight: float = 0.1  # silhouettes: opacity 1 on the person and 0 elsewhere, the head's on the head
    low_res_weight: float = 1.0  # neural renderer: the feature map's colour channels against the image
    edge_weight: float = 0.5  # neural renderer: L1 between the image's and the truth's pixel differences
    face_weight: float = 4.0  # head pixels are drawn this much more often
    mouth_weight: float = 4.0  # and pixels around the mouth this much more again
    blink_weight: float = 4.0  # frames drawn in proportion to 1 + this x blink (eyes closed: a few %)
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
        if not self.disentangle_weight >= 0:
            raise SettingError("disentangle_weight", "0 or more", self.disentangle_weight)
        if not self.blink_weight >= 0:
            raise SettingError("blink_weight", "0 or more", self.blink_weight)
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
    """The run's peak memory: on CUDA the most allocated; on a CPU this process's resident high-water
    mark, VmHWM where Linux has it: `ru_maxrss` survives exec, so a training started by another
    program (a benchmark, a notebook's shell) would report that program's peak when it was higher
    (docs/results.md, "Several people in one model")."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1e6  # kB
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def learning_rate_factor(step: int, decay_steps: int) -> float:
    """0.1 ** (step / decay_steps) up to `decay_steps`, 0.1 after (1 throughout when decay_steps is 0).

    A function of the step alone, so a run resumed from a checkpoint follows the same schedule
    whatever its budget in minutes."""
    return 0.1 ** min(step / decay_steps, 1.0) if decay_steps > 0 else 1.0


def train(folder, run_dir=None, model_config: DialogueNeRFConfig | None = None, resume: bool = True,
          progress: bool = True, **train_settings) -> dict:  # fmt: skip
    """Train (or resume) a DialogueNeRF on prepared `folder`, or on a list of folders whose people
    it numbers in order (one model for all of them); returns the report also written to the run
    (`run_dir`, by default `folder/run`; several folders need one named)."""
    cfg = TrainConfig(**train_settings)
    folders = [folder] if isinstance(folder, (str, Path)) else list(folder)
    if len(folders) > 1 and run_dir is None:
        raise ValueError(f"{len(folders)} folders: name the run folder that trains them together (--run)")
    frames = Frames.for_run(folders, asdict(cfg), model_config or DialogueNeRFConfig())  # checks the folders
    # one shape and appearance code per person of every folder (DialogueNeRF V-D)
    mcfg = replace(model_config or DialogueNeRFConfig(), n_people=frames.n_people)
    folder = ", ".join(map(str, frames.folders))  # for messages
    check_neural_renderer(folder, frames.size, mcfg, cfg)
    run = Path(run_dir) if run_dir is not None else Path(folders[0]) / "run"
    run.mkdir(parents=True, exist_ok=True)
    for g, clip in enumerate(frames.folders):
        n_held = int(frames.held_out[frames.group == g][0].sum())
        if n_held < MIN_HELD_OUT_FRAMES:
            warnings.warn(
                f"{clip}: only {n_held} held-out frames ({int(frames.lengths[frames.group == g][0])} in the "
                "clip); the held-out scores will be noisy",
                TrainingWarning,
                stacklevel=2,
            )
    device = get_device()
    keep_freed_memory()
    set_seed(cfg.seed)
    model = DialogueNeRF(mcfg, frames.head_box, frames.torso_boxes).to(device)
    optim = make_optimizer(model, cfg)
    step, elapsed, history = 0, 0.0, []
    ckpt = run / "checkpoint.pt"
    if resume and ckpt.is_file():
        try:
            step, elapsed, history = restore(read_checkpoint(ckpt), ckpt, model, optim, mcfg, cfg)
        except FileFormatError as err:
            raise TrainingError(f"{err}; resuming needs a good one (start over with --fresh)") from None
    references, reference_start = None, time.perf_counter()
    if mcfg.codes == "disentangled" and cfg.disentangle_weight > 0:
        references = {k: v.to(device) for k, v in reference_codes_of(frames, mcfg, cfg, progress).items()}
    reference_seconds = time.perf_counter() - reference_start
    train_pairs = torch.nonzero(frames.trainable)  # (M, 2): person, frame
    # closed eyes are a few per cent of the frames: drawn more often, the blink value learns to close
    # them fully rather than half (the expression coefficients carry no blink, prepare.expression)
    pair_weights = 1 + cfg.blink_weight * frames.blink[train_pairs[:, 0], train_pairs[:, 1]]
    speaker_pairs = torch.nonzero(frames.speaking & frames.trainable)
    start = time.perf_counter() - elapsed
    recent: list[float] = []
    bar = tqdm(total=cfg.iters, initial=step, desc="train", unit="it", disable=not progress)
    with stop_on_interrupt() as stop:
        while step < cfg.iters and not stop.requested:
            if cfg.minutes is not None and time.perf_counter() - start >= 60 * cfg.minutes:
                break
            for group, rate in zip(optim.param_groups, (cfg.lr_grid, cfg.lr_mlp), strict=True):
                group["lr"] = rate * learning_rate_factor(step, cfg.lr_decay_steps)
            loss, psnr = train_step(
                model, optim, frames, train_pairs, pair_weights, speaker_pairs, cfg, device, references
            )
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
    report = run_report(model, frames, device, mcfg, cfg, step, minutes, history, interrupted)
    report["reference_seconds"] = round(reference_seconds, 1)  # the reference encoder, before the steps
    with atomic_path(run / "train_report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    if interrupted:
        raise TrainingInterrupted(step, ckpt)
    return report


def reference_codes_of(frames: Frames, mcfg: DialogueNeRFConfig, cfg: TrainConfig, progress: bool) -> dict:
    """The reference codes of Eq. 6 for a run: `disentangle.ReferenceEncoder` trained on the face crops
    of the training frames, then applied to every frame. Its random numbers are drawn from a
    generator of its own seeded with the run's seed, so a resumed run gets the same references and
    the field's random stream is the same with or without them."""
    crops = torch.stack([disentangle.face_crops(frames.images[p], frames.landmarks[p])
                         for p in range(frames.n_people)])  # fmt: skip
    dims = {"identity": mcfg.code_dim, "albedo": mcfg.code_dim, "illumination": mcfg.code_dim,
            "expression": mcfg.cond_dim}  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        bar = tqdm(total=cfg.reference_steps, desc="reference codes", unit="it", disable=not progress)
        encoder, _ = disentangle.train_reference_encoder(
            crops, frames.expression, frames.trainable.all(0), dims, cfg.reference_steps,
            progress=lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
        )  # fmt: skip
        bar.close()
    return disentangle.reference_codes(encoder, crops, frames.trainable.all(0))


def make_optimizer(model: DialogueNeRF, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with two rates: the tri-plane grids learn faster than the MLPs (as in ER-NeRF)."""
    return torch.optim.Adam(
        [
            {"params": model.grid_parameters(), "lr": cfg.lr_grid},
            {"params": model.mlp_parameters(), "lr": cfg.lr_mlp},
        ],
        betas=(0.9, 0.99),
    )


def run_report(model, frames: Frames, device, mcfg: DialogueNeRFConfig, cfg: TrainConfig, step: int,
               minutes: float, history: list, interrupted: bool) -> dict:  # fmt: skip
    """What train_report.json holds: held-out scores per person and role (none for an interrupted
    run: the user asked to stop now), the poses training saw, memory, both configs, the history."""
    if interrupted:
        roles = ("", "_speaker", "_listener", "_by_role")
        no_scores = dict.fromkeys(f"{k}{r}" for k in ("psnr", "ssim") for r in roles)
        scores = {**no_scores, "note": f"interrupted at step {step}; run the same command again to resume"}
    else:
        scores = evaluate(model, frames, device, cfg.eval_frames)
    return {
        "iterations": step,
        "interrupted": interrupted,
        "minutes": round(minutes, 2),
        **scores,
        "held_out_frames": int(frames.held_out.sum(1).min()),  # of the person with the fewest
        "pose_seen": pose_seen(frames),
        "peak_mem_gb": round(peak_memory_gb(device), 3),
        "device": str(device),
        "model": mcfg.to_dict(),
        "train": asdict(cfg),
        "history": history[:: max(1, len(history) // 200)],
    }


def pose_seen(frames: Frames) -> list[dict]:
    """Per person, the head pose the training frames cover: {"pitch", "yaw", "roll": [lowest,
    highest] degrees}. A field has never seen a face from outside this range and cannot draw it
    (`minitalk render` keeps generated poses inside and warns about replayed ones)."""
    pose = [
        frames.pose[p, frames.trainable[p], :3].numpy() for p in range(frames.n_people)
    ]  # (T_train, 3) each
    return [
        {name: [round(float(pose[p][:, i].min()), 2), round(float(pose[p][:, i].max()), 2)]
         for i, name in enumerate(("pitch", "yaw", "roll"))}
        for p in range(frames.n_people)
    ]  # fmt: skip


def check_neural_renderer(folder, size: int, mcfg: DialogueNeRFConfig, cfg: TrainConfig) -> None:
    """Refuse a neural-renderer run that cannot tile: the image's side must be a multiple of the
    factor, and each frame's rays a square patch that fits in the feature map."""
    u = mcfg.upsample
    if u == 1:
        return
    if size % u:
        raise TrainingError(f"{folder}: frames of {size} px cannot be upsampled {u}x from a whole "
                            f"feature map (prepare with a --size that is a multiple of {u})")  # fmt: skip
    side = int(round(cfg.rays_per_frame**0.5))
    if side * side != cfg.rays_per_frame or side > size // u:
        raise SettingError("rays_per_frame", f"a square of at most {(size // u) ** 2} with --upsample {u}",
                           cfg.rays_per_frame)  # fmt: skip


def patch_pixels(frames: Frames, person_f, frame_f, side: int, factor: int) -> tuple:
    """Training patches for the 2D neural renderer: per frame a side x side square of the feature
    map's pixels, around a pixel drawn by the frame's weights (head and mouth more often), and the
    same square of the image's pixels, side u on a side. The CNN needs neighbourhoods, so it
    trains on patches; full-size pixels come only where a patch falls, so a 512 px image costs
    a step no more rays than a 128 px one (the feature map's side is S / u).
    Returns flat pixel indices (F, side, side) at S / u and (F, side u, side u) at S."""
    size = frames.size
    low = size // factor
    # one centre per frame by inverse CDF, as `rays.sample_pixels` draws: far cheaper than
    # torch.multinomial over S^2 pixels (docs/results.md, "512 px faces")
    cdf = frames.pixel_weights(person_f, frame_f).cumsum(1)  # (F, S^2)
    u = torch.rand(len(cdf), 1) * cdf[:, -1:]
    centre = torch.searchsorted(cdf, u, right=True)[:, 0].clamp(max=size * size - 1)  # (F,) at S
    corner_y = (torch.div(centre, size * factor, rounding_mode="floor") - side // 2).clamp(0, low - side)
    corner_x = (torch.div(centre % size, factor, rounding_mode="floor") - side // 2).clamp(0, low - side)
    steps, fine = torch.arange(side), torch.arange(side * factor)
    low_px = (corner_y[:, None, None] + steps[:, None]) * low + corner_x[:, None, None] + steps
    high_px = (corner_y[:, None, None] * factor + fine[:, None]) * size
    high_px = high_px + corner_x[:, None, None] * factor + fine
    return low_px, high_px


def edge_loss(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |dI - dT| over horizontal and vertical pixel differences of (B, 3, H, W): sharp edges
    without a learned perceptual network (none can be downloaded here)."""
    dx = (image[..., :, 1:] - image[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (image[..., 1:, :] - image[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def draw_pixels(frames: Frames, person_f, frame_f, cfg: TrainConfig, factor: int) -> tuple:
    """The pixels a training batch renders, flat indices at S / u and at S: per pixel,
    `rays_per_frame` of them per frame drawn by the weights (both the same); with the neural
    renderer (u > 1), a square patch per frame (`patch_pixels`)."""
    if factor == 1:
        pixels = torch.multinomial(
            frames.pixel_weights(person_f, frame_f), cfg.rays_per_frame, replacement=True
        )
        return pixels, pixels
    return patch_pixels(frames, person_f, frame_f, int(round(cfg.rays_per_frame**0.5)), factor)


def render_batch(model, frames: Frames, person_f, frame_f, low_px, high_px, face_state, cfg: TrainConfig,
                 device) -> tuple:  # fmt: skip
    """Render a training batch of frames (F,) at the pixels of `draw_pixels`, with their face states
    (F, K + 1): returns the picture with its target, the silhouettes with theirs, and the loss
    terms that belong to the renderer.

    With the neural renderer the patches are composited as a feature map and upsampled; the
    feature map's colour channels are also fitted to the image at its size (area means), and the
    image's edges to the truth's (`edge_loss`). Silhouette targets at the feature map's size are the
    share of person (head) pixels under each."""
    u, n_f = model.config.upsample, len(person_f)
    per_frame = low_px[0].numel()
    person, frame = person_f.repeat_interleave(per_frame), frame_f.repeat_interleave(per_frame)
    rays = frames.rays(person, frame, low_px.reshape(-1), frames.size // u)
    rays = {k: v.to(device) for k, v in rays.items()}
    states = face_state.repeat_interleave(per_frame, dim=0)
    out = render_rays(model, rays, states, min_transmittance=cfg.min_transmittance)
    per_high = high_px[0].numel()
    person_h, frame_h = person_f.repeat_interleave(per_high), frame_f.repeat_interleave(per_high)
    target = frames.target(person_h, frame_h, high_px.reshape(-1)).to(device)
    label = frames.labels[person_h, frame_h, high_px.reshape(-1)].to(device)
    # silhouette targets: person, head, torso
    shares = torch.stack([(label > 0).float(), (label == 2).float(), (label == 1).float()], -1)
    extra = {}
    if u == 1:
        image = out["colour"]
    else:
        side = low_px.shape[-1]

        def square(x, s):  # (F s s, C) -> (F, C, s, s)
            return x.reshape(n_f, s, s, -1).permute(0, 3, 1, 2)

        feat, opacity = square(out["colour"], side), square(out["opacity"][:, None], side)
        target = square(target, side * u)
        plates = frames.plates(frames.size)[person_h, high_px.reshape(-1)].to(device)
        image = model.upsampler(feat, opacity, square(plates, side * u), square(rays["background"], side))
        target_low = torch.nn.functional.avg_pool2d(target, u)
        extra["low_res"] = ((feat[:, :3] - target_low) ** 2).mean()
        extra["edge"] = edge_loss(image, target)
        shares = torch.nn.functional.avg_pool2d(square(shares, side * u), u)
        shares = shares.permute(0, 2, 3, 1).reshape(-1, 3)
    return image, target, out, shares, extra


def train_step(model, optim, frames: Frames, train_pairs, pair_weights, speaker_pairs, cfg: TrainConfig,
               device, references: dict | None = None):  # fmt: skip
    """One optimisation step on frames drawn by `pair_weights` (M,); returns the loss and batch PSNR.
    With `references` (`reference_codes_of`) the disentangling loss of Eq. 6 joins in."""
    pick = train_pairs[torch.multinomial(pair_weights, cfg.frames_per_batch, replacement=True)]
    person_f, frame_f = pick[:, 0], pick[:, 1]
    low_px, high_px = draw_pixels(frames, person_f, frame_f, cfg, model.config.upsample)
    mel, expression, blink, speaking = frames.face_state_inputs(person_f, frame_f)
    speaking = speaking & (torch.rand(len(speaking)) >= cfg.teacher_forcing)  # forced: tracked coefficients
    state_f = model.face_state(mel.to(device), expression.to(device), blink.to(device), speaking.to(device))
    image, target, out, shares, extra = render_batch(
        model, frames, person_f, frame_f, low_px, high_px, state_f, cfg, device
    )
    mse = ((image - target) ** 2).mean()
    loss = mse
    if "low_res" in extra:
        loss = loss + cfg.low_res_weight * extra["low_res"] + cfg.edge_weight * extra["edge"]
    if cfg.mask_weight > 0:  # silhouettes make the fields opaque where people are, empty elsewhere
        silhouette = ((out["opacity"] - shares[:, 0]) ** 2).mean()
        silhouette = silhouette + ((out["head_opacity"] - shares[:, 1]) ** 2).mean()
        if "torso_alpha" in out:  # a 2D torso paints no head of its own, to show when the head moves
            silhouette = silhouette + ((out["torso_alpha"] - shares[:, 2]) ** 2).mean()
        loss = loss + cfg.mask_weight * silhouette
    if cfg.audio_weight > 0 and len(speaker_pairs) >= 2:
        sp = speaker_pairs[torch.randint(len(speaker_pairs), (32,))]
        mel, expression, _, _ = frames.face_state_inputs(sp[:, 0], sp[:, 1])
        loss = loss + cfg.audio_weight * model.audio_loss(mel.to(device), expression.to(device), cfg.lip_sync)
    if references is not None:
        pulled = disentangle.disentangling_loss(model, references, person_f.to(device), frame_f.to(device),
                                                state_f)  # fmt: skip
        loss = loss + cfg.disentangle_weight * pulled
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
        ets.append(model.torso_condition({k: x.to(device) for k, x in frames.torso_inputs(*one).items()}))
    model.update_occupancy(torch.cat(states), torch.cat(ets))


def _saved_step(path: Path):
    return int(read_checkpoint(path)["step"]) if path.is_file() else None
