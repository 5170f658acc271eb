"""Per-pixel volume rendering against the 2D neural renderer, trained on the same data for the same
time at each size; a part of `bench_render.py --paths` (one training run per process, so that each
run's peak memory is its own).

    python benchmarks/render_paths.py SIZE UPSAMPLE MINUTES PREPARED RUN   # one run, one JSON line
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from minitalk import metrics
from minitalk.evaluate.sharpness import cpbd
from minitalk.nerf import checkpoint, evaluate, render, train
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.prepare import data

EVAL_FRAMES = 24  # held-out frames per person scored, spread over the clip (512 px per pixel: seconds each)
STRETCH = 25  # consecutive held-out frames per person for sharpness and flicker


def held_out_stretch(frames, length: int = STRETCH) -> np.ndarray:
    """The first `length` consecutive held-out frames (the clip's first held-out block)."""
    held = np.flatnonzero(frames.held_out.numpy())
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


def one_run(size: int, upsample: int, minutes: float, prepared: Path, run: Path) -> dict:
    """Train on `prepared` (the sample at `size`) for `minutes` and score the model."""
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    mcfg = DialogueNeRFConfig(upsample=upsample)
    report = train.train(prepared, run, mcfg, resume=False, progress=False, iters=10**9, minutes=minutes,
                         eval_every=10**9, eval_frames=EVAL_FRAMES)  # fmt: skip
    model, frames = checkpoint.load_model(run, prepared)
    cpu = torch.device("cpu")
    stretch = held_out_stretch(frames)
    sharp, flick, flick_real = [], [], []
    for p in range(frames.n_people):
        people = torch.full((len(stretch),), p)
        fake = render.render_images(model, frames, people, torch.from_numpy(stretch), cpu)
        real = frames.images[p, stretch].numpy().astype(np.float32) / 255
        sharp.append([float(np.mean([cpbd(x) for x in fake])), float(np.mean([cpbd(x) for x in real]))])
        flick.append(flicker(fake))
        flick_real.append(flicker(real))
    pairs, measures = evaluate.mouth_measures(frames, model, cpu)
    loud = data.load_tracks(prepared)["rms"][pairs[:, 1]]
    rendered = measures["interior"]
    return {
        "size": size,
        "upsample": upsample,
        "steps": report["iterations"],
        "seconds_per_step": round(60 * report["minutes"] / max(report["iterations"], 1), 3),
        "psnr_by_role": report["psnr_by_role"],
        "ssim_by_role": report["ssim_by_role"],
        "psnr": report["psnr"],
        "ssim": report["ssim"],
        "cpbd": [round(s[0], 4) for s in sharp],
        "cpbd_real": [round(s[1], 4) for s in sharp],
        "mouth_audio_corr": round(metrics.correlation(rendered, loud), 4),
        "flicker": [round(f, 5) for f in flick],
        "flicker_real": [round(f, 5) for f in flick_real],
        "peak_train_gb": report["peak_mem_gb"],
        "render_pairs_per_second": round(pairs_per_second(model, frames), 3),
        "model_mb": round(sum(p.numel() for p in model.parameters()) * 2 / 1e6, 2),  # float16 export
    }


if __name__ == "__main__":
    size, upsample, minutes = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(one_run(size, upsample, minutes, Path(sys.argv[4]), Path(sys.argv[5]))))
