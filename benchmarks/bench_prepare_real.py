"""Data preparation on real video: two real clips made into a conversation; prints one JSON line.

Uses ../shared/real_clips/face_a.mp4 and face_b.mp4 when they exist (they are
not part of the project; without them this prints a "skipped" line). Each
clip plays twice: a 10 s conversation where A speaks first (B's audio muted),
then B (A's audio muted), so who speaks when is known. Both videos keep their
own size and are given as --left / --right; the side-by-side path is checked
too, with B resized to A's height and placed to its right.

Real video has no ground-truth pose, so jitter is measured on the tracked
pose itself: the mean frame-to-frame change of the angles on the stillest
30% of frames, for the raw PnP pose and after smoothing.

    python benchmarks/bench_prepare_real.py [--clips DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from minitalk import io
from minitalk.prepare import data
from minitalk.prepare import evaluate as prepare_eval

CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "real_clips"


def conversation(clips: Path, tmp: Path) -> tuple[Path, Path, Path, Path, np.ndarray]:
    """Left, right, side-by-side videos and the audio of the 10 s conversation; true speaking (2, T)."""
    import cv2

    (a, fps_a), (b, fps_b) = io.read_video(clips / "face_a.mp4"), io.read_video(clips / "face_b.mp4")
    wa, wb = io.read_audio(clips / "face_a.mp4"), io.read_audio(clips / "face_b.mp4")
    n = min(len(a), len(b), int(len(wa) / io.SAMPLE_RATE * fps_a), int(len(wb) / io.SAMPLE_RATE * fps_b))
    a, b = a[:n], b[:n]
    half = int(round(n / fps_a * io.SAMPLE_RATE))
    audio = np.concatenate([wa[:half], wb[:half]])
    left, right = np.concatenate([a, a]), np.concatenate([b, b])
    io.write_video(tmp / "left.mp4", left, fps_a)
    io.write_video(tmp / "right.mp4", right, fps_b)
    io.write_audio(tmp / "audio.wav", audio)
    h = a.shape[1]
    b_resized = np.stack([cv2.resize(f, (h * f.shape[1] // f.shape[0], h)) for f in right])
    io.write_video(tmp / "side_by_side.mp4", np.concatenate([left, b_resized], axis=2), fps_a, audio=audio)
    speaking = np.zeros((2, 2 * n), bool)
    speaking[0, :n], speaking[1, n:] = True, True
    return tmp / "left.mp4", tmp / "right.mp4", tmp / "side_by_side.mp4", tmp / "audio.wav", speaking


def figures(folder: Path, speaking: np.ndarray) -> dict:
    tracks, report = data.load_tracks(folder), json.loads((folder / "prepare_report.json").read_text())
    jit_raw, jit_smooth = [], []
    for p in range(2):
        raw, smooth = tracks["pose_raw"][p, :, :3], tracks["pose"][p, :, :3]
        still = prepare_eval.still_frames(smooth)
        jit_raw.append(prepare_eval.jitter(raw, still))
        jit_smooth.append(prepare_eval.jitter(smooth, still))
    n = min(speaking.shape[1], tracks["speaking"].shape[1])
    return {
        "faces_found": report["faces_found"],
        "jitter_deg_raw": [round(j, 4) for j in jit_raw],
        "jitter_deg": [round(j, 4) for j in jit_smooth],
        "yaw_range_deg": [round(float(np.ptp(tracks["pose"][p, :, 1])), 2) for p in range(2)],
        "speaking_acc": round(float((tracks["speaking"][:, :n] == speaking[:, :n]).all(0).mean()), 4),
        "who_speaks": report["who_speaks"]["method"],
        "frames": report["frames"],
        "seconds": report["total_seconds"],
        "warnings": report["warnings"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    args = parser.parse_args()
    if not (args.clips / "face_a.mp4").is_file() or not (args.clips / "face_b.mp4").is_file():
        print(json.dumps({"bench": "prepare_real", "skipped": f"no clips in {args.clips}"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        left, right, both, audio, speaking = conversation(args.clips, tmp)
        start = time.perf_counter()
        data.prepare(left=left, right=right, audio=audio, out=tmp / "pair", progress=False)
        pair = {**figures(tmp / "pair", speaking), "wall_seconds": round(time.perf_counter() - start, 1)}
        data.prepare(both, tmp / "side", progress=False)
        side = figures(tmp / "side", speaking)
    print(json.dumps({"bench": "prepare_real", "left_right": pair, "side_by_side": side}))


if __name__ == "__main__":
    main()
