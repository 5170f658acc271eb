"""Ray helpers: NumPy references, the dispatch to their fast twins, and the occupancy grids.

These are the loops over rays and samples that NeRF systems write as hand-made CUDA
(torch-ngp / ER-NeRF `raymarching`, nerfacc). Each helper exists three times with one signature:

* `name_numpy` (here): the readable reference, vectorised NumPy, the tests' oracle;
* `name_numba` (`minitalk.nerf.kernels`): the same as explicit loops compiled by Numba;
* `name_torch` (`minitalk.nerf.rays_torch`): the same in torch ops, on any device;
* `name(...)` (here): torch tensors go to the torch twin, NumPy arrays to the Numba kernel
  (`box_samples`, on the NeRF's hot path, also sends CPU tensors to its Numba kernel).

Randomness is always passed in (arrays of uniform numbers `u`), so the twins are tested equal
on the same draws. Rays live in the canonical head frame (the camera moves by the inverse head
pose, DialogueNeRF IV-B); `rays_o`, `rays_d` are (N, 3); `t_vals` are distances along the ray.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from minitalk.camera import camera_to_head
from minitalk.nerf.kernels import (
    box_samples_numba,
    camera_rays_numba,
    grid_update_numba,
    importance_numba,
    march_numba,
    ray_aabb_numba,
    sample_pixels_numba,
    stratified_numba,
)
from minitalk.nerf.rays_torch import (
    box_samples_torch,
    camera_rays_torch,
    grid_update_torch,
    importance_torch,
    march_torch,
    ray_aabb_torch,
    sample_pixels_torch,
    stratified_torch,
)

# --- camera rays (DialogueNeRF IV-B: the camera moves by the inverse head pose) --------------


def camera_rays_numpy(intrinsics: np.ndarray, c2w: np.ndarray, pixels: np.ndarray):
    """Rays through pixel centres. intrinsics (3, 3); c2w (4, 4) camera-to-head; pixels (N, 2) as (x, y).

    Returns rays_o (N, 3) and unit rays_d (N, 3), both float32.
    """
    x = (pixels[:, 0] + 0.5 - intrinsics[0, 2]) / intrinsics[0, 0]
    y = (pixels[:, 1] + 0.5 - intrinsics[1, 2]) / intrinsics[1, 1]
    d_cam = np.stack([x, y, np.ones_like(x)], -1)  # (N, 3), OpenCV camera: z forward
    d = d_cam @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(c2w[:3, 3], d.shape)
    return o.astype(np.float32), d.astype(np.float32)


def pixel_grid(height: int, width: int) -> np.ndarray:
    """All pixel coordinates (H * W, 2) as (x, y), row-major."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x.ravel(), y.ravel()], -1).astype(np.float32)


def head_rays(intrinsics, pose, pixels):
    """Rays in the canonical head frame for a head pose (6,): the camera moved by its inverse."""
    return camera_rays(intrinsics, camera_to_head(np.asarray(pose, np.float64)), pixels)


# --- ray / box intersection (the slab method) ------------------------------------------------


