"""DialogueNeRF on real faces: a conversation built from two real clips, prepared, trained for fixed
budgets and scored on held-out frames; prints one JSON line and saves a real | rendered strip.

Uses ../shared/real_clips/face_a.mp4 and face_b.mp4 (not part of the project: without them this
prints a "skipped" line). Both clips play once side by side; the audio is the first clip's up to
`--switch` seconds and the second's after (`real_conversations.side_by_side`), so every frame is
a moment of footage seen once. Held out: the last 0.5 s of every 2.4 s, one block in each turn,
so each person is scored as speaker and as listener on frames whose images training never saw.

Reported per budget: held-out PSNR / SSIM per person and role, steps and seconds per step, and
the held-out frames whose head pose lies outside the range the person's training frames cover,
scored apart, and each speaker's held-out frames rendered from the tracked expression instead of
the audio (what the audio's mouth costs). What an unseen pose costs is probed by one more run
(`--probe-minutes`) that also holds out each person's half second furthest from their usual pose.
Goals at 128 px: >= 28 dB and >= 0.90 SSIM after 20 minutes on 2 cores; at 256 px, the same
within 40 minutes.

    python benchmarks/bench_real.py [--size 128] [--minutes 10,20] [--probe-minutes 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import real_conversations as rc

from minitalk import metrics
from minitalk.nerf import checkpoint, train
from minitalk.nerf.evaluate import frame_scores, summarise
from minitalk.nerf.render import render_frame
from minitalk.prepare import data
from minitalk.utils import get_device

HELD_OUT_S, HELD_OUT_EVERY_S = 0.5, 2.4
GOALS = {128: (20, 28.0, 0.90), 256: (40, 28.0, 0.90)}  # size: (minutes, PSNR, SSIM)


def pose_split(rows: list[dict], frames) -> dict:
    """Held-out frames whose head pose (pitch, yaw, roll) lies outside the person's training range,
    counted and scored apart from those inside it."""
    pose = frames.pose.numpy()[..., :3]
    train_frames = frames.trainable[0].numpy()  # one clip: the same frames for both people
    lo, hi = pose[:, train_frames].min(axis=1), pose[:, train_frames].max(axis=1)  # (P, 3)
    beyond = [
        float(np.maximum(lo[r["person"]] - pose[r["person"], r["frame"]], 0).max()
              + np.maximum(pose[r["person"], r["frame"]] - hi[r["person"]], 0).max())
        for r in rows
    ]  # fmt: skip
    outside = np.array(beyond) > 0

    def mean(key, sel):
        vals = [r[key] for r, s in zip(rows, sel, strict=True) if s]
        return round(float(np.mean(vals)), 4) if vals else None

    # like against like: [[[inside, outside] speaking, [inside, outside] listening] per person],
    # so a person's harder role is not counted as a pose's cost
    inside, past = (summarise([r for r, o in zip(rows, outside, strict=True) if o == side], frames.n_people)
                    for side in (False, True))  # fmt: skip

    def by_role(key):
        pairs = zip(inside[f"{key}_by_role"], past[f"{key}_by_role"], strict=True)  # per person
        return [[[i, o] for i, o in zip(roles_in, roles_past, strict=True)] for roles_in, roles_past in pairs]

    return {
        "psnr_by_role": by_role("psnr"),
        "ssim_by_role": by_role("ssim"),
        "frames_outside": int(outside.sum()),
        "frames_inside": int((~outside).sum()),
        "most_degrees_beyond": round(max(beyond, default=0.0), 2),
        "psnr_inside": mean("psnr", ~outside),
        "psnr_outside": mean("psnr", outside),
        "ssim_inside": mean("ssim", ~outside),
        "ssim_outside": mean("ssim", outside),
    }


def furthest_turns(pose: np.ndarray, fps: float, block_s: float) -> list[float]:
    """Per person, the start (s) of the `block_s` block whose head pose (P, T, 3+ angles) lies
    furthest from the person's median pose on average: held out, its frames show the field a
    turn of the head that training saw least of (or not at all)."""
    n = int(round(block_s * fps))
    starts = []
    for angles in pose[..., :3]:
        away = np.linalg.norm(angles - np.median(angles, axis=0), axis=1)  # (T,) degrees
        mean = np.convolve(away, np.ones(n) / n, mode="valid")  # (T - n + 1,) block means
        starts.append(round(int(np.argmax(mean)) / fps, 3))
    return starts


def speaker_from_tracking(model, frames, rows: list[dict], device) -> list:
    """Per person, the mean PSNR of their held-out speaker frames rendered from the tracked
    expression instead of the audio: how much of a speaker's error is the audio's mouth (None where
    a person has no held-out speaker frame)."""
    import torch

    out = []
    for p in range(frames.n_people):
        psnrs = []
        for r in (r for r in rows if r["person"] == p and r["speaking"]):
            one = torch.tensor([p]), torch.tensor([r["frame"]])
            mel, expression, blink, _ = frames.face_state_inputs(*one)
            with torch.no_grad():
                state = model.face_state(mel.to(device), expression.to(device), blink.to(device),
                                         torch.tensor([False], device=device))  # fmt: skip
            img = render_frame(model, frames, p, r["frame"], device, face_state=state)
            psnrs.append(metrics.psnr(img, frames.images[p, r["frame"]].numpy().astype(np.float32) / 255))
        out.append(round(float(np.mean(psnrs)), 4) if psnrs else None)
    return out


def strip(model, frames, device, path: Path, per_person: int = 4) -> Path:
    """Rows per person of held-out frames: real over rendered."""
    import matplotlib.image

    held = np.flatnonzero(frames.held_out[0].numpy())
    picks = held[np.linspace(0, len(held) - 1, per_person).round().astype(int)]
    rows = []
    for p in range(frames.n_people):
        real = [frames.images[p, t].numpy() for t in picks]
        fake = [(render_frame(model, frames, p, int(t), device) * 255).round().astype(np.uint8)
                for t in picks]  # fmt: skip
        rows += [np.concatenate(real, axis=1), np.concatenate(fake, axis=1)]
    matplotlib.image.imsave(path, np.concatenate(rows, axis=0))
    return path


def render_cost(model, frames, device, sizes) -> dict:
    """Seconds to render both people of one frame at each size (the field is resolution-free:
    `render_frame(size=...)` casts more rays through the same cameras), the best of three."""
    out = {}
    for size in sizes:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for p in range(frames.n_people):
                render_frame(model, frames, p, 0, device, size=size)
            times.append(time.perf_counter() - start)
        out[str(size)] = round(min(times), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=rc.CLIPS)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--minutes", default="10,20", help="budgets, comma-separated")
    parser.add_argument("--probe-minutes", type=float, default=10.0,
                        help="budget of the unseen-pose probe run (0: skip it)")  # fmt: skip
    parser.add_argument("--switch", type=float, default=2.4, help="seconds: the audio changes speaker here")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out",
                        help="where the strip goes (real frames: keep it out of the repository)")  # fmt: skip
    args = parser.parse_args()
    if not rc.clips_available(args.clips):
        print(json.dumps({"bench": "real", "skipped": f"no clips in {args.clips}"}))
        return
    budgets = sorted(float(m) for m in args.minutes.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    device = get_device()
    result: dict = {"bench": "real", "size": args.size, "device": str(device), "clips": list(rc.SPEECH_CLIPS)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = rc.side_by_side(tmp, args.switch, args.clips)
        start = time.perf_counter()
        folder = data.prepare(left=tmp / "left.mp4", right=tmp / "right.mp4", audio=tmp / "audio.wav",
                              out=tmp / "prepared", size=args.size, progress=False)  # fmt: skip
        report = json.loads((folder / "prepare_report.json").read_text())
        tracks = data.load_tracks(folder)
        result.update(
            frames=report["frames"],
            prepare_seconds=round(time.perf_counter() - start, 1),
            who_speaks=report["who_speaks"]["method"] + " / " + report["who_speaks"]["voice_print"],
            who_speaks_acc=round(rc.frame_accuracy(tracks["speaking"], truth), 4),
            budgets={},
        )
        run = tmp / "run"
        for minutes in budgets:
            clock = time.perf_counter()
            trained = train.train(folder, run, progress=False, iters=10**6, minutes=minutes, eval_every=10**9,
                                  held_out_s=HELD_OUT_S, held_out_every_s=HELD_OUT_EVERY_S)  # fmt: skip
            model, frames = checkpoint.load_model(run, folder)
            model = model.to(device)
            rows = frame_scores(model, frames, device)
            scores = summarise(rows, frames.n_people)
            result["held_out_frames"] = trained["held_out_frames"]
            result["pose_seen"] = trained["pose_seen"]
            result["budgets"][f"{minutes:g}"] = {
                "steps": trained["iterations"],
                "seconds_per_step": round(60 * trained["minutes"] / trained["iterations"], 3),
                "psnr_by_role": scores["psnr_by_role"],  # [[speaker, listener] per person]
                "ssim_by_role": scores["ssim_by_role"],
                "psnr": scores["psnr"],
                "ssim": scores["ssim"],
                "unseen_pose": pose_split(rows, frames),
                "psnr_speaker_from_tracked_expression": speaker_from_tracking(model, frames, rows, device),
                "wall_seconds": round(time.perf_counter() - clock, 1),
            }
        result["seconds_per_frame_pair"] = render_cost(model, frames, device, (args.size, 512))
        if args.probe_minutes > 0:  # the unseen-pose probe: each person's furthest turn held out too
            at = furthest_turns(tracks["pose"], float(tracks["fps"]), HELD_OUT_S)
            probe = tmp / "probe"
            train.train(folder, probe, progress=False, iters=10**6, minutes=args.probe_minutes,
                        eval_every=10**9, held_out_s=HELD_OUT_S, held_out_every_s=HELD_OUT_EVERY_S,
                        held_out_at=at)  # fmt: skip
            probe_model, probe_frames = checkpoint.load_model(probe, folder)
            rows = frame_scores(probe_model.to(device), probe_frames, device)
            result["unseen_pose_probe"] = {"minutes": args.probe_minutes, "held_out_at_s": at,
                                           **pose_split(rows, probe_frames)}  # fmt: skip
        path = strip(model, frames, device, args.out / f"bench_real_{args.size}px.png")
        result["strip"] = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    if args.size in GOALS:
        minutes, psnr, ssim = GOALS[args.size]
        at = result["budgets"].get(f"{minutes:g}")
        if at is not None:
            values = [v for row in at["psnr_by_role"] for v in row if v is not None]
            sims = [v for row in at["ssim_by_role"] for v in row if v is not None]
            result["goal"] = f">= {psnr} dB and >= {ssim} SSIM for each person and role after {minutes} min"
            result["goal_met"] = bool(min(values) >= psnr and min(sims) >= ssim)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
