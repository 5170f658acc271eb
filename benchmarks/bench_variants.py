"""The papers' ideas as options of one model, each trained for the same steps (or minutes) from
scratch on the same data and scored on the same held-out frames; prints one JSON line.

Variants (`VARIANTS`: each a set of `DialogueNeRFConfig` options against the default): ER-NeRF's
hashed tri-planes (section 3.2) at the dense planes' resolutions, and finer (to 512 texels, about
twice the parameters); ER-NeRF's adaptive pose encoding of the torso (section 3.4), with and
without DialogueNeRF's deformation field; and the ablations of the default's own parts (the
sinusoidal encoding of Eq. 2, no region attention, no expression planes, no deformation field, no
trailing pose). Per variant
(`scored_run.py`, a process each): held-out PSNR / SSIM per person and role, CPBD, the rendered
mouth against the loudness, flicker, the torso's PSNR and the seam error on a band around the
head-torso boundary, seconds per step, peak memory, CPU frame pairs per second, model size.

On the sample at 128 px, and with `--real` on a conversation built from ../shared/real_clips
(`real_conversations.side_by_side`, held out as bench_real holds out; skipped without the clips).
docs/results.md says what was adopted as the default, or why not yet.

Steps by default: a fixed step count gives the same runs on any machine, however busy, and
seconds per step say what each costs.

    python benchmarks/bench_variants.py [--steps 300 | --minutes 3] [--only default,hashed] [--real]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import real_conversations as rc
import scored_run

import minitalk as mt
from minitalk.prepare import data

VARIANTS = {
    "default": {},
    "hashed": {"hash_log2": 12},  # the dense planes' resolutions, the 128^2 level hashed into 4096
    "hashed-fine": {"hash_log2": 14, "levels": 6, "max_res": 512},  # 256^2 and 512^2 hashed
    "keypoints": {"pose_encoding": "keypoints"},
    "keypoints-no-deformation": {"pose_encoding": "keypoints", "deformation": False},
    "sinusoidal": {"encoding": "frequency"},
    "no-region-attention": {"region_attention": False},
    "no-expression-planes": {"expression_planes": 0},
    "no-deformation": {"deformation": False},
    "no-trailing-pose": {"torso_lag_s": 0.0},
}
REAL_HELD_OUT = {"held_out_s": 0.5, "held_out_every_s": 2.4}  # as bench_real: a block in each turn


def compare(prepared: Path, work: Path, names: list[str], train_settings: dict) -> dict:
    """Each variant trained from scratch with the same `train_settings` (budget, held-out split)."""
    return {name: scored_run.run_apart(prepared, work / f"run_{i}", VARIANTS[name], train_settings)
            for i, name in enumerate(names)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=300, help="training steps per variant (default: 300)")
    budget.add_argument("--minutes", type=float, help="training minutes per variant instead of steps")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, comma-separated")
    parser.add_argument("--real", action="store_true", help="also on the real clips (--real-only: only)")
    parser.add_argument("--real-only", action="store_true")
    parser.add_argument("--clips", type=Path, default=rc.CLIPS)
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    start = time.perf_counter()
    budget = {"minutes": args.minutes} if args.minutes else {"iters": args.steps}
    result: dict = {"bench": "variants", "budget": budget, "variants": {n: VARIANTS[n] for n in names}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.real_only:
            result["sample"] = compare(data.prepare_sample(), tmp / "sample", names, budget)
        if args.real or args.real_only:
            if not rc.clips_available(args.clips):
                result["real"] = {"skipped": f"no clips in {args.clips}"}
            else:
                rc.side_by_side(tmp, 2.4, args.clips)
                clips = {"left": tmp / "left.mp4", "right": tmp / "right.mp4", "audio": tmp / "audio.wav"}
                folder = mt.prepare.prepare(out=tmp / "prepared", size=128, progress=False, **clips)
                result["real"] = compare(folder, tmp / "real", names, {**budget, **REAL_HELD_OUT})
    result["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
