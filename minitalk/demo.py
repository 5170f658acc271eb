"""`minitalk demo`: every pipeline stage that exists so far, run on the sample dialogue.

Stages that run now:

1. sample: read the two-person video and its audio (16 kHz mono) and check
   them against the ground truth that came with them;
2. faces: track 478 FaceMesh landmarks on each person, and measure how well the
   tracked mouth opening and eye closure follow the ground truth;
3. pose: train the TCN pose model for speaker and listener on the sample's
   poses (the ground truth stands in for tracked poses until data preparation
   exists), score it on held-out frames, and plot generated against real
   listener nods (`pose.png`);
4. preview: write `preview.mp4` (landmarks drawn, the current speaker framed
   green, with the audio) and `summary.json`.

The later stages of the pipeline (data preparation into a training folder, the
DialogueNeRF training and rendering of a new dialogue, evaluation) are listed
at the end as not yet available.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from minitalk import audio as audio_features
from minitalk import face, io, pose_eval
from minitalk.utils import atomic_path

REMAINING_STAGES = (
    "prepare: video -> tracks.npz, crops, masks, background (minitalk prepare)",
    "train: one conditional NeRF for both people (minitalk train)",
    "render: new dialogue audio -> two-person clip (minitalk render)",
    "evaluate: image, motion, sync metrics and Preference Score (minitalk evaluate)",
)


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


def draw_preview(frames: np.ndarray, landmarks: np.ndarray, speaking: np.ndarray) -> np.ndarray:
    """Landmarks as dots and a green frame around whoever speaks, (T, H, W, 3) uint8."""
    out = frames.copy()
    tile = frames.shape[2] // 2
    for p in range(2):
        for t in range(len(frames)):
            pts = landmarks[p, t]
            if np.isnan(pts[0, 0]):
                continue
            x = np.clip(np.round(pts[:, 0]).astype(int) + p * tile, 0, frames.shape[2] - 1)
            y = np.clip(np.round(pts[:, 1]).astype(int), 0, frames.shape[1] - 1)
            out[t, y, x] = (255, 255, 255)
        border = np.zeros(frames.shape[1:3], bool)
        border[:4, p * tile : (p + 1) * tile] = border[-4:, p * tile : (p + 1) * tile] = True
        border[:, p * tile : p * tile + 4] = border[:, (p + 1) * tile - 4 : (p + 1) * tile] = True
        out[speaking[p]] = np.where(border[..., None], np.array([40, 200, 60], np.uint8), out[speaking[p]])
    return out


def pose_stage(gt: dict, audio: np.ndarray, fps: float, out_dir: Path) -> dict:
    """Train and score the pose model; plot the listener's generated and real pitch."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    zcr, rms = audio_features.zcr_rms(audio, io.SAMPLE_RATE, fps, gt["pose"].shape[1])
    result = pose_eval.compare(gt["pose"], gt["speaking"], zcr, rms, ablations=False)
    scores = result["scores"]
    _, real_listener = result["real"]
    _, listener = result["variants"]["tcn"]
    t = np.arange(len(listener)) / fps
    fig = Figure(figsize=(12, 3))
    ax = fig.subplots()
    ax.plot(t, real_listener[:, 0], lw=1, label="real listener pitch")
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


def run_demo(sample_dir: str | Path, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    timings = {}

    t0 = time.time()
    print("[1/4] sample: reading video, audio and ground truth")
    frames, fps, audio, gt = load_sample(sample_dir)
    timings["sample"] = time.time() - t0
    print(
        f"      {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} at {fps:g} fps, "
        f"{len(audio) / io.SAMPLE_RATE:.1f} s of audio, {int(gt['turns'].shape[0])} turns"
    )

    t0 = time.time()
    print("[2/4] faces: tracking 478 FaceMesh landmarks on each person")
    tile = frames.shape[2] // 2
    landmarks = np.stack(
        [face.detect_landmarks(frames[:, :, p * tile : (p + 1) * tile], static=False) for p in range(2)]
    )  # (2, T, 478, 3)
    found = ~np.isnan(landmarks[..., 0, 0])
    summary = {"frames": len(frames), "fps": fps, "faces_found": found.mean(axis=1).round(4).tolist()}
    mouth_corr, blink_corr = [], []
    for p in range(2):
        ok = found[p]
        mouth_corr.append(float(np.corrcoef(face.mouth_opening(landmarks[p, ok]), gt["mouth"][p, ok])[0, 1]))
        blink_corr.append(
            float(np.corrcoef(-face.eye_aspect_ratio(landmarks[p, ok]), gt["blink"][p, ok])[0, 1])
        )
    summary["mouth_corr_with_gt"] = np.round(mouth_corr, 3).tolist()
    summary["eye_closure_corr_with_gt"] = np.round(blink_corr, 3).tolist()
    timings["faces"] = time.time() - t0
    print(
        f"      faces found: {summary['faces_found']}; tracked mouth vs ground truth: "
        f"r = {summary['mouth_corr_with_gt']}; "
        f"eye closure vs blinks: r = {summary['eye_closure_corr_with_gt']}"
    )

    t0 = time.time()
    print("[3/4] pose: training the TCN pose model (speaker and listener) on 80% of every turn")
    summary["pose"] = pose_stage(gt, audio, fps, out_dir)
    timings["pose"] = time.time() - t0
    p = summary["pose"]
    print(
        f"      held-out listener pitch r = {p['listener_pitch_corr']:.2f}; listener PoseFD "
        f"tcn {p['listener_posefd']['tcn']:.2e} vs mean pose {p['listener_posefd']['mean']:.2e}, "
        f"replay {p['listener_posefd']['replay']:.2e}; wrote {out_dir / 'pose.png'}"
    )

    t0 = time.time()
    print(f"[4/4] preview: writing {out_dir / 'preview.mp4'}")
    io.write_video(out_dir / "preview.mp4", draw_preview(frames, landmarks, gt["speaking"]), fps, audio)
    timings["preview"] = time.time() - t0
    summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))

    print("\nNot yet available in this version of minitalk:")
    for stage in REMAINING_STAGES:
        print(f"  - {stage}")
    return summary
