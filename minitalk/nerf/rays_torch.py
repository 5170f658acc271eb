"""The torch twins of the ray helpers in `minitalk.nerf.rays`: same signatures, any device.

Each follows its NumPy reference line for line in torch ops, so that CUDA
tensors never round-trip through NumPy; `minitalk.nerf.rays` dispatches torch
tensors here. See `minitalk.nerf.rays` for what each helper computes.
"""

from __future__ import annotations

import torch


def pixel_directions_torch(
    intrinsics: torch.Tensor, pixels: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """Unit directions (N, 3) in the camera frame (OpenCV: z forward) through the centres of
    pixels (N, 2) as (x, y), for one camera's intrinsics (3, 3) or one per pixel (N, 3, 3). `scale`
    is the size of a given pixel in the pixels the camera was calibrated on (a finer grid: below 1).
    The one pixel-to-ray rule of training and rendering; `camera_rays_numpy` is its reference."""
    K = intrinsics.expand(len(pixels), 3, 3) if intrinsics.dim() == 2 else intrinsics  # (N, 3, 3)
    u = (pixels[:, 0] + 0.5) * scale
    v = (pixels[:, 1] + 0.5) * scale
    d = torch.stack([(u - K[:, 0, 2]) / K[:, 0, 0], (v - K[:, 1, 2]) / K[:, 1, 1], torch.ones_like(u)], -1)
    return d / d.norm(dim=-1, keepdim=True)


def camera_rays_torch(intrinsics: torch.Tensor, c2w: torch.Tensor, pixels: torch.Tensor):
    d = pixel_directions_torch(intrinsics.to(pixels.dtype), pixels) @ c2w[:3, :3].T.to(pixels.dtype)
    return c2w[:3, 3].to(d.dtype).expand_as(d), d


def ray_aabb_torch(rays_o, rays_d, box_min, box_max):
    box_min = torch.as_tensor(box_min, dtype=rays_o.dtype, device=rays_o.device)
    box_max = torch.as_tensor(box_max, dtype=rays_o.dtype, device=rays_o.device)
    t0 = (box_min - rays_o) / rays_d
    t1 = (box_max - rays_o) / rays_d
    t_lo = torch.nan_to_num(torch.minimum(t0, t1), nan=-torch.inf)
    t_hi = torch.nan_to_num(torch.maximum(t0, t1), nan=torch.inf)
    near = t_lo.amax(-1).clamp(min=0.0)
    far = t_hi.amin(-1)
    hit = far > near
    zero = torch.zeros_like(near)
    return torch.where(hit, near, zero), torch.where(hit, far, zero), hit


def stratified_torch(near, far, u):
    s = u.shape[1]
    frac = (torch.arange(s, device=u.device, dtype=u.dtype)[None, :] + u) / s
    return near[:, None] + (far - near)[:, None] * frac


def importance_torch(bins, weights, u):
    w = weights.double() + 1e-5
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)
    cdf[:, -1] = 1.0
    idx = torch.searchsorted(cdf, u.double().contiguous(), right=True)
    below = (idx - 1).clamp(0, bins.shape[1] - 2)
    c0, c1 = cdf.gather(1, below), cdf.gather(1, below + 1)
    b0, b1 = bins.double().gather(1, below), bins.double().gather(1, below + 1)
    denom = torch.where(c1 - c0 < 1e-8, torch.ones_like(c0), c1 - c0)
    return (b0 + (u - c0) / denom * (b1 - b0)).to(bins.dtype)


def grid_update_torch(ema, density, decay: float = 0.95, threshold: float = 0.01):
    ema = torch.maximum(decay * ema, density)
    return ema, ema > threshold


def march_torch(rays_o, rays_d, near, far, occupied, box_min, box_max, step: float, max_samples: int):
    res = occupied.shape[0]
    dev = rays_o.device
    box_min = torch.as_tensor(box_min, dtype=torch.float64, device=dev)
    box_max = torch.as_tensor(box_max, dtype=torch.float64, device=dev)
    i = torch.arange(max_samples, device=dev, dtype=torch.float64)
    t = near.double()[:, None] + (i + 0.5) * step
    pts = rays_o.double()[:, None, :] + t[..., None] * rays_d.double()[:, None, :]
    cell = torch.floor((pts - box_min) * (res / (box_max - box_min))).long()
    inside = ((cell >= 0) & (cell < res)).all(-1) & (t < far.double()[:, None])
    cell = cell.clamp(0, res - 1)
    keep = inside & occupied[cell[..., 0], cell[..., 1], cell[..., 2]]
    counts = keep.sum(-1)
    offsets = torch.cumsum(counts, 0) - counts
    return t[keep].float(), offsets, counts


def box_samples_torch(rays_o, rays_d, box_min, box_max, u, occupied=None, person=None):
    near, far, hit = ray_aabb_torch(rays_o, rays_d, box_min, box_max)
    t = stratified_torch(torch.where(hit, near, 0.0), torch.where(hit, far, 1.0), u)  # (N, S)
    x = rays_o[:, None] + t[..., None] * rays_d[:, None]
    unit = 2.0 * (x - box_min[:, None]) / (box_max - box_min)[:, None] - 1.0  # (N, S, 3)
    keep = hit[:, None].expand(t.shape)
    if occupied is not None:
        res = occupied.shape[1]
        cell = torch.floor((unit + 1.0) / 2.0 * res).long()
        inside = ((cell >= 0) & (cell < res)).all(-1)
        cell = cell.clamp(0, res - 1)
        flat = ((person[:, None] * res + cell[..., 0]) * res + cell[..., 1]) * res + cell[..., 2]
        keep = keep & inside & occupied.reshape(-1)[flat]
    return t, unit, keep


def sample_pixels_torch(weights, u):
    cdf = torch.cumsum(weights.double().flatten(), 0)
    cdf = cdf / cdf[-1]
    return torch.searchsorted(cdf, u.double(), right=True).clamp(max=cdf.numel() - 1)
