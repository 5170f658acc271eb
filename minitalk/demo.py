"""`minitalk demo`: every pipeline stage that exists so far, run on the sample dialogue.

Stages that run now:

1. sample: read the two-person video and its audio (16 kHz mono) and check
   them against the ground truth that came with them;
2. prepare: `minitalk prepare` on the video into `prepared/` (crops, 478
   landmarks, head pose, expression, blinks, masks, background, audio
   features, who speaks when), scored against the ground truth;
3. pose: train the TCN pose model for speaker and listener on the prepared
   (tracked) poses and speaking flags, score it on held-out frames, and plot
   generated against tracked listener nods (`pose.png`);
4. preview: write `preview.mp4` (landmarks drawn, the detected speaker framed
   green, with the audio) and `summary.json`;
5. nerf: render held-out frames of both people with the DialogueNeRF of the
   shipped avatar file (`minitalk train --export`), beside the real ones (`nerf.png`);
6. render: `minitalk render` on the new speech with that avatar file:
   `dialogue.mp4`, `dialogue.json`, `dialogue_tracks.png`, `dialogue_strip.png`;
7. evaluate: `minitalk evaluate` on `dialogue.mp4` against the prepared real footage:
   `dialogue.eval.json`, `dialogue.eval.md`, `dialogue.eval.png`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from minitalk import io, metrics
from minitalk.dialogue.avatar import load_avatar
from minitalk.dialogue.render import render_dialogue
from minitalk.evaluate.clip import evaluate_clip
from minitalk.evaluate.report import as_json, summary, write_report
from minitalk.nerf import checkpoint, render
from minitalk.pose import evaluate as pose_eval
from minitalk.prepare import data
from minitalk.prepare import evaluate as prepare_eval
from minitalk.utils import atomic_path


def load_sample(sample_dir: str | Path) -> tuple[np.ndarray, float, np.ndarray, dict]:
    """Frames, fps, 16 kHz audio and ground truth of a sample folder, checked for agreement."""
    sample_dir = Path(sample_dir)
    video, gt_path = sample_dir / "dialogue.mp4", sample_dir / "dialogue_gt.npz"
    for p in (video, gt_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p}: missing; regenerate with `python -m minitalk.synthetic --out {sample_dir}`"
            )
    frames, fps = io.read_video(video)
    audio = io.read_audio(video)
    with np.load(gt_path) as z:
        gt = {k: z[k] for k in z.files}
    if gt["pose"].shape[1] != len(frames) or not np.isclose(float(gt["fps"]), fps):
        raise ValueError(
            f"{gt_path}: {gt['pose'].shape[1]} frames at {float(gt['fps'])} fps, "
            f"but {video} has {len(frames)} at {fps}"
        )
    return frames, fps, audio, gt


def draw_preview(frames: np.ndarray, tracks: dict) -> np.ndarray:
    """Tracked landmarks as dots and a green frame around whoever speaks, (T, H, W, 3) uint8."""
    out = frames.copy()
    size = tracks["intrinsics"][0, 0, 2] * 2  # the crops' side (principal point at the centre)
    h, w = frames.shape[1:3]
    for p in range(2):
        x0, y0, side = tracks["crop_box"][p]
        pts = tracks["landmarks"][p, :, :, :2] * (side / size) + [x0, y0]  # crop -> frame pixels
        for t in range(min(len(frames), len(pts))):
            x = np.clip(np.round(pts[t, :, 0]).astype(int), 0, w - 1)
            y = np.clip(np.round(pts[t, :, 1]).astype(int), 0, h - 1)
            out[t, y, x] = (255, 255, 255)
        rx0, _, rx1 = tracks["region"][p][[0, 1, 2]]
        border = np.zeros((h, w), bool)
        border[:4, rx0:rx1] = border[-4:, rx0:rx1] = True
        border[:, rx0 : rx0 + 4] = border[:, rx1 - 4 : rx1] = True
        speaking = tracks["speaking"][p]
        out[: len(speaking)][speaking] = np.where(
            border[..., None], np.array([40, 200, 60], np.uint8), out[: len(speaking)][speaking]
        )
    return out


def pose_stage(tracks: dict, fps: float, out_dir: Path) -> dict:
    """Train and score the pose model on prepared tracks; plot the listener's generated and tracked pitch."""
    result = pose_eval.compare(
        tracks["pose"], tracks["speaking"], tracks["zcr"], tracks["rms"], ablations=False
    )
    scores = result["scores"]
    _, real_listener = result["real"]
    _, listener = result["variants"]["tcn"]
    t = np.arange(len(listener)) / fps
    fig = Figure(figsize=(12, 3))
    ax = fig.subplots()
    ax.plot(t, real_listener[:, 0], lw=1, label="tracked listener pitch")
    ax.plot(t, listener[:, 0], lw=1, label="generated")
    ax.fill_between(t, *ax.get_ylim(), where=result["held_out"], color="0.85", lw=0, label="held out")
    ax.set_xlabel("seconds")
    ax.set_ylabel("degrees")
    ax.legend(loc="upper right", fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "pose.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    return {
        "listener_pitch_corr": round(scores["listener_pitch_corr"]["tcn"], 4),
        "listener_posefd": {k: float(f"{v:.4g}") for k, v in scores["listener_posefd"].items()},
        "train_seconds": round(result["model"].train_seconds, 1),
    }


