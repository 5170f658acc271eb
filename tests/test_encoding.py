"""Position encodings: sizes, gradients, and the static NeRF built on them."""

from __future__ import annotations

import torch

from minitalk.nerf import static
from minitalk.nerf.encoding import Frequency, TriPlane


def test_encodings_have_their_sizes_and_gradients():
    x = torch.rand(5, 7, 3, requires_grad=True) * 2 - 1
    tri = TriPlane(levels=3, features=2, min_res=4, max_res=16)
    assert tri(x).shape == (5, 7, tri.out_dim) and tri.out_dim == 3 * 3 * 2
    tri(x).sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in tri.grids)
    assert Frequency(4)(x).shape == (5, 7, 3 * 9)


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
