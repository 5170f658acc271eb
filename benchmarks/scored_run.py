"""One model trained for a fixed budget (steps or minutes) and scored on held-out frames, in a
process of its own (so that each run's peak memory is its own): the unit of `bench_render.py
--paths` (per-pixel against the 2D neural renderer) and of `bench_variants.py` (the papers' ideas
as options of one model).

Scores: held-out PSNR / SSIM per person and role; on the first held-out stretch, sharpness (CPBD),
flicker, the torso's PSNR, the seam error (`minitalk.nerf.evaluate.region_scores`) and the
landmark distance to the real frames (LMD, FaceMesh on both, in face widths); the rendered mouth's
correlation with the loudness; each person rendered with the other's face state
(`disentangle.expression_swap`: how far the identity landmarks move, whether the mouth follows the
donor) and, with disentangled codes, the other's albedo and illumination (`disentangle.colour_swap`);
seconds per step (and the reference encoder's), peak memory, frame pairs per second, model size.

    python benchmarks/scored_run.py PREPARED RUN '{"upsample": 4}' '{"minutes": 6, "held_out_s": 0.5}'
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from minitalk import metrics
from minitalk.evaluate.sharpness import cpbd
from minitalk.nerf import checkpoint, disentangle, evaluate, render, train
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.prepare import data
from minitalk.prepare.face import detect_landmarks
from minitalk.utils import to_uint8

EVAL_FRAMES = 24  # held-out frames per person scored, spread over the clip (512 px per pixel: seconds each)
STRETCH = 25  # consecutive held-out frames per person for sharpness and flicker
SWAP_FRAMES = 16  # held-out frames per person for the swaps, spread over the donor's mouth opening


def held_out_stretch(frames, length: int = STRETCH) -> np.ndarray:
    """The first `length` consecutive held-out frames (the clip's first held-out block)."""
    held = np.flatnonzero(frames.held_out[0].numpy())
    return held[:length]


def flicker(images: np.ndarray) -> float:
    """Mean absolute difference between consecutive frames (T, S, S, 3) in 0..1."""
    return float(np.abs(np.diff(images.astype(np.float32), axis=0)).mean())


def pairs_per_second(model, frames, batch: int = 4, repeats: int = 5) -> float:
    """Frame pairs (both people) per second, `batch` pairs per call as `minitalk render` batches
    them: the median of `repeats` calls after a warm-up."""
    people = torch.arange(frames.n_people).repeat(batch)
    t = torch.arange(batch).repeat_interleave(frames.n_people) * 10
    render.render_images(model, frames, people, t, torch.device("cpu"))
    seconds = []
    for i in range(repeats):
        start = time.perf_counter()
        render.render_images(model, frames, people, t + i, torch.device("cpu"))
        seconds.append(time.perf_counter() - start)
    return batch / float(np.median(seconds))


def one_run(mcfg: DialogueNeRFConfig, prepared: Path, run: Path, **train_settings) -> dict:
    """Train `mcfg` on `prepared` from scratch and score it. `train_settings` go to `train.train`:
    the budget (`iters` steps or `minutes`, which then alone decide) and the held-out split."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    warnings.simplefilter("ignore")
    if "minutes" in train_settings:
        train_settings = {"iters": 10**9, **train_settings}
    report = train.train(prepared, run, mcfg, resume=False, progress=False, eval_every=10**9,
                         eval_frames=EVAL_FRAMES, **train_settings)  # fmt: skip
    model, frames = checkpoint.load_model(run, prepared)
    cpu = torch.device("cpu")
    stretch = held_out_stretch(frames)
    sharp, flick, flick_real, regions, lmd = [], [], [], [], []
    for p in range(frames.n_people):
        people = torch.full((len(stretch),), p)
        fake = render.render_images(model, frames, people, torch.from_numpy(stretch), cpu)
        real = frames.images[p, stretch].numpy().astype(np.float32) / 255
        sharp.append([float(np.mean([cpbd(x) for x in fake])), float(np.mean([cpbd(x) for x in real]))])
        flick.append(flicker(fake))
        flick_real.append(flicker(real))
        labels = frames.labels[p, stretch].numpy().reshape(len(stretch), frames.size, frames.size)
        regions.append(evaluate.region_scores(fake, real, labels))
        marks = [detect_landmarks(to_uint8(x)) for x in (fake, real)]
        lmd.append(metrics.lmd(*marks))
    swaps = {}
    for p in range(frames.n_people):  # each person with the other's expression (and codes, if it has them)
        picked = disentangle.swap_frames(frames, 1 - p, SWAP_FRAMES)
        swaps[f"{p}<-{1 - p}"] = disentangle.expression_swap(model, frames, p, 1 - p, picked, cpu)["scores"]
        for code in ("albedo", "illumination") if model.z_light is not None else ():
            scores = disentangle.colour_swap(model, frames, p, 1 - p, picked[::4], code, cpu)["scores"]
            swaps[f"{p}<-{1 - p}"].update({f"{code}_{k}": v for k, v in scores.items()})
    pairs, measures = evaluate.mouth_measures(frames, model, cpu)
    loud = data.load_tracks(prepared)["rms"][pairs[:, 1]]
    rendered = measures["interior"]
    return {
        "size": frames.size,
        "settings": {k: v for k, v in mcfg.to_dict().items() if v != getattr(DialogueNeRFConfig(), k)},
        "steps": report["iterations"],
        "train_settings": {k: v for k, v in train_settings.items() if k not in ("iters", "minutes")},
        "seconds_per_step": round(60 * report["minutes"] / max(report["iterations"], 1), 3),
        "reference_seconds": report["reference_seconds"],
        "psnr_by_role": report["psnr_by_role"],
        "ssim_by_role": report["ssim_by_role"],
        "psnr": report["psnr"],
        "ssim": report["ssim"],
        "cpbd": [round(s[0], 4) for s in sharp],
        "cpbd_real": [round(s[1], 4) for s in sharp],
        "mouth_audio_corr": round(metrics.correlation(rendered, loud), 4),
        "flicker": [round(f, 5) for f in flick],
        "flicker_real": [round(f, 5) for f in flick_real],
        "lmd": [round(x, 4) for x in lmd],
        "swaps": {k: {m: round(v, 4) for m, v in x.items()} for k, x in swaps.items()},
        "torso_psnr": [round(r["torso_psnr"], 3) for r in regions],
        "seam_error": [round(r["seam_error"], 3) for r in regions],
        "peak_train_gb": report["peak_mem_gb"],
        "render_pairs_per_second": round(pairs_per_second(model, frames), 3),
        "model_mb": round(sum(p.numel() for p in model.parameters()) * 2 / 1e6, 2),  # float16 export
    }


def run_apart(prepared: Path, run: Path, settings: dict, train_settings: dict) -> dict:
    """`one_run` in a process of its own (its peak memory its own); its JSON line as a dict."""
    command = [
        sys.executable,
        __file__,
        str(prepared),
        str(run),
        json.dumps(settings),
        json.dumps(train_settings),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


if __name__ == "__main__":
    prepared, run, settings, train_settings = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        *map(json.loads, sys.argv[3:5]),
    )
    print(json.dumps(one_run(DialogueNeRFConfig(**settings), prepared, run, **train_settings)))
