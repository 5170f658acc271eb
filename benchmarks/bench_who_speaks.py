"""Who speaks when among two and three voices, on conversations built from real clips; prints one
JSON line.

Uses ../shared/real_clips (face_a.mp4, face_b.mp4) when they exist (they are not part of the
project; without them it prints "skipped"). Five conversations of two people and five of three,
of known turns (`real_conversations`: each listener's own footage keeps playing, muted, so every
mouth moves; the third person is the first clip mirrored with its voice pitched down, a stand-in
for a third real speaker), each written as one video of the people side by side and prepared
from it (the people found, then who speaks among them). Scored per frame, every person's flag
right, with the learned voice print (GE2E) and the pitch + MFCC fallback, plainly and with a
0.25 s collar around each true change. Goal: >= 95% of frames with GE2E, two voices and three.

    python benchmarks/bench_who_speaks.py [--clips DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import real_conversations as rc

from minitalk.prepare import data, diarize

ROW_HEIGHT = 360  # pixels: each person's clip scaled to this height in the one video


def conversations(people, turns_by_name: dict, clips: Path, work: Path) -> dict:
    out = {}
    for name, (turns, gap) in turns_by_name.items():
        folder = work / f"{len(people)}_{name}"
        folder.mkdir()
        truth = rc.build(turns, gap, folder, clips, people, row_height=ROW_HEIGHT)
        start = time.perf_counter()
        prepared = data.prepare(folder / "row.mp4", folder / "prepared", size=64, progress=False)
        report = json.loads((prepared / "prepare_report.json").read_text())
        out[name] = {"seconds": round(truth.shape[1] / 25.0, 2), "people_found": len(report["people"]),
                     "prepare_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        if len(report["people"]) == len(people):
            out[name]["who_speaks"] = rc.score_who_speaks(prepared, truth)
    return out


def summary(runs: dict) -> dict:
    out = {}
    for voice_print in diarize.VOICE_PRINTS:
        scored = {k: v["who_speaks"][voice_print] for k, v in runs.items() if "who_speaks" in v}
        if len(scored) < len(runs):  # a conversation whose people were not all found counts as wrong
            scored.update({k: {"acc": 0.0, "acc_collar": 0.0} for k in runs if k not in scored})
        accs = {k: s["acc"] for k, s in scored.items()}
        worst = min(accs, key=accs.get)
        collar = [s["acc_collar"] for s in scored.values()]
        out[voice_print] = {
            "mean": round(float(np.mean(list(accs.values()))), 4),
            "worst": accs[worst],
            "worst_conversation": worst,
            "mean_collar": round(float(np.mean(collar)), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=rc.CLIPS, help="folder of the real clips")
    args = parser.parse_args()
    if not rc.clips_available(args.clips):
        print(json.dumps({"bench": "who_speaks", "skipped": f"no real clips in {args.clips}"}))
        return
    start = time.perf_counter()
    result: dict = {"bench": "who_speaks", "row_height": ROW_HEIGHT}
    with tempfile.TemporaryDirectory() as tmp:
        for people, turns in ((rc.TWO, rc.CONVERSATIONS), (rc.THREE, rc.CONVERSATIONS_3)):
            runs = conversations(people, turns, args.clips, Path(tmp))
            result[f"voices_{len(people)}"] = {"conversations": runs, **summary(runs)}
    result["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
