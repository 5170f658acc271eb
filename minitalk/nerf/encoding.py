"""Position encodings for the radiance fields: sinusoidal (Eq. 2) and tri-plane grids (ER-NeRF).

A NeRF's MLP sees a point through an encoding. Two are offered, behind one
interface (`encoder(x) -> features`, x in the unit cube [-1, 1]^3):

* `Frequency`: the sinusoidal encoding of NeRF and DialogueNeRF Eq. 2,
  gamma(p) = (p, sin(2^k pi p), cos(2^k pi p)) for k < L. Faithful, but every
  detail must be stored in the MLP's weights, which a CPU trains slowly.
* `TriPlane`: ER-NeRF's idea (section 3.1). Three axis-aligned 2D feature
  planes (xy, yz, xz), each a pyramid of resolutions; a point reads each
  plane by bilinear interpolation at its projection, and the readings are
  concatenated. Detail lives in the planes, each gradient step touches only
  the few texels around the batch's points, and a small MLP suffices: this is
  what makes CPU training practical. Dense planes (no hashing) at these sizes
  hold about a million numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def positional_encoding(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """gamma(x): (..., D) -> (..., D * (1 + 2 * n_freqs)), the input itself first."""
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * torch.pi  # (L,)
    angles = x[..., None] * freqs  # (..., D, L)
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)  # (..., D * 2L)
    return torch.cat([x, enc], dim=-1)


class Frequency(nn.Module):
    """The sinusoidal encoding as a module: (..., 3) -> (..., 3 (1 + 2 L))."""

    def __init__(self, n_freqs: int = 8):
        super().__init__()
        self.n_freqs = n_freqs
        self.out_dim = 3 * (1 + 2 * n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return positional_encoding(x, self.n_freqs)


class TriPlane(nn.Module):
    """Three multi-resolution 2D feature planes: (..., 3) in [-1, 1] -> (..., 3 * levels * features).

    Resolutions grow geometrically from `min_res` to `max_res`. Features start
    small and random (as in Instant-NGP), so the field starts near empty.
    """

    PLANES = (slice(0, 2), slice(1, 3), slice(0, 3, 2))  # xy, yz, xz: views, where a list of axes would copy

    def __init__(self, levels: int = 4, features: int = 4, min_res: int = 16, max_res: int = 128):
        super().__init__()
        growth = (max_res / min_res) ** (1 / max(levels - 1, 1))
        self.resolutions = [int(round(min_res * growth**i)) for i in range(levels)]
        self.grids = nn.ParameterList(
            nn.Parameter(1e-2 * torch.randn(3, features, r, r)) for r in self.resolutions
        )  # per level: the three planes stacked
        self.out_dim = 3 * levels * features

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """With `mix` (G, features), the planes' feature channels are first combined into G:
        bilinear interpolation is linear, so this equals mixing the sampled features afterwards,
        at the cost of G channels per point instead of `features`."""
        shape = x.shape[:-1]
        pts = x.reshape(-1, 3)
        grids = self.grids if mix is None else [torch.einsum("gc,pcyx->pgyx", mix, g) for g in self.grids]
        # the projections of every point onto the three planes, as grid_sample's (3, 1, N, 2)
        uv = torch.stack([pts[:, p] for p in self.PLANES])[:, None]
        feats = [  # per level (3, channels, N)
            F.grid_sample(grid, uv, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
            for grid in grids
        ]
        # one transpose for all levels: (3, levels * channels, N) -> (N, 3 * levels * channels)
        return torch.cat(feats, dim=1).permute(2, 0, 1).reshape(*shape, -1)

    def total_variation(self) -> torch.Tensor:
        """Mean squared difference of neighbouring texels: a smoothness prior on the planes."""
        tv = 0.0
        for grid in self.grids:
            tv = tv + ((grid[..., 1:, :] - grid[..., :-1, :]) ** 2).mean()
            tv = tv + ((grid[..., :, 1:] - grid[..., :, :-1]) ** 2).mean()
        return tv / len(self.grids)


def make_encoder(kind: str, **kwargs) -> nn.Module:
    """`"grid"` (the tri-plane, the default for training on a CPU) or `"frequency"` (Eq. 2)."""
    if kind == "grid":
        return TriPlane(**kwargs)
    if kind == "frequency":
        return Frequency(**kwargs)
    raise ValueError(f"unknown encoding {kind!r}: use 'grid' or 'frequency'")
