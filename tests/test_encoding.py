"""Position encodings: sizes, gradients, and the static NeRF built on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitalk.nerf import static
from minitalk.nerf.encoding import Frequency, TriPlane, hashed_level, texel_hash


def test_encodings_have_their_sizes_and_gradients():
    x = torch.rand(5, 7, 3, requires_grad=True) * 2 - 1
    tri = TriPlane(levels=3, features=2, min_res=4, max_res=16)
    assert tri(x).shape == (5, 7, tri.out_dim) and tri.out_dim == 3 * 3 * 2
    tri(x).sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in tri.grids)
    assert Frequency(4)(x).shape == (5, 7, 3 * 9)


def test_a_2d_grid_is_the_tri_planes_xy_plane():
    """dims=2 (the 2D torso field's encoding, ER-NeRF 3.4): one plane, read as the tri-plane reads
    its xy plane, dense and hashed levels alike."""
    torch.manual_seed(0)
    tri = TriPlane(levels=2, features=3, min_res=8, max_res=32, hash_log2=6)
    flat = TriPlane(levels=2, features=3, min_res=8, max_res=32, hash_log2=6, dims=2)
    assert flat.out_dim == 2 * 3 and flat.hashed == tri.hashed
    with torch.no_grad():
        for mine, theirs in zip(flat.grids, tri.grids, strict=True):
            mine.copy_(theirs[:1])
    x = torch.rand(40, 3) * 2 - 1
    torch.testing.assert_close(flat(x[:, :2]), tri(x)[:, : flat.out_dim])  # xy's features come first
    assert Frequency(4, dims=2)(x[:, :2]).shape == (40, 2 * 9) == (40, Frequency(4, dims=2).out_dim)


def test_positional_encoding_and_static_nerf():
    x = torch.tensor([[0.25, -0.5, 1.0]])
    enc = static.positional_encoding(x, 3)
    assert enc.shape == (1, 3 * 7)
    torch.testing.assert_close(enc[0, :3], x[0])
    # per coordinate: sin at frequencies 2^0 pi, 2^1 pi, 2^2 pi, then the cosines
    freqs = torch.pi * 2.0 ** torch.arange(3)
    torch.testing.assert_close(enc[0, 3:6], torch.sin(freqs * x[0, 0]))
    torch.testing.assert_close(enc[0, 6:9], torch.cos(freqs * x[0, 0]))
    model = static.StaticNeRF()
    o = torch.tensor([[0.0, 0.0, -1.0], [5.0, 5.0, -1.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bg = torch.tensor([[0.2, 0.4, 0.6], [0.2, 0.4, 0.6]])
    colour, opacity, *_ = static.render_rays(model, o, d, bg, n_samples=16)
    assert colour.shape == (2, 3) and opacity[1] == 0
    torch.testing.assert_close(colour[1], bg[1])  # the second ray misses the box


def test_a_hashed_level_reads_as_the_dense_grid_its_hash_spells():
    """Each texel (x, y) of a hashed level holds table[hash(x, y)]; reading it must equal bilinear
    grid sampling of that dense grid, collisions included (they only share values)."""
    torch.manual_seed(0)
    tri = TriPlane(levels=2, features=3, min_res=8, max_res=32, hash_log2=6)  # 8^2 = 64 dense, 32^2 hashed
    assert tri.hashed == [False, True] and tri.grids[1].shape == (3, 64, 3)
    r = tri.resolutions[1]
    iy, ix = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
    dense = tri.grids[1][:, texel_hash(ix, iy, 64)].permute(0, 3, 1, 2)  # (3, C, r, r)
    uv = torch.rand(3, 1, 500, 2) * 2.2 - 1.1  # some outside [-1, 1]: clamped to the border
    expected = F.grid_sample(dense, uv, mode="bilinear", padding_mode="border", align_corners=True)[:, :, 0]
    torch.testing.assert_close(hashed_level(tri.grids[1], uv[:, 0], r), expected)


def test_hashed_planes_have_fixed_size_and_gradients():
    dense = TriPlane(levels=4, features=2, min_res=16, max_res=512)
    hashed = TriPlane(levels=4, features=2, min_res=16, max_res=512, hash_log2=12)
    size = lambda enc: sum(g.numel() for g in enc.grids)  # noqa: E731
    assert hashed.hashed == [False, False, True, True]  # 16, 51 dense; 161, 512 hashed
    assert size(hashed) == 3 * 2 * (16**2 + 51**2 + 2 * 4096) < size(dense) / 20
    x = torch.rand(64, 3) * 2 - 1
    hashed(x).square().sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in hashed.grids)
    mix = torch.randn(5, 2)  # mixing channels commutes with reading the planes
    torch.testing.assert_close(
        hashed(x, mix=mix).reshape(64, 3, 4, 5),
        torch.einsum("npc,gc->npg", hashed(x).reshape(64, 12, 2), mix).reshape(64, 3, 4, 5),
    )
