"""The papers' ideas as options of one model, each trained for the same steps (or minutes) from
scratch on the same data and scored on the same held-out frames; prints one JSON line.

Variants (`VARIANTS`: `DialogueNeRFConfig` options against the default, and training settings
under "train"): ER-NeRF's hashed tri-planes (3.2), at the dense planes' resolutions and finer;
its adaptive pose encoding of the torso (3.4), with and without the deformation field, and its
2D torso field over the image plane (3.4), on the key points or on the pose vector; the
default's own parts taken out (the sinusoidal encoding of Eq. 2 in the planes' place, region
attention, expression planes, deformation field, trailing pose); the Disentangling Head NeRF's
codes with Eq. 6 and its Table 2 ablation (without the lip-sync module, without Eq. 6). Per
variant, `scored_run.py` in a process of its own (its docstring lists the scores).

On the sample at 128 px, and with `--real` on a conversation built from ../shared/real_clips
(`real_conversations.side_by_side`, held out as bench_real holds out; skipped without the clips).
docs/results.md says what was adopted as the default, or why not yet. Steps by default: a fixed
step count gives the same runs on any machine, however busy; seconds per step say what each costs.

    python benchmarks/bench_variants.py [--steps 300 | --minutes 3] [--only default,hashed] [--seeds 0,1]
                                        [--real | --real-only]
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
    "torso-2d": {"torso": "2d", "pose_encoding": "keypoints"},  # ER-NeRF's torso: 2D field, key points
    "torso-2d-vector": {"torso": "2d"},  # the same field conditioned on the pose vector
    "sinusoidal": {"encoding": "frequency"},
    "no-region-attention": {"region_attention": False},
    "no-expression-planes": {"expression_planes": 0},
    "no-deformation": {"deformation": False},
    "no-trailing-pose": {"torso_lag_s": 0.0},
    # the Disentangling Head NeRF's Table 2: its codes with Eq. 6, without the lip-sync module, without Eq. 6
    "disentangled": {"codes": "disentangled"},
    "disentangled-no-lip-sync": {"codes": "disentangled", "train": {"lip_sync": False}},
    "disentangled-no-loss": {"codes": "disentangled", "train": {"disentangle_weight": 0.0}},
}
REAL_HELD_OUT = {"held_out_s": 0.5, "held_out_every_s": 2.4}  # as bench_real: a block in each turn


def compare(prepared: Path, work: Path, names: list[str], train_settings: dict, seeds=(0,)) -> dict:
    """Each variant trained from scratch with the same `train_settings` (budget, held-out split), and
    its own under "train" (a training loss it turns off); once per seed, "NAME@SEED" past the first."""
    runs = {}
    for seed in seeds:
        for name in names:
            settings = {k: v for k, v in VARIANTS[name].items() if k != "train"}
            own = {**train_settings, **VARIANTS[name].get("train", {}), "seed": seed}
            key = name if seed == seeds[0] else f"{name}@{seed}"
            runs[key] = scored_run.run_apart(prepared, work / f"run_{len(runs)}", settings, own)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=300, help="training steps per variant (default: 300)")
    budget.add_argument("--minutes", type=float, help="training minutes per variant instead of steps")
    parser.add_argument("--only", default=",".join(VARIANTS), help="variants, comma-separated")
    parser.add_argument("--real", action="store_true", help="also on the real clips (--real-only: only)")
    parser.add_argument("--real-only", action="store_true")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default: 0)")
    parser.add_argument("--clips", type=Path, default=rc.CLIPS)
    args = parser.parse_args()
    names = args.only.split(",")
    seeds = tuple(int(x) for x in args.seeds.split(","))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    start = time.perf_counter()
    budget = {"minutes": args.minutes} if args.minutes else {"iters": args.steps}
    result: dict = {"bench": "variants", "budget": budget, "seeds": list(seeds),
                    "variants": {n: VARIANTS[n] for n in names}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.real_only:
            result["sample"] = compare(data.prepare_sample(), tmp / "sample", names, budget, seeds)
        if args.real or args.real_only:
            if not rc.clips_available(args.clips):
                result["real"] = {"skipped": f"no clips in {args.clips}"}
            else:
                rc.side_by_side(tmp, 2.4, args.clips)
                clips = {"left": tmp / "left.mp4", "right": tmp / "right.mp4", "audio": tmp / "audio.wav"}
                folder = mt.prepare.prepare(out=tmp / "prepared", size=128, progress=False, **clips)
                result["real"] = compare(folder, tmp / "real", names, {**budget, **REAL_HELD_OUT}, seeds)
    result["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
