"""Volume rendering: alpha compositing along rays (DialogueNeRF Eq. 4-5; NeRF Eq. 3).

For samples i = 1..S along a ray with densities sigma_i, colours c_i and
lengths delta_i,

    alpha_i = 1 - exp(-sigma_i delta_i)
    T_i     = exp(-sum_{j<i} sigma_j delta_j)          (transmittance)
    w_i     = T_i alpha_i                               (weights: >= 0, sum <= 1)
    C       = sum_i w_i c_i + (1 - sum_i w_i) c_bg      (the background is the last sample)

DialogueNeRF IV-B composites head and torso samples of the same pixel ray
together, in depth order, with the background plate behind them:
`depth_order` sorts the two sets together once, and `in_depth_order` puts any
per-sample values of them in that order before compositing.

Two layouts: padded (N_rays, N_samples), and packed (all kept samples of all
rays in one array, ray r owning [offsets[r], offsets[r] + counts[r])), which is
what occupancy-grid marching produces. The torch functions are differentiable
and run on any device; the NumPy and Numba twins exist for checking and speed
measurements.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

# --- padded samples (N_rays, N_samples) ------------------------------------------------------


def deltas(t_vals: torch.Tensor) -> torch.Tensor:
    """Sample lengths (N, S): gaps to the next sample, the last repeating the one before."""
    d = t_vals[:, 1:] - t_vals[:, :-1]
    return torch.cat([d, d[:, -1:]], dim=1)


def transmittance(tau):
    """T_i = exp(-sum_{j<i} tau_j) for padded samples (N, S) of optical thickness tau = sigma delta:
    the light left before each."""
    return torch.exp(-(torch.cumsum(tau, dim=1) - tau))  # exclusive sum: T_1 = 1


def composite(sigma, rgb, t_vals, dt=None, background=None):
    """Composite padded samples. sigma (N, S), rgb (N, S, 3), t_vals (N, S), background (N, 3) or (3,).

    Returns colour (N, 3), opacity (N,), depth (N,) and weights (N, S).
    """
    dt = deltas(t_vals) if dt is None else dt
    tau = sigma * dt
    weights = transmittance(tau) * -torch.expm1(-tau)  # T_i alpha_i; expm1 keeps thin samples exact
    colour = (weights[..., None] * rgb).sum(dim=1)  # (N, 3)
    opacity = weights.sum(dim=1)
    depth = (weights * t_vals).sum(dim=1)
    if background is not None:
        colour = colour + (1.0 - opacity)[:, None] * background
    return colour, opacity, depth, weights


def depth_order(t_a, t_b):
    """Two padded sample sets of the same rays, t_a (N, A) and t_b (N, B), in one depth order.

    Returns t (N, A + B) sorted and `order`, the index of each into [set a | set b]
    (for `in_depth_order`).
    """
    return torch.sort(torch.cat([t_a, t_b], dim=1), dim=1)


def in_depth_order(order, x_a, x_b):
    """Per-sample values of set a (N, A, ...) and set b (N, B, ...) put in `depth_order`'s order."""
    x = torch.cat([x_a, x_b], dim=1)
    idx = order.reshape(*order.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def composite_numpy(sigma, rgb, dt, background):
    """NumPy reference of `composite` (dt given)."""
    tau = sigma.astype(np.float64) * dt
    weights = np.exp(-(np.cumsum(tau, axis=1) - tau)) * (1.0 - np.exp(-tau))
    opacity = weights.sum(1)
    colour = (weights[..., None] * rgb).sum(1) + (1 - opacity)[:, None] * background
    return colour.astype(np.float32), opacity.astype(np.float32), weights.astype(np.float32)


@njit(cache=True, nogil=True, parallel=True)
def composite_numba(sigma, rgb, dt, background):
    n, s = sigma.shape
    colour = np.empty((n, 3), np.float32)
    opacity = np.empty(n, np.float32)
    weights = np.empty((n, s), np.float32)
    for i in prange(n):
        trans = 1.0  # transmittance so far: one exp per sample
        acc, r, g, b = 0.0, 0.0, 0.0, 0.0
        for j in range(s):
            keep = np.exp(-sigma[i, j] * dt[i, j])
            w = trans * (1.0 - keep)
            trans *= keep
            weights[i, j] = w
            acc += w
            r += w * rgb[i, j, 0]
            g += w * rgb[i, j, 1]
            b += w * rgb[i, j, 2]
        opacity[i] = acc
        colour[i, 0] = r + (1 - acc) * background[i, 0]
        colour[i, 1] = g + (1 - acc) * background[i, 1]
        colour[i, 2] = b + (1 - acc) * background[i, 2]
    return colour, opacity, weights


# --- packed samples --------------------------------------------------------------------------


def composite_packed(sigma, rgb, t, dt, offsets, counts, background=None):
    """Composite packed samples: sigma (M,), rgb (M, 3), t (M,), dt (M,); offsets, counts (N,).

    Transmittance restarts at each ray: an exclusive running sum over all
    samples, minus its value where the ray begins. Sums run in float64 so that
    long packed arrays keep their precision. Returns colour (N, 3), opacity (N,),
    depth (N,) and weights (M,).
    """
    n = counts.shape[0]
    ray = torch.repeat_interleave(torch.arange(n, device=sigma.device), counts)  # (M,) owner of each
    tau = (sigma * dt).double()
    exclusive = torch.cumsum(tau, 0) - tau
    start = exclusive[offsets.clamp(max=max(len(tau) - 1, 0))] if len(tau) else exclusive
    transmittance = torch.exp(-(exclusive - start[ray])).to(sigma.dtype)
    weights = transmittance * (1.0 - torch.exp(-(sigma * dt)))
    colour = torch.zeros(n, 3, dtype=rgb.dtype, device=rgb.device).index_add(0, ray, weights[:, None] * rgb)
    opacity = torch.zeros(n, dtype=sigma.dtype, device=sigma.device).index_add(0, ray, weights)
    depth = torch.zeros(n, dtype=t.dtype, device=t.device).index_add(0, ray, weights * t)
    if background is not None:
        colour = colour + (1.0 - opacity)[:, None] * background
    return colour, opacity, depth, weights


@njit(cache=True, nogil=True, parallel=True)
def composite_packed_numba(sigma, rgb, dt, offsets, counts, background):
    n = counts.shape[0]
    colour = np.empty((n, 3), np.float32)
    opacity = np.empty(n, np.float32)
    weights = np.empty(sigma.shape[0], np.float32)
    for i in prange(n):
        trans, acc, r, g, b = 1.0, 0.0, 0.0, 0.0, 0.0
        for k in range(offsets[i], offsets[i] + counts[i]):
            keep = np.exp(-sigma[k] * dt[k])
            w = trans * (1.0 - keep)
            trans *= keep
            weights[k] = w
            acc += w
            r += w * rgb[k, 0]
            g += w * rgb[k, 1]
            b += w * rgb[k, 2]
        opacity[i] = acc
        colour[i, 0] = r + (1 - acc) * background[i, 0]
        colour[i, 1] = g + (1 - acc) * background[i, 1]
        colour[i, 2] = b + (1 - acc) * background[i, 2]
    return colour, opacity, weights