def nerf_stage(sample_dir: Path, prepared: Path, out_dir: Path) -> dict:
    """Render held-out frames of both people with the shipped model, beside the real ones."""
    model_path = sample_dir / "avatars.pt"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: missing; see the README for the command that trains it")
    model, frames = checkpoint.load_exported(model_path, prepared)
    held = torch.nonzero(frames.held_out[0])[:, 0].numpy()  # the same frames for both people
    fig = Figure(figsize=(12, 6.4))
    axes = fig.subplots(2, 4)
    scores: list[list[float]] = [[], []]
    for p in range(2):
        for j, t in enumerate(held[[len(held) // 3, 2 * len(held) // 3]]):
            img = render.render_frame(model, frames, p, int(t), torch.device("cpu"))
            real = frames.images[p, int(t)].numpy() / 255
            scores[p].append(metrics.psnr(img, real))
            role = "speaking" if frames.speaking[p, t] else "listening"
            axes[p, 2 * j].imshow(real)
            axes[p, 2 * j].set_title(f"person {p}, frame {t} ({role})", fontsize=9)
            axes[p, 2 * j + 1].imshow(img)
            axes[p, 2 * j + 1].set_title(f"rendered, {scores[p][-1]:.1f} dB", fontsize=9)
    for ax in axes.ravel():
        ax.set_axis_off()
    with atomic_path(out_dir / "nerf.png") as tmp:
        fig.savefig(tmp, format="png", dpi=64, bbox_inches="tight")
    return {"psnr": [round(float(np.mean(s)), 2) for s in scores], "model": model_path.name}


def render_stage(sample_dir: Path, out_dir: Path) -> dict:
    """`minitalk render` with the shipped avatar file on the new speech; a frame strip at the first
    change of turn (`dialogue_strip.png`)."""
    avatar_path = sample_dir / "avatars.pt"
    if not avatar_path.is_file():
        raise FileNotFoundError(f"{avatar_path}: missing; see the README for the command that makes it")
    out = out_dir / "dialogue.mp4"
    summary = render_dialogue(load_avatar(avatar_path), sample_dir / "new_dialogue.wav", out, overwrite=True,
                              progress=False, device="cpu")  # fmt: skip
    turns = [t for t in summary["turns"] if t["speaker"] >= 0]
    change = turns[1]["start"] if len(turns) > 1 else summary["seconds"] / 2
    picks = np.clip(np.round((change + np.array([-0.8, -0.2, 0.2, 0.8])) * summary["fps"]), 0,
                    summary["frames"] - 1).astype(int)  # fmt: skip
    frames = [f for i, f in enumerate(io.iter_frames(out)) if i in set(picks.tolist())]
    fig = Figure(figsize=(12, 1.9))
    for ax, frame, i in zip(fig.subplots(1, len(frames)), frames, picks, strict=False):
        ax.imshow(frame)
        ax.set_title(f"{i / summary['fps']:.1f} s", fontsize=9)
        ax.set_axis_off()
    with atomic_path(out_dir / "dialogue_strip.png") as tmp:
        fig.savefig(tmp, format="png", dpi=72, bbox_inches="tight")
    return {k: summary[k] for k in ("frames", "seconds", "roles", "frames_per_second", "stage_seconds")}


def evaluate_stage(out_dir: Path) -> dict:
    """`minitalk evaluate` on the rendered conversation, against the real footage it was trained on
    (new speech: no frame matches, so the distribution metrics and the reference-free ones)."""
    report = evaluate_clip(out_dir / "dialogue.mp4", prepared=out_dir / "prepared", progress=False)
    paths = write_report(report)
    for line in summary(report).splitlines():
        print("      " + line)
    print(f"      wrote {paths[1]}")
    return as_json(
        {f"person_{p['person']}": {r: p[r] for r in ("talking", "listening")} for p in report["per_person"]}
    )


def avatar_size(path: Path) -> int:
    """Pixels per person of the avatar file at `path` (its background plates' side)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; see the README for the command that makes it")
    return load_avatar(path).size


def run_demo(sample_dir: str | Path, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    timings = {}

    t0 = time.time()
    print("[1/7] sample: reading video, audio and ground truth")
    frames, fps, audio, gt = load_sample(sample_dir)
    timings["sample"] = time.time() - t0
    print(
        f"      {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} at {fps:g} fps, "
        f"{len(audio) / io.SAMPLE_RATE:.1f} s of audio, {int(gt['turns'].shape[0])} turns"
    )

    t0 = time.time()
    size = avatar_size(Path(sample_dir) / "avatars.pt")  # the crops the shipped avatar was trained on
    print(f"[2/7] prepare: minitalk prepare --size {size} -> {out_dir / 'prepared'}")
    video = Path(sample_dir) / "dialogue.mp4"
    prepared = data.prepare(video, out_dir / "prepared", size=size, progress=False)
    tracks = data.load_tracks(prepared)
    report = json.loads((prepared / "prepare_report.json").read_text())
    summary = {"frames": len(frames), "fps": fps, "faces_found": report["faces_found"]}
    summary["prepare_vs_ground_truth"] = prepare_eval.compare(tracks, gt)
    timings["prepare"] = time.time() - t0
    q = summary["prepare_vs_ground_truth"]
    print(
        f"      faces found {report['faces_found']}; "
        f"head rotation error (median) {q['rot_err_deg_median']:.2f} deg; "
        f"who speaks: {100 * q['speaking_acc']:.1f}% of frames right; blink F1 {q['blink_f1']:.2f}; "
        f"mouth vs ground truth r = {q['mouth_corr']}"
    )

    t0 = time.time()
    print("[3/7] pose: training the TCN pose model (speaker and listener) on 80% of every turn")
    summary["pose"] = pose_stage(tracks, fps, out_dir)
    timings["pose"] = time.time() - t0
    p = summary["pose"]
    print(
        f"      held-out listener pitch r = {p['listener_pitch_corr']:.2f}; listener PoseFD "
        f"tcn {p['listener_posefd']['tcn']:.2e} vs mean pose {p['listener_posefd']['mean']:.2e}, "
        f"replay {p['listener_posefd']['replay']:.2e}; wrote {out_dir / 'pose.png'}"
    )

    t0 = time.time()
    print(f"[4/7] preview: writing {out_dir / 'preview.mp4'}")
    io.write_video(out_dir / "preview.mp4", draw_preview(frames, tracks), fps, audio)
    timings["preview"] = time.time() - t0
    t0 = time.time()
    print(f"[5/7] nerf: the shipped DialogueNeRF on held-out frames -> {out_dir / 'nerf.png'}")
    summary["nerf"] = nerf_stage(Path(sample_dir), out_dir / "prepared", out_dir)
    timings["nerf"] = time.time() - t0
    print(f"      held-out PSNR per person {summary['nerf']['psnr']} dB (model: {summary['nerf']['model']})")

    t0 = time.time()
    print(f"[6/7] render: minitalk render avatars.pt new_dialogue.wav -> {out_dir / 'dialogue.mp4'}")
    summary["render"] = render_stage(Path(sample_dir), out_dir)
    timings["render"] = time.time() - t0
    r = summary["render"]
    print(
        f"      {r['frames']} frames ({r['seconds']:.1f} s) at {r['frames_per_second']:.1f} frame pairs per "
        f"second; roles from {r['roles']}; wrote {out_dir / 'dialogue_strip.png'}"
    )

    t0 = time.time()
    print(f"[7/7] evaluate: minitalk evaluate dialogue.mp4 --prepared {out_dir / 'prepared'}")
    summary["evaluate"] = evaluate_stage(out_dir)
    timings["evaluate"] = time.time() - t0

    summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print("\nseconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()))
    print(f"\nThe new conversation: {out_dir / 'dialogue.mp4'}")
    return summary
