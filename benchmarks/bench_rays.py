"""Ray helpers: NumPy reference vs Numba vs torch (CPU), and a memory-copy bound.

One run, the same inputs for every implementation: 65,536 rays, 64 samples per
ray, a 64^3 occupancy grid about 20% occupied (two of them, one per person, for
`box_samples`, the fields' sampler of DialogueNeRF, measured beside the five
helpers the goals name). Median of several repeats. Prints one JSON line.
Not a test: it never fails on a time.

    python benchmarks/bench_rays.py

Goals: Numba at least 10x faster than NumPy on importance sampling and
marching, at least 2x faster than torch on the CPU, and within 3x of a plain
memory copy of the same output size. Beside that bound, a second one: a copy of
the helper's inputs. A helper that reads much more than it writes (compositing
reads colour, density and length per sample and writes a weight) cannot come
near a copy of its output, and `ratio_to_memcpy_inputs` shows how close it comes
to reading them once. Numba compile time is reported apart, for a cold cache
and for a second process that loads the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from minitalk.camera import camera_to_head, intrinsic_matrix
from minitalk.nerf import rays, render

N_SIDE, N_SAMPLES, GRID = 256, 64, 64
BOX_MIN, BOX_MAX = np.array([-0.15, -0.2, -0.15]), np.array([0.15, 0.2, 0.15])


def median_ms(fn, repeats=7):
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def nbytes(out):
    items = out if isinstance(out, tuple) else (out,)
    return sum(np.asarray(x).nbytes for x in items)


def memcpy_ms(n_bytes):
    src = np.ones(n_bytes // 4 + 1, np.float32)
    dst = np.empty_like(src)
    return median_ms(lambda: np.copyto(dst, src), 21)  # cheap, and the smallest copies are noisy


def inputs():
    rng = np.random.default_rng(0)
    intrinsics = intrinsic_matrix(2.2 * N_SIDE, N_SIDE, N_SIDE)
    c2w = camera_to_head(np.array([5.0, -10.0, 3.0, 0.0, 0.0, 0.75]))
    pixels = rays.pixel_grid(N_SIDE, N_SIDE)  # 65,536 rays
    rays_o, rays_d = rays.camera_rays_numba(intrinsics, c2w, pixels)
    # the box fills the view: give every ray a segment of the same length through the scene
    near = np.full(len(pixels), 0.6, np.float32)
    far = np.full(len(pixels), 0.9, np.float32)
    u = rng.random((len(pixels), N_SAMPLES))
    bins = rays.stratified_numba(near, far, np.zeros((len(pixels), N_SAMPLES + 1)))
    weights = (rng.random((len(pixels), N_SAMPLES)) ** 4).astype(np.float32)
    u_sorted = np.sort(u, axis=1)
    # occupancy: smooth random blobs thresholded at the 80th percentile, i.e. ~20% occupied
    noise = rng.standard_normal((GRID, GRID, GRID)).astype(np.float32)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.5) ** 2)
    for axis in range(3):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, "same")
    occupied = noise > np.percentile(noise, 80)
    # march through the whole box along rays that cross it
    box_o = np.tile(np.array([0.0, 0.0, -1.0], np.float32), (len(pixels), 1))
    targets = np.stack(np.meshgrid(np.linspace(-0.14, 0.14, N_SIDE), np.linspace(-0.19, 0.19, N_SIDE)), -1)
    box_d = np.concatenate([targets.reshape(-1, 2), np.ones((len(pixels), 1))], 1) - box_o
    box_d = (box_d / np.linalg.norm(box_d, axis=1, keepdims=True)).astype(np.float32)
    box_near, box_far, _ = rays.ray_aabb_numba(box_o, box_d, BOX_MIN, BOX_MAX)
    step = float((box_far - box_near).max() / N_SAMPLES)
    sigma = (rng.random((len(pixels), N_SAMPLES)) * 20).astype(np.float32)
    rgb = rng.random((len(pixels), N_SAMPLES, 3)).astype(np.float32)
    dt = np.full((len(pixels), N_SAMPLES), (0.3 / N_SAMPLES), np.float32)
    t_vals = np.cumsum(dt, axis=1)
    bg = rng.random((len(pixels), 3)).astype(np.float32)
    # samples in per-ray boxes against per-person grids (DialogueNeRF's fields): two people
    box_min = np.broadcast_to(BOX_MIN.astype(np.float32), box_d.shape).copy()
    box_max = np.broadcast_to(BOX_MAX.astype(np.float32), box_d.shape).copy()
    grids = np.stack([occupied, occupied[::-1]])  # (2, 64, 64, 64)
    person = np.arange(len(pixels)) % 2
    return dict(
        intrinsics=intrinsics,
        c2w=c2w,
        pixels=pixels,
        near=near,
        far=far,
        u=u,
        bins=bins,
        weights=weights,
        u_sorted=u_sorted,
        occupied=occupied,
        box_o=box_o,
        box_d=box_d,
        box_near=box_near,
        box_far=box_far,
        step=step,
        sigma=sigma,
        rgb=rgb,
        dt=dt,
        t_vals=t_vals,
        bg=bg,
        box_min=box_min,
        box_max=box_max,
        grids=grids,
        person=person,
    )


# what each helper reads (for the second bound: a copy of its inputs)
INPUTS = {
    "rays": ("intrinsics", "c2w", "pixels"),
    "stratified": ("near", "far", "u"),
    "importance": ("bins", "weights", "u_sorted"),
    "march": ("box_o", "box_d", "box_near", "box_far", "occupied"),
    "composite": ("sigma", "rgb", "dt", "bg"),
    "box_samples": ("box_o", "box_d", "box_min", "box_max", "u", "grids", "person"),
}


def cases(x):
    """name -> (numpy call, numba call, torch call) on identical inputs."""
    t = {
        key: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        for key, v in x.items()
    }
    march_args, box_args = INPUTS["march"], INPUTS["box_samples"]
    return {
        "rays": (
            lambda: rays.camera_rays_numpy(x["intrinsics"], x["c2w"], x["pixels"]),
            lambda: rays.camera_rays_numba(x["intrinsics"], x["c2w"], x["pixels"]),
            lambda: rays.camera_rays_torch(t["intrinsics"], t["c2w"], t["pixels"]),
        ),
        "stratified": (
            lambda: rays.stratified_numpy(x["near"], x["far"], x["u"]),
            lambda: rays.stratified_numba(x["near"], x["far"], x["u"]),
            lambda: rays.stratified_torch(t["near"], t["far"], t["u"]),
        ),
        "importance": (
            lambda: rays.importance_numpy(x["bins"], x["weights"], x["u_sorted"]),
            lambda: rays.importance_numba(x["bins"], x["weights"], x["u_sorted"]),
            lambda: rays.importance_torch(t["bins"], t["weights"], t["u_sorted"]),
        ),
        "march": (
            lambda: rays.march_numpy(*(x[a] for a in march_args), BOX_MIN, BOX_MAX, x["step"], N_SAMPLES),
            lambda: rays.march_numba(*(x[a] for a in march_args), BOX_MIN, BOX_MAX, x["step"], N_SAMPLES),
            lambda: rays.march_torch(*(t[a] for a in march_args), BOX_MIN, BOX_MAX, x["step"], N_SAMPLES),
        ),
        "composite": (
            lambda: render.composite_numpy(x["sigma"], x["rgb"], x["dt"], x["bg"]),
            lambda: render.composite_numba(x["sigma"], x["rgb"], x["dt"], x["bg"]),
            lambda: render.composite(t["sigma"], t["rgb"], t["t_vals"], t["dt"], t["bg"]),
        ),
        "box_samples": (
            lambda: rays.box_samples_numpy(*(x[a] for a in box_args)),
            lambda: rays.box_samples_numba(*(x[a] for a in box_args)),
            lambda: rays.box_samples_torch(*(t[a] for a in box_args)),
        ),
    }


COMPILE_PROBE = """
import time, numpy as np
t0 = time.perf_counter()
from minitalk.nerf import rays, render
f32 = np.float32
o = np.zeros((4, 3), f32) - [0, 0, 2]
d = np.tile(np.array([0, 0, 1], f32), (4, 1))
lo, hi = np.full(3, -1.0), np.full(3, 1.0)
rays.camera_rays_numba(np.eye(3), np.eye(4), np.zeros((4, 2), f32))
n, f, h = rays.ray_aabb_numba(o, d, lo, hi)
rays.stratified_numba(n, f, np.full((4, 8), 0.5))
bins = np.tile(np.linspace(0, 1, 9, dtype=f32), (4, 1))
rays.importance_numba(bins, np.ones((4, 8), f32), np.full((4, 8), 0.5))
rays.march_numba(o, d, n, f, np.ones((4, 4, 4), bool), lo, hi, 0.1, 32)
rays.grid_update_numba(np.zeros((4, 4, 4), f32), np.ones((4, 4, 4), f32), 0.95, 0.01)
rays.sample_pixels_numba(np.ones((4, 4)), np.full(3, 0.5))
grid, person = np.ones((1, 4, 4, 4), bool), np.zeros(4, np.int64)
rays.box_samples_numba(o, d, o - 1, o + 1, np.full((4, 8), 0.5), grid, person)
ones = np.ones((4, 8), f32)
render.composite_numba(ones, np.ones((4, 8, 3), f32), ones, np.zeros((4, 3), f32))
print(time.perf_counter() - t0)
"""


def compile_seconds():
    """First-call time in a fresh process: with an empty Numba cache, then with the cache it wrote."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}

        def first_calls() -> float:
            cmd = [sys.executable, "-c", COMPILE_PROBE]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            return float(out.strip().splitlines()[-1])

        return first_calls(), first_calls()


