"""Data preparation on the sample dialogue against its ground truth; prints one JSON line.

Goals (issue: data preparation): rotation error <= 2 degrees (median, worst person
and angle, constant offset removed), jitter on still stretches below the truth's
own, >= 95% of frames with the right speaker flags, blink F1 >= 0.8, and the
whole preparation in under 3 minutes on 2 CPU cores. Runs from scratch (no cache).

    python benchmarks/bench_prepare.py [--size 128] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import minitalk as mt
from minitalk.prepare import data
from minitalk.prepare import evaluate as prepare_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--keep", help="prepare into this folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp) / "prepared"
        if (out / ".cache").exists():  # a kept folder: every stage runs again, none read back
            for f in (out / ".cache").iterdir():
                f.unlink()
        (out / "prepare_report.json").unlink(missing_ok=True)  # else a finished folder is returned as it is
        start = time.perf_counter()
        data.prepare(mt.SAMPLE_DIR / "dialogue.mp4", out, size=args.size, progress=False)
        seconds = time.perf_counter() - start
        report = json.loads((out / "prepare_report.json").read_text())
        with np.load(mt.SAMPLE_DIR / "dialogue_gt.npz") as z:
            truth = {k: z[k] for k in z.files}
        figures = prepare_eval.compare(data.load_tracks(out), truth)
    line = {"bench": "prepare", **figures, "seconds": round(seconds, 1),
            "stage_seconds": report["stage_seconds"], "faces_found": report["faces_found"],
            "frames": report["frames"]}  # fmt: skip
    print(json.dumps(line))


if __name__ == "__main__":
    main()
