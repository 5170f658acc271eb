"""Position encodings for the radiance fields: sinusoidal (Eq. 2) and tri-plane grids (ER-NeRF).

A NeRF's MLP sees a point through an encoding. Two are offered, behind one
interface (`encoder(x) -> features`, x in the unit cube [-1, 1]^3):

* `Frequency`: the sinusoidal encoding of NeRF and DialogueNeRF Eq. 2,
  gamma(p) = (p, sin(2^k pi p), cos(2^k pi p)) for k < L. Faithful, but every
  detail must be stored in the MLP's weights, which a CPU trains slowly.
* `TriPlane`: ER-NeRF's tri-plane representation (section 3.2, Eq. 4-5). Three
  axis-aligned 2D feature planes (xy, yz, xz), each a pyramid of resolutions; a
  point reads each plane by bilinear interpolation at its projection, and the
  readings are concatenated. Detail lives in the planes, each gradient step
  touches only the few texels around the batch's points, and a small MLP
  suffices: this is what makes CPU training practical. By default the planes are
  dense; with `hash_log2` = k the levels finer than 2^k texels are hashed into
  tables of 2^k entries (Instant-NGP's multiresolution hash encoding, as ER-NeRF's
  planar hash encoders), so that fine levels cost a fixed memory.

Both also encode 2D points (`dims=2`, x in [-1, 1]^2; the grid is then one plane): the
image-plane torso field of ER-NeRF section 3.4.
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
    """The sinusoidal encoding as a module: (..., D) -> (..., D (1 + 2 L)), D = `dims`."""

    def __init__(self, n_freqs: int = 8, dims: int = 3):
        super().__init__()
        self.n_freqs = n_freqs
        self.out_dim = dims * (1 + 2 * n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return positional_encoding(x, self.n_freqs)


class TriPlane(nn.Module):
    """Three multi-resolution 2D feature planes: (..., 3) in [-1, 1] -> (..., 3 * levels * features);
    with `dims=2` a single plane, (..., 2) -> (..., levels * features).

    Resolutions grow geometrically from `min_res` to `max_res`. A level of resolution r is a dense
    grid (3, F, r, r) when r^2 <= 2^hash_log2 (or always, with hash_log2 = 0), else a hash table
    (3, 2^hash_log2, F) read at the hashed texel corners (`hashed_level`). Features start small and
    random (as in Instant-NGP), so the field starts near empty.
    """

    PLANES = (slice(0, 2), slice(1, 3), slice(0, 3, 2))  # xy, yz, xz: views, where a list of axes would copy
    PRIME = 2654435761  # Instant-NGP's spatial hash (Eq. 4): h(x) = (x_1 pi_1 XOR x_2 pi_2) mod T, pi_1 = 1

    def __init__(self, levels: int = 4, features: int = 4, min_res: int = 16, max_res: int = 128,
                 hash_log2: int = 0, dims: int = 3):  # fmt: skip
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims {dims}: a tri-plane encodes 3D points, or 2D ones on a single plane")
        self.dims, self.planes = dims, self.PLANES if dims == 3 else self.PLANES[:1]
        growth = (max_res / min_res) ** (1 / max(levels - 1, 1))
        self.resolutions = [int(round(min_res * growth**i)) for i in range(levels)]
        table = 2**hash_log2 if hash_log2 else None
        self.grids = nn.ParameterList(  # per level: the three planes stacked
            nn.Parameter(1e-2 * torch.randn(len(self.planes), features, r, r))
            if table is None or r * r <= table
            else nn.Parameter(1e-2 * torch.randn(len(self.planes), table, features))
            for r in self.resolutions
        )
        self.out_dim = len(self.planes) * levels * features

    @property
    def hashed(self) -> list[bool]:
        """Per level, whether it is a hash table."""
        return [grid.dim() == 3 for grid in self.grids]

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """With `mix` (G, features), the planes' feature channels are first combined into G:
        bilinear interpolation is linear, so this equals mixing the sampled features afterwards,
        at the cost of G channels per point instead of `features`."""
        shape = x.shape[:-1]
        pts = x.reshape(-1, self.dims)
        # the projections of every point onto the planes, as grid_sample's (planes, 1, N, 2)
        uv = torch.stack([pts[:, p] for p in self.planes])[:, None]
        feats = []  # per level (planes, channels, N)
        for grid, r in zip(self.grids, self.resolutions, strict=True):
            if grid.dim() == 3:  # hashed (planes, T, C)
                table = grid if mix is None else grid @ mix.T
                feats.append(hashed_level(table, uv[:, 0], r))
            else:
                grid = grid if mix is None else torch.einsum("gc,pcyx->pgyx", mix, grid)
                sampled = F.grid_sample(grid, uv, mode="bilinear", padding_mode="border", align_corners=True)
                feats.append(sampled[:, :, 0])
        # one transpose for all levels: (planes, levels * channels, N) -> (N, planes * levels * channels)
        return torch.cat(feats, dim=1).permute(2, 0, 1).reshape(*shape, -1)


def texel_hash(ix: torch.Tensor, iy: torch.Tensor, table_size: int) -> torch.Tensor:
    """Instant-NGP's spatial hash of integer texel corners in 2D (ER-NeRF Eq. 4's planar hash
    encoders): (ix * 1 XOR iy * 2654435761) mod T, T a power of two."""
    return (ix ^ (iy * TriPlane.PRIME)) & (table_size - 1)


def hashed_level(table: torch.Tensor, uv: torch.Tensor, res: int) -> torch.Tensor:
    """Bilinear reading of one hashed level: table (P, T, C), uv (P, N, 2) in [-1, 1] -> (P, C, N) for
    P planes.

    The same interpolation as `grid_sample(..., align_corners=True, padding_mode="border")` on the
    dense grid whose texel (x, y) holds table[hash(x, y)]: texel i sits at -1 + 2 i / (res - 1).
    Plain PyTorch, four `index_select`s, no compiled extension.
    """
    planes, size, channels = table.shape
    pos = ((uv + 1) * (0.5 * (res - 1))).clamp(0, res - 1)  # (P, N, 2) in texels
    cell = pos.floor().clamp(max=res - 2)
    frac = pos - cell
    cell = cell.long()
    rows = table.reshape(planes * size, channels)
    plane_start = (torch.arange(planes, device=uv.device) * size)[:, None]  # (P, 1)
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            index = texel_hash(cell[..., 0] + dx, cell[..., 1] + dy, size) + plane_start  # (P, N)
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            corner = rows.index_select(0, index.flatten()).reshape(planes, -1, channels)  # (P, N, C)
            out = out + corner * (wx * wy)[..., None]
    return out.transpose(1, 2)


def make_encoder(kind: str, **kwargs) -> nn.Module:
    """`"grid"` (the tri-plane, the default for training on a CPU) or `"frequency"` (Eq. 2); `dims`
    among the keywords picks 3D (the default) or 2D points."""
    if kind == "grid":
        return TriPlane(**kwargs)
    if kind == "frequency":
        return Frequency(**kwargs)
    raise ValueError(f"unknown encoding {kind!r}: use 'grid' or 'frequency'")