def main() -> dict:
    torch.set_num_threads(2)
    cold, warm = compile_seconds()
    x = inputs()
    ms = {}
    for name, (ref, fast, tch) in cases(x).items():
        out_size = nbytes(fast())
        ms[name] = {
            "numpy": median_ms(ref, 3),
            "numba": median_ms(fast),
            "torch": median_ms(tch),
            "memcpy": memcpy_ms(out_size),
            "memcpy_inputs": memcpy_ms(sum(x[a].nbytes for a in INPUTS[name])),
        }
    result = {
        "bench": "rays",
        "rays": N_SIDE * N_SIDE,
        "samples_per_ray": N_SAMPLES,
        "grid": GRID,
        "grid_occupied": round(float(x["occupied"].mean()), 3),
        "ms": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in ms.items()},
        "speedup_vs_numpy": {k: round(v["numpy"] / v["numba"], 2) for k, v in ms.items()},
        "speedup_vs_torch": {k: round(v["torch"] / v["numba"], 2) for k, v in ms.items()},
        "ratio_to_memcpy": {k: round(v["numba"] / v["memcpy"], 2) for k, v in ms.items()},
        "ratio_to_memcpy_inputs": {k: round(v["numba"] / v["memcpy_inputs"], 2) for k, v in ms.items()},
        "compile_seconds_cold_cache": round(cold, 2),
        "compile_seconds_warm_cache": round(warm, 2),
        "numba_threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count())),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