def ray_aabb_numpy(rays_o, rays_d, box_min, box_max):
    """Entry and exit distances of each ray through an axis-aligned box.

    Returns near (N,), far (N,) and hit (N,) bool. Rays that miss get
    near = far = 0 and hit = False (never NaN). A ray starting inside has near 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / rays_d
        t0 = (np.asarray(box_min) - rays_o) * inv
        t1 = (np.asarray(box_max) - rays_o) * inv
    t_lo = np.where(np.isnan(t0), -np.inf, np.minimum(t0, t1))
    t_hi = np.where(np.isnan(t1), np.inf, np.maximum(t0, t1))
    near = np.maximum(t_lo.max(-1), 0.0)
    far = t_hi.min(-1)
    hit = far > near
    return (np.where(hit, near, 0).astype(np.float32), np.where(hit, far, 0).astype(np.float32), hit)


# --- stratified samples (NeRF section 4) -----------------------------------------------------


def stratified_numpy(near, far, u):
    """One sample in each of S equal bins of [near, far]; u (N, S) in [0, 1) jitters it.

    Pass u = 0.5 everywhere for the bin centres (evaluation). Returns t_vals (N, S).
    """
    s = u.shape[1]
    edges = np.arange(s, dtype=np.float32) / s
    frac = edges[None, :] + u / s
    return (near[:, None] + (far - near)[:, None] * frac).astype(np.float32)


# --- hierarchical sampling: inverse transform of the coarse weights (NeRF section 5.2) -------


def importance_numpy(bins, weights, u):
    """Draw K samples per ray from the piecewise-constant pdf that `weights` define on `bins`.

    bins (N, B + 1) are bin edges along each ray, weights (N, B) >= 0 the coarse
    compositing weights, u (N, K) uniform numbers in [0, 1) (sorted u give sorted
    samples). A small constant keeps empty rays sampling uniformly.
    """
    w = weights.astype(np.float64) + 1e-5
    pdf = w / w.sum(-1, keepdims=True)
    cdf = np.concatenate([np.zeros_like(pdf[:, :1]), np.cumsum(pdf, -1)], -1)  # (N, B + 1)
    cdf[:, -1] = 1.0
    # one searchsorted for all rays: lift row i by 2 i so the rows never interleave
    n, width = cdf.shape
    lift = 2.0 * np.arange(n)[:, None]
    flat = np.searchsorted((cdf + lift).ravel(), (u + lift).ravel(), side="right")
    idx = flat.reshape(u.shape) - width * np.arange(n)[:, None]  # first index with cdf > u
    below = np.clip(idx - 1, 0, bins.shape[1] - 2)
    c0, c1 = np.take_along_axis(cdf, below, -1), np.take_along_axis(cdf, below + 1, -1)
    b0, b1 = np.take_along_axis(bins, below, -1), np.take_along_axis(bins, below + 1, -1)
    denom = np.where(c1 - c0 < 1e-8, 1.0, c1 - c0)
    return (b0 + (u - c0) / denom * (b1 - b0)).astype(np.float32)


# --- occupancy grid and empty-space skipping (Instant-NGP / ER-NeRF) -------------------------


def grid_cell_centres(box_min, box_max, res: int) -> np.ndarray:
    """Centres (res^3, 3) of the grid's cells, x-major like the grid's flat index."""
    box_min, box_max = np.asarray(box_min, np.float64), np.asarray(box_max, np.float64)
    idx = (np.arange(res) + 0.5) / res
    x, y, z = np.meshgrid(idx, idx, idx, indexing="ij")
    return (box_min + np.stack([x, y, z], -1).reshape(-1, 3) * (box_max - box_min)).astype(np.float32)


def grid_update_numpy(ema, density, decay: float = 0.95, threshold: float = 0.01):
    """Fold fresh densities into the running grid: ema <- max(decay * ema, density).

    Returns the new ema and the occupied cells (ema > threshold). Decaying the old
    value lets cells empty out when the scene stops needing them.
    """
    ema = np.maximum(decay * ema, density).astype(np.float32)
    return ema, ema > threshold


class Occupancy(nn.Module):
    """Per-person occupancy grids over a unit cube: where a field has density worth sampling.

    Instant-NGP / ER-NeRF empty-space skipping: every `update` folds the field's
    density at jittered cell centres into a decaying maximum (`grid_update`);
    samples in cells below the threshold (`box_samples` tests them) are never sent
    through the network.
    """

    # densities per metre: below 3 a head sample (about 7 mm long) is under 2% opaque
    # (docs/results.md, "Occupancy threshold")
    def __init__(self, n_people: int, res: int = 48, threshold: float = 3.0):
        super().__init__()
        self.res, self.threshold = res, threshold
        # no evidence yet, so every cell counts as occupied until the first update replaces the zeros
        self.register_buffer("density", torch.zeros((n_people, res, res, res)))
        self.register_buffer("occupied", torch.ones((n_people, res, res, res), dtype=torch.bool))

    @torch.no_grad()
    def update(self, density_fn, decay: float = 0.9, chunk: int = 65536) -> None:
        """density_fn(unit points (M, 3), person int) -> sigma (M,); refresh every person's grid."""
        r = self.res
        idx = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
        for p in range(self.density.shape[0]):
            centres = (idx + torch.rand(idx.shape)) / r * 2 - 1  # jittered within each cell
            centres = centres.to(self.density.device)
            sigma = torch.cat([density_fn(centres[i : i + chunk], p) for i in range(0, len(centres), chunk)])
            self.density[p], self.occupied[p] = grid_update_torch(
                self.density[p], sigma.reshape(r, r, r), decay, self.threshold
            )


