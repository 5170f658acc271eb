"""Neural radiance fields: encodings and fields (DialogueNeRF IV-B).

This module starts with the plain, static NeRF that notebook 04 fits from
scratch; the conditional two-person DialogueNeRF builds on the same pieces.

Positional encoding (DialogueNeRF Eq. 2, NeRF Eq. 4):

    gamma(p) = (p, sin(2^0 pi p), cos(2^0 pi p), ..., sin(2^(L-1) pi p), cos(2^(L-1) pi p))

applied to each coordinate, so an MLP can represent high-frequency detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from minitalk.camera import camera_to_head
from minitalk.nerf import rays, render
from minitalk.nerf.encoding import positional_encoding
from minitalk.utils import set_seed


@dataclass
class StaticNeRFConfig:
    pos_freqs: int = 8
    dir_freqs: int = 3
    width: int = 64
    depth: int = 4
    box_min: tuple = (-0.24, -0.16, -0.16)  # metres, head frame: the head at the origin, torso below
    box_max: tuple = (0.24, 0.36, 0.16)


class StaticNeRF(nn.Module):
    """An MLP from encoded position to density, and (with the view direction) to colour."""

    def __init__(self, config: StaticNeRFConfig | None = None):
        super().__init__()
        self.config = c = config or StaticNeRFConfig()
        self.register_buffer("box_min", torch.tensor(c.box_min, dtype=torch.float32))
        self.register_buffer("box_max", torch.tensor(c.box_max, dtype=torch.float32))
        layers, d_in = [], 3 * (1 + 2 * c.pos_freqs)
        for i in range(c.depth):
            layers += [nn.Linear(d_in if i == 0 else c.width, c.width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.sigma = nn.Linear(c.width, 1)
        self.colour = nn.Sequential(
            nn.Linear(c.width + 3 * (1 + 2 * c.dir_freqs), c.width // 2),
            nn.ReLU(),
            nn.Linear(c.width // 2, 3),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor, d: torch.Tensor):
        """x, d (..., 3) -> density (...,) and colour (..., 3)."""
        unit = 2 * (x - self.box_min) / (self.box_max - self.box_min) - 1  # the box as [-1, 1]^3
        h = self.trunk(positional_encoding(unit, self.config.pos_freqs))
        sigma = torch.relu(self.sigma(h)[..., 0]) * 30.0  # densities in 1/metre scale
        rgb = self.colour(torch.cat([h, positional_encoding(d, self.config.dir_freqs)], dim=-1))
        return sigma, rgb


def render_rays(model: StaticNeRF, rays_o, rays_d, background, n_samples: int = 48, jitter: bool = True):
    """Render rays (N, 3) through the model's box with stratified samples; background (N, 3).

    Returns colour (N, 3), opacity (N,), depth (N,), weights (N, S) and t_vals (N, S).
    """
    near, far, hit = rays.ray_aabb(rays_o, rays_d, model.box_min, model.box_max)
    u = torch.rand(len(rays_o), n_samples) if jitter else torch.full((len(rays_o), n_samples), 0.5)
    t_vals = rays.stratified(near, far, u.to(rays_o.device))  # (N, S)
    pts = rays_o[:, None] + t_vals[..., None] * rays_d[:, None]  # (N, S, 3)
    sigma, rgb = model(pts, rays_d[:, None].expand_as(pts))
    sigma = sigma * hit[:, None]  # rays that miss the box see only the background
    colour, opacity, depth, weights = render.composite(sigma, rgb, t_vals, background=background)
    return colour, opacity, depth, weights, t_vals


def fit_static(
    images,
    poses,
    intrinsics,
    background,
    weights=None,
    steps: int = 1500,
    batch: int = 1024,
    lr: float = 5e-3,
    n_samples: int = 48,
    seed: int = 0,
    config: StaticNeRFConfig | None = None,
):
    """Fit a StaticNeRF to frames of one head seen under known head poses.

    images (F, H, W, 3) float in [0, 1]; poses (F, 6); intrinsics (3, 3); background
    (H, W, 3), composited as the last sample of every ray; weights (F, H, W)
    biases the pixel sampling (e.g. toward the face), uniform if None.
    Returns the model and its history [(step, training PSNR)].
    """
    set_seed(seed)
    rng = np.random.default_rng(seed)
    f, h, w = images.shape[:3]
    model = StaticNeRF(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    pix_w = np.ones((f, h, w)) if weights is None else np.asarray(weights, np.float64)
    images_t = torch.from_numpy(np.ascontiguousarray(images, np.float32)).reshape(f, h * w, 3)
    bg = torch.from_numpy(np.ascontiguousarray(background, np.float32)).reshape(h * w, 3)
    c2w = [camera_to_head(p) for p in poses]
    grid = rays.pixel_grid(h, w)
    history = []
    for step in range(1, steps + 1):
        flat = rays.sample_pixels(pix_w, rng.random(batch))  # indices into (F, H, W)
        frame, pixel = flat // (h * w), flat % (h * w)
        o = np.empty((batch, 3), np.float32)
        d = np.empty((batch, 3), np.float32)
        for i in np.unique(frame):
            sel = frame == i
            o[sel], d[sel] = rays.camera_rays(intrinsics, c2w[i], grid[pixel[sel]])
        o_t, d_t = rays.to_torch(o, d)
        target = images_t[torch.from_numpy(frame), torch.from_numpy(pixel)]
        colour, *_ = render_rays(model, o_t, d_t, bg[torch.from_numpy(pixel)], n_samples)
        loss = ((colour - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == 1:
            history.append((step, 10 * np.log10(1.0 / max(loss.item(), 1e-10))))
    return model.eval(), history


@torch.no_grad()
def render_image(
    model: StaticNeRF,
    pose,
    intrinsics,
    background,
    height: int,
    width: int,
    n_samples: int = 48,
    chunk: int = 8192,
):
    """A whole (H, W, 3) image of the model under a head pose, evaluated without jitter."""
    o, d = rays.head_rays(intrinsics, pose, rays.pixel_grid(height, width))
    o, d = rays.to_torch(o, d)
    bg = torch.from_numpy(np.ascontiguousarray(background, np.float32)).reshape(-1, 3)
    out = [
        render_rays(model, o[i : i + chunk], d[i : i + chunk], bg[i : i + chunk], n_samples, jitter=False)[0]
        for i in range(0, len(o), chunk)
    ]
    return torch.cat(out).reshape(height, width, 3).numpy()
