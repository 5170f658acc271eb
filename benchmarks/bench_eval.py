"""Evaluation: the Preference Score against the challenge rules, the sync proxy, CPBD and the time
`minitalk evaluate` takes; prints one JSON line.

Goals (issue: evaluate a rendered conversation): for `talking` and `listening`, MRR and DCG of the
Preference Score (`ps`) against #Top-1, rank-sum and a decision tree on held-out segments, mean and
std over five seeds, again on degradation families the learned methods never saw
(`unseen_family`), and `ps_versus`: the PS minus each baseline, paired by seed, with a verdict (a
difference within its spread is a tie); all on the shipped preference data
(`data_samples/preference_data.npz`), or on data built here with `--rebuild`.
`sync_offset_error_frames`: the largest error of the sync proxy over clips shifted by known frames
(goal 0); `cpbd_monotonic`: CPBD falling with every step of a blur series on every tested frame;
evaluating a 20 s clip in under a tenth of its length on 2 cores (`evaluate_seconds_20s`).

The preferences are orderings known by construction (degradations of the sample's renders), not
human judgements.

    python benchmarks/bench_eval.py [--rebuild [--segments 24] [--length 40]]
                                    [--parts sync,cpbd,speed,preference]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import minitalk as mt
from minitalk import io
from minitalk.evaluate import dataset, degrade, preference, ranking, sync
from minitalk.evaluate.clip import evaluate_clip
from minitalk.evaluate.faces import read_panels
from minitalk.evaluate.sharpness import cpbd
from minitalk.prepare import data

SHIFTS = (-15, -10, -6, -3, -1, 0, 1, 3, 6, 10, 15)
BLUR = (0.5, 1.0, 1.5, 2.0, 3.0)


def sync_errors(prepared: Path, tracks: dict, seconds: float = 20.0) -> dict:
    """The sync proxy on the sample's real crops with the audio moved by each of SHIFTS frames."""
    fps = float(tracks["fps"])
    n = int(seconds * fps)
    readings = [read_panels(data.read_person_frames(prepared, p)[:n]) for p in range(2)]
    audio = io.read_audio(prepared / "audio.wav")
    found = {}
    for k in SHIFTS:
        env = sync.speech_envelope(degrade.shift_audio(audio, k, fps), fps, n)
        found[k] = [
            sync.lip_sync(r.opening, r.interior, env, tracks["speaking"][p, :n])["av_offset"]
            for p, r in enumerate(readings)
        ]
    worst = max(abs(v - k) for k, vs in found.items() for v in vs)
    return {"sync_offset_error_frames": worst, "sync_found": {str(k): v for k, v in found.items()}}


def cpbd_series(prepared: Path, n_frames: int = 20) -> dict:
    """CPBD on frames of both people and their blurred copies: falling at every step (or at 0)."""
    ok, curves = True, []
    for p in range(2):
        crops = data.read_person_frames(prepared, p)
        for t in np.linspace(0, len(crops) - 1, n_frames // 2).round().astype(int):
            s = [cpbd(crops[t])] + [cpbd(cv2.GaussianBlur(crops[t], (0, 0), b)) for b in BLUR]
            ok &= all(a > b or a == b == 0 for a, b in zip(s, s[1:], strict=False))
            curves.append(s)
    sigmas = ["0", *map(str, BLUR)]
    mean = np.round(np.mean(curves, 0), 4).tolist()
    return {"cpbd_monotonic": bool(ok), "cpbd_by_blur_sigma": dict(zip(sigmas, mean, strict=True))}


def evaluate_speed(prepared: Path, tracks: dict, seconds: float = 20.0) -> dict:
    """`minitalk evaluate` on a 20 s two-person clip (the sample's real crops side by side), alone
    and against the prepared folder's frames."""
    from minitalk.dialogue.roles import Roles

    fps = float(tracks["fps"])
    n = int(seconds * fps)
    work = Path(tempfile.mkdtemp())
    panels = np.concatenate([data.read_person_frames(prepared, p)[:n] for p in range(2)], axis=2)
    audio = io.read_audio(prepared / "audio.wav")[: int(seconds * io.SAMPLE_RATE)]
    io.write_video(work / "clip.mp4", panels, fps, audio=audio)
    (work / "clip.json").write_text(
        json.dumps({"turns": Roles(tracks["speaking"][:, :n], "given").turns(fps)})
    )
    t0 = time.perf_counter()
    evaluate_clip(work / "clip.mp4", progress=False)
    alone = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluate_clip(work / "clip.mp4", prepared=prepared, progress=False)
    return {
        "evaluate_seconds_20s": round(alone, 2),
        "evaluate_seconds_20s_with_reference": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rebuild",
        action="store_true",
        help="build the preference data here instead of reading data_samples/preference_data.npz",
    )
    ap.add_argument("--segments", type=int, default=24, help="with --rebuild: segments (at most all windows)")
    ap.add_argument("--length", type=int, default=40, help="with --rebuild: frames per segment")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--parts", default="sync,cpbd,speed,preference", help="which figures to measure")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    prepared = Path(tempfile.gettempdir()) / "minitalk_sample_prepared"
    data.prepare(mt.SAMPLE_DIR / "dialogue.mp4", prepared, progress=False)
    tracks = data.load_tracks(prepared)
    out = {"bench": "eval", "preferences": "known orderings of degraded renders, not human rankings"}
    if "sync" in parts:
        out.update(sync_errors(prepared, tracks))
    if "cpbd" in parts:
        out.update(cpbd_series(prepared))
    if "speed" in parts:
        out.update(evaluate_speed(prepared, tracks))
    if "preference" not in parts:
        print(json.dumps(out))
        return

    if args.rebuild:
        t0 = time.perf_counter()
        avatar = mt.SAMPLE_DIR / "avatars.pt"
        built = dataset.build(prepared, avatar, args.segments, args.length, progress=False)
        out["dataset_seconds"] = round(time.perf_counter() - t0, 1)
        out["data"] = f"built here: {len(built['segments'])} segments of {args.length} frames"
    else:
        built, out["data"] = preference.load_data(dataset.SHIPPED_DATA)
    seeds = range(args.seeds)
    t0 = time.perf_counter()
    for track in ("talking", "listening"):
        d = built[track]
        res = ranking.compare(d, seeds)
        unseen = {}
        for fam in degrade.FAMILIES:
            if track in fam.tracks and (d.family == fam.name).any():
                unseen[fam.name] = ranking.compare(d, seeds, held_out_family=fam.name)
        against = ranking.versus(res)
        res.pop("per_seed")
        out[track] = {
            **res,
            "ps_versus": against,
            "unseen_family": {
                m: {
                    k: round(float(np.mean([u[m][k][0] for u in unseen.values()])), 4) for k in ("mrr", "dcg")
                }
                for m in (*ranking.METHODS, "gt")
            },
            "unseen_family_ps_mrr": {f: u["ps"]["mrr"][0] for f, u in unseen.items()},
            "importance_dcg_drop": ranking.permutation_importance(d, seeds),
            "clips": int(len(d.X)),
            "pairs": int(len(preference.comparable_pairs(d))),
        }
    out["preference_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