def march_numpy(rays_o, rays_d, near, far, occupied, box_min, box_max, step: float, max_samples: int):
    """Samples every `step` along each ray, kept only where they fall in occupied cells.

    Sample i of a ray sits at t = near + (i + 0.5) step while t < far. Returns
    packed t (M,) with per-ray offsets (N,) and counts (N,): ray r owns
    t[offsets[r] : offsets[r] + counts[r]], sorted. The reference builds every
    candidate and masks; the Numba twin jumps over empty cells instead.
    """
    res = occupied.shape[0]
    box_min, box_max = np.asarray(box_min, np.float64), np.asarray(box_max, np.float64)
    t = near[:, None].astype(np.float64) + (np.arange(max_samples) + 0.5) * step  # (N, S)
    pts = rays_o[:, None, :].astype(np.float64) + t[..., None] * rays_d[:, None, :].astype(np.float64)
    scale = res / (box_max - box_min)  # cells per metre, per axis
    cell = np.floor((pts - box_min) * scale).astype(np.int64)
    inside = np.all((cell >= 0) & (cell < res), -1) & (t < far[:, None])
    cell = np.clip(cell, 0, res - 1)
    keep = inside & occupied[cell[..., 0], cell[..., 1], cell[..., 2]]
    counts = keep.sum(-1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return t[keep].astype(np.float32), offsets, counts


# --- samples in each ray's own box, tested against per-person occupancy grids -----------------


def box_samples_numpy(rays_o, rays_d, box_min, box_max, u, occupied=None, person=None):
    """Stratified samples through each ray's own box, as unit-cube points, with the ones worth evaluating.

    What a conditional NeRF draws every step (`minitalk.nerf.render.sample_fields`): rays_o, rays_d (N, 3),
    box_min, box_max (N, 3) the box of each ray, u (N, S) the jitter (0.5: bin centres),
    occupied (P, R, R, R) bool the grids of P people over the unit cube [-1, 1]^3 (None: every
    cell), person (N,) which grid each ray reads. A ray that misses its box samples [0, 1] so
    that its values stay finite. Returns t (N, S), unit (N, S, 3) the points mapped to the unit
    cube, and keep (N, S): the ray hits its box and the point lies in an occupied cell.
    Positions are computed in float64 and stored as float32.
    """
    o, d = rays_o.astype(np.float64), rays_d.astype(np.float64)
    lo, hi = box_min.astype(np.float64), box_max.astype(np.float64)
    # the slab test, per ray and axis; a ray parallel to a slab misses if it starts outside it
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (lo - o) / d, (hi - o) / d
    parallel = d == 0
    t_in = np.where(parallel, np.where((o < lo) | (o > hi), np.inf, -np.inf), np.minimum(t0, t1))
    t_out = np.where(parallel, np.inf, np.maximum(t0, t1))
    near, far = np.maximum(t_in.max(-1), 0.0), t_out.min(-1)
    hit = far > near
    near, far = np.where(hit, near, 0.0), np.where(hit, far, 1.0)
    s = u.shape[1]
    t = near[:, None] + (far - near)[:, None] * ((np.arange(s) + u.astype(np.float64)) / s)  # (N, S)
    x = o[:, None] + t[..., None] * d[:, None]
    unit = 2.0 * (x - lo[:, None]) / (hi - lo)[:, None] - 1.0  # (N, S, 3)
    keep = hit[:, None] & np.ones(t.shape, bool)
    if occupied is not None:
        res = occupied.shape[1]
        cell = np.floor((unit + 1.0) / 2.0 * res).astype(np.int64)
        inside = np.all((cell >= 0) & (cell < res), -1)
        cell = np.clip(cell, 0, res - 1)
        keep &= inside & occupied[person[:, None], cell[..., 0], cell[..., 1], cell[..., 2]]
    return t.astype(np.float32), unit.astype(np.float32), keep


# --- pixel sampling for training batches -----------------------------------------------------


def pixel_weights(head, mouth=None, face: float = 4.0, mouth_weight: float = 4.0) -> np.ndarray:
    """Pixel sampling weights (..., H, W) float32 from head and mouth masks (..., H, W) bool:
    `face` on the head, times `mouth_weight` again on the mouth, 1 elsewhere. The one rule
    training batches are drawn by (`minitalk.nerf.frames.Frames`, notebook 04)."""
    weights = np.where(head, np.float32(face), np.float32(1.0))  # float32 throughout: no float64 copy
    if mouth is not None:
        weights[np.asarray(mouth, bool)] *= np.float32(mouth_weight)
    return weights


def sample_pixels_numpy(weights, u):
    """Flat pixel indices drawn in proportion to `weights` (any shape), one per u in [0, 1)."""
    cdf = np.cumsum(np.asarray(weights, np.float64).ravel())
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, u, side="right"), cdf.size - 1).astype(np.int64)


