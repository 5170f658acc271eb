"""Data preparation on real video: conversations built from two real clips; prints one JSON line.

Uses ../shared/real_clips/face_a.mp4 and face_b.mp4 when they exist (they are not part of the
project; without them the real part prints "skipped"). Conversations of known turns are built
from them (`real_conversations`: the listener's own footage keeps playing, muted, so both mouths
move) and prepared as --left / --right; who speaks when is scored per frame with the learned
voice print (GE2E) and with the pitch + MFCC fallback, on the same tracks. The share of frames
right is given plainly and with diarization scoring's 0.25 s collar around each true change.
The side-by-side path is checked on the first conversation too.

Real video has no ground-truth pose, so jitter is measured on the tracked pose itself: the mean
frame-to-frame change of the angles on the stillest 30% of frames, raw and smoothed; and the
assumed field of view is varied to see what it changes in the pose fit (`fov_sensitivity`).

`--long MINUTES`: peak memory (RSS, in a fresh process each) of preparing the sample repeated to
one minute and to MINUTES minutes, which must stay flat as the clip grows.

    python benchmarks/bench_prepare_real.py [--clips DIR] [--long 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import real_conversations as rc

from minitalk import io
from minitalk.prepare import data, diarize
from minitalk.prepare import evaluate as prepare_eval


def jitter(tracks) -> dict:
    raw, smooth = [], []
    for p in range(2):
        still = prepare_eval.still_frames(tracks["pose"][p, :, :3])
        raw.append(round(prepare_eval.jitter(tracks["pose_raw"][p, :, :3], still), 4))
        smooth.append(round(prepare_eval.jitter(tracks["pose"][p, :, :3], still), 4))
    return {"jitter_deg_raw": raw, "jitter_deg": smooth}


def fov_sensitivity(folder: Path, fovs=(15.0, 26.0, 40.0, 60.0)) -> dict:
    """What the assumed field of view (`--fov`, 26 degrees by default) changes: each person's pose
    solved again from the same tracked landmarks through a camera of each `fovs`, with the median
    reprojection error of the rigid points (pixels of the crop) and the yaw range: how far the
    pose moves with the guess, and how well each camera explains the landmarks."""
    from minitalk import camera
    from minitalk.prepare import headpose

    tracks, assumed = data.load_tracks(folder), float(data.PrepareConfig().fov)
    out: dict = {}
    for fov in fovs:
        errors, yaw = [], []
        for p in range(2):
            k = tracks["intrinsics"][p].astype(np.float64).copy()
            k[[0, 1], [0, 1]] *= np.tan(np.radians(assumed / 2)) / np.tan(np.radians(fov / 2))  # f ~ 1 / tan
            landmarks = tracks["landmarks"][p].astype(np.float64)
            face3d = tracks["face3d"][p].astype(np.float64)
            pose = headpose.solve_pose(landmarks, face3d, k)
            rot, trans = camera.pose_to_rt(pose)
            uv = camera.project(np.einsum("tij,nj->tni", rot, face3d) + trans[:, None], k)
            error = np.linalg.norm(uv - landmarks[..., :2], axis=-1)[:, list(headpose.RIGID)]
            errors.append(round(float(np.median(error)), 3))
            yaw.append([round(float(pose[:, 1].min()), 1), round(float(pose[:, 1].max()), 1)])
        out[f"{fov:g}"] = {"reprojection_px": errors, "yaw_range_deg": yaw}
    return out


def real_part(clips: Path) -> dict:
    out: dict = {"conversations": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (turns, gap)) in enumerate(rc.CONVERSATIONS.items()):
            work = Path(tmp) / name
            work.mkdir()
            truth = rc.build(turns, gap, work, clips)
            start = time.perf_counter()
            folder = data.prepare(left=work / "left.mp4", right=work / "right.mp4", audio=work / "audio.wav",
                                  out=work / "prepared", progress=False)  # fmt: skip
            report = json.loads((folder / "prepare_report.json").read_text())
            out["conversations"][name] = {
                "seconds": round(truth.shape[1] / 25.0, 2),
                "faces_found": report["faces_found"],
                "prepare_seconds": round(time.perf_counter() - start, 1),
                "who_speaks": rc.score_who_speaks(folder, truth),
                **(jitter(data.load_tracks(folder)) if k == 0 else {}),
                **({"fov": fov_sensitivity(folder)} if k == 0 else {}),
            }
            if k == 0:  # the same conversation as one side-by-side video
                left, _ = io.read_video(work / "left.mp4")
                right, _ = io.read_video(work / "right.mp4")
                import cv2

                h = left.shape[1]
                right = np.stack([cv2.resize(f, (h * f.shape[1] // f.shape[0], h)) for f in right])
                both = work / "side_by_side.mp4"
                io.write_video(both, np.concatenate([left, right], axis=2), 25.0,
                               audio=io.read_audio(work / "audio.wav"))  # fmt: skip
                side = data.prepare(both, work / "side", progress=False)
                out["side_by_side"] = {
                    "faces_found": json.loads((side / "prepare_report.json").read_text())["faces_found"],
                    "who_speaks_acc": round(rc.frame_accuracy(data.load_tracks(side)["speaking"], truth), 4),
                }
    for voice_print in diarize.VOICE_PRINTS:
        accs = [c["who_speaks"][voice_print]["acc"] for c in out["conversations"].values()]
        collar = [c["who_speaks"][voice_print]["acc_collar"] for c in out["conversations"].values()]
        out[f"who_speaks_acc_{voice_print}"] = {"mean": round(float(np.mean(accs)), 4), "worst": min(accs),
                                                "mean_collar": round(float(np.mean(collar)), 4)}  # fmt: skip
    return out


def peak_rss_of_prepare(minutes: float, tmp: Path) -> dict:
    """Prepare the sample repeated to `minutes` in a fresh process; its peak RSS and seconds.

    The peak is the child's own high-water mark (VmHWM, which starts afresh with the new
    program), not `ru_maxrss`, which a child inherits from the process that started it."""
    import minitalk

    video, fps = io.read_video(minitalk.SAMPLE_DIR / "dialogue.mp4")
    audio = io.read_audio(minitalk.SAMPLE_DIR / "dialogue.mp4")
    n = int(minutes * 60 * fps)
    clip = tmp / f"long_{minutes:g}.mp4"
    io.write_video(clip, (video[i % len(video)] for i in range(n)), fps,
                   audio=np.resize(audio, int(n / fps * io.SAMPLE_RATE)))  # fmt: skip
    code = (
        "import json, time; from minitalk.prepare import data; t = time.perf_counter(); "
        f"data.prepare({str(clip)!r}, {str(tmp / f'out_{minutes:g}')!r}, progress=False); "
        "hwm = next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')); "
        "print(json.dumps({'peak_rss_gb': round(hwm / 1e6, 3), "
        "'seconds': round(time.perf_counter() - t, 1)}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=rc.CLIPS)
    parser.add_argument("--long", type=float, default=None, metavar="MINUTES")
    args = parser.parse_args()
    line: dict = {"bench": "prepare_real"}
    if args.long is not None:
        with tempfile.TemporaryDirectory() as tmp:
            line["long_clip"] = {f"{m:g}_min": peak_rss_of_prepare(m, Path(tmp)) for m in (1.0, args.long)}
    elif rc.clips_available(args.clips):
        line.update(real_part(args.clips))
    else:
        line["skipped"] = f"no clips in {args.clips}"
    print(json.dumps(line))


if __name__ == "__main__":
    main()