# --- dispatch: torch tensors stay in torch, NumPy arrays go to Numba ---------------------------


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def camera_rays(intrinsics, c2w, pixels):
    """Rays through pixels (N, 2) of a camera: see `camera_rays_numpy`."""
    if _is_torch(pixels):
        return camera_rays_torch(intrinsics, c2w, pixels)
    return camera_rays_numba(np.asarray(intrinsics, np.float64), np.asarray(c2w, np.float64), pixels)


def ray_aabb(rays_o, rays_d, box_min, box_max):
    """Near, far and hit of rays through a box: see `ray_aabb_numpy`."""
    if _is_torch(rays_o):
        return ray_aabb_torch(rays_o, rays_d, box_min, box_max)
    return ray_aabb_numba(rays_o, rays_d, np.asarray(box_min, np.float64), np.asarray(box_max, np.float64))


def stratified(near, far, u):
    """Jittered samples in equal bins: see `stratified_numpy`."""
    return stratified_torch(near, far, u) if _is_torch(u) else stratified_numba(near, far, u)


def importance(bins, weights, u):
    """Inverse-CDF samples from coarse weights: see `importance_numpy`."""
    return importance_torch(bins, weights, u) if _is_torch(u) else importance_numba(bins, weights, u)


def grid_update(ema, density, decay: float = 0.95, threshold: float = 0.01):
    """Running occupancy grid: see `grid_update_numpy`."""
    if _is_torch(ema):
        return grid_update_torch(ema, density, decay, threshold)
    return grid_update_numba(ema, density, decay, threshold)


def march(rays_o, rays_d, near, far, occupied, box_min, box_max, step: float, max_samples: int):
    """Samples in occupied cells only, packed: see `march_numpy`."""
    if _is_torch(rays_o):
        return march_torch(rays_o, rays_d, near, far, occupied, box_min, box_max, step, max_samples)
    return march_numba(
        rays_o,
        rays_d,
        near,
        far,
        occupied,
        np.asarray(box_min, np.float64),
        np.asarray(box_max, np.float64),
        float(step),
        int(max_samples),
    )


def box_samples(rays_o, rays_d, box_min, box_max, u, occupied=None, person=None):
    """Samples through per-ray boxes and which are worth evaluating: see `box_samples_numpy`.

    This one sits on the hot path of every training step and rendered frame, so CPU tensors
    take the Numba kernel too (on zero-copy views, its outputs wrapped the same way): one pass
    where the torch twin makes some twenty over (N, S, 3) arrays (docs/results.md, "Samples on
    the hot path"). CUDA tensors stay on the device with the torch twin.
    """
    if _is_torch(rays_o) and rays_o.device.type != "cpu":
        return box_samples_torch(rays_o, rays_d, box_min, box_max, u, occupied, person)
    if not _is_torch(rays_o):
        return box_samples_numba(rays_o, rays_d, box_min, box_max, u, occupied, person)
    args = (rays_o, rays_d, box_min, box_max, u, occupied, person)
    return to_torch(*box_samples_numba(*(x if x is None else np.ascontiguousarray(x.detach()) for x in args)))


def sample_pixels(weights, u):
    """Pixel indices drawn in proportion to weights: see `sample_pixels_numpy`."""
    return sample_pixels_torch(weights, u) if _is_torch(u) else sample_pixels_numba(weights, u)


def to_torch(*arrays, device=None):
    """Zero-copy `torch.from_numpy` of helper outputs (then moved to `device` if given)."""
    out = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return out if device is None else tuple(t.to(device) for t in out)
