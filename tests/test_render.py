"""Volume rendering: the twins agree, the weights behave, the closed form of a known scene holds."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minitalk import metrics
from minitalk.nerf import kernels, rays, render
from minitalk.nerf.render import visible_samples


def random_samples(n, s, seed=0):
    rng = np.random.default_rng(seed)
    sigma = (rng.random((n, s)) * rng.choice([0.1, 5, 50], (n, 1))).astype(np.float32)
    rgb = rng.random((n, s, 3)).astype(np.float32)
    t = np.cumsum(rng.uniform(0.005, 0.05, (n, s)), axis=1).astype(np.float32)
    bg = rng.random((n, 3)).astype(np.float32)
    return sigma, rgb, t, bg


def test_padded_twins_agree():
    sigma, rgb, t, bg = random_samples(500, 32)
    dt = render.deltas(torch.from_numpy(t)).numpy()
    colour, opacity, depth, weights = render.composite(*map(torch.from_numpy, (sigma, rgb, t, dt, bg)))
    for c, o, w in (
        render.composite_numpy(sigma, rgb, dt, bg),
        render.composite_numba(sigma, rgb, dt, bg),
        render.composite_numba.py_func(sigma[:20], rgb[:20], dt[:20], bg[:20]),
    ):
        k = len(c)
        np.testing.assert_allclose(c, colour[:k].numpy(), atol=1e-5)
        np.testing.assert_allclose(o, opacity[:k].numpy(), atol=1e-5)
        np.testing.assert_allclose(w, weights[:k].numpy(), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.integers(0, 2**31))
def test_weights_are_nonnegative_and_sum_to_at_most_one(n, s, seed):
    sigma, rgb, t, bg = random_samples(n, s, seed)
    _, opacity, _, weights = render.composite(*map(torch.from_numpy, (sigma, rgb, t)))
    assert torch.all(weights >= 0) and torch.all(opacity <= 1 + 1e-6)


def test_empty_ray_shows_the_background_and_an_opaque_wall_hides_it():
    t = torch.linspace(0.1, 1.0, 16)[None].repeat(2, 1)
    sigma = torch.zeros(2, 16)
    sigma[1, 5:] = 1e4  # a wall from the 6th sample on
    rgb = torch.zeros(2, 16, 3)
    rgb[1, 5:] = torch.tensor([1.0, 0.0, 0.0])
    colour, opacity, depth, _ = render.composite(sigma, rgb, t, background=torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(colour[0], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(colour[1], torch.tensor([1.0, 0.0, 0.0]))
    assert opacity[0] == 0 and opacity[1] == pytest.approx(1.0)
    assert depth[1] == pytest.approx(t[1, 5].item(), abs=1e-5)


def test_translucent_sphere_matches_the_closed_form():
    """C = c (1 - exp(-sigma l)) + c_bg exp(-sigma l) for a chord of length l."""
    n = 400
    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.1, 0.1, (n, 2))
    o = np.concatenate([xy, np.full((n, 1), -0.5)], 1).astype(np.float32)
    d = np.tile(np.array([0, 0, 1], np.float32), (n, 1))
    near, far, _ = rays.ray_aabb(o, d, np.full(3, -0.2), np.full(3, 0.2))
    t = torch.from_numpy(rays.stratified(near, far, np.full((n, 2048), 0.5)))
    pts = torch.from_numpy(o)[:, None] + t[..., None] * torch.from_numpy(d)[:, None]
    density, c, bg = 25.0, torch.tensor([0.9, 0.3, 0.2]), torch.tensor([0.1, 0.2, 0.5])
    sigma = torch.where(pts.norm(dim=-1) < 0.08, torch.tensor(density), torch.tensor(0.0))
    colour, *_ = render.composite(sigma, c.expand(n, 2048, 3), t, background=bg)
    chord = 2 * np.sqrt(np.clip(0.08**2 - (xy**2).sum(1), 0, None))
    keep = np.exp(-density * chord)[:, None]
    exact = c.numpy() * (1 - keep) + bg.numpy() * keep
    np.testing.assert_allclose(colour.numpy(), exact, atol=5e-3)


def test_packed_equals_padded_per_ray():
    sigma, rgb, t, bg = random_samples(60, 24, seed=2)
    dt = render.deltas(torch.from_numpy(t)).numpy()
    counts = np.random.default_rng(3).integers(0, 25, 60)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = np.arange(24)[None, :] < counts[:, None]
    packed = [x[keep] for x in (sigma, rgb, t, dt)]
    colour, opacity, depth, weights = render.composite_packed(
        *map(torch.from_numpy, packed),
        torch.from_numpy(offsets),
        torch.from_numpy(counts),
        torch.from_numpy(bg),
    )
    nb_colour, nb_opacity, nb_weights = render.composite_packed_numba(
        packed[0], packed[1], packed[3], offsets, counts, bg
    )
    for r in range(60):
        c = counts[r]
        if c == 0:
            np.testing.assert_allclose(colour[r].numpy(), bg[r], atol=1e-6)
            continue
        ref = render.composite(
            *(torch.from_numpy(x[r : r + 1, :c]) for x in (sigma, rgb, t, dt)),
            background=torch.from_numpy(bg[r : r + 1]),
        )
        np.testing.assert_allclose(colour[r].numpy(), ref[0][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(depth[r].numpy(), ref[2][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(nb_colour, colour.numpy(), atol=1e-5)
    np.testing.assert_allclose(nb_opacity, opacity.numpy(), atol=1e-5)
    np.testing.assert_allclose(nb_weights, weights.numpy(), atol=1e-5)


def test_compositing_is_differentiable():
    sigma, rgb, t, bg = (torch.from_numpy(x).double() for x in random_samples(3, 6, seed=4))
    sigma.requires_grad_(True)
    rgb.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, c: render.composite(s, c, t, background=bg)[0], (sigma, rgb))


def test_depth_order_puts_the_nearer_sample_in_front():
    t_head = torch.tensor([[0.5, 0.9]])
    t_torso = torch.tensor([[0.7, 0.8]])
    sig_head, sig_torso = torch.tensor([[1e4, 1e4]]), torch.tensor([[1e4, 1e4]])
    red, blue = torch.tensor([1.0, 0, 0]).expand(1, 2, 3), torch.tensor([0, 0, 1.0]).expand(1, 2, 3)

    def merged(t_head):
        t, order = render.depth_order(t_head, t_torso)
        sigma = render.in_depth_order(order, sig_head, sig_torso)
        return t, render.composite(sigma, render.in_depth_order(order, red, blue), t)[0]

    t, colour = merged(t_head)
    assert torch.all(t[:, 1:] >= t[:, :-1])
    torch.testing.assert_close(colour[0], torch.tensor([1.0, 0, 0]))  # the head sample at 0.5 wins
    t, colour = merged(t_head + 0.3)
    torch.testing.assert_close(colour[0], torch.tensor([0, 0, 1.0]))  # now the torso is nearer


@settings(max_examples=30, deadline=None)
@given(st.floats(-80, 87, width=32), st.integers(0, 2**31))
def test_numba_exp_matches_float64(scale, seed):
    """The Numba twins' vectorisable exp(-x) is within a few float32 ulp of float64's across its range."""
    depth = (np.random.default_rng(seed).random(200) * scale).astype(np.float32)
    depth[:3] = 0.0, scale, -scale
    out, bits = np.empty_like(depth), np.empty(len(depth), np.int32)
    kernels._exp_neg(depth, out, bits)
    np.testing.assert_allclose(out, np.exp(-depth.astype(np.float64)), rtol=4e-7, atol=0)


# --- the renderer on a DialogueNeRF ---------------------------------------------------------


def test_a_frame_renders_at_any_size_and_its_finer_pixels_average_to_the_coarse_ones(tensors, tiny_model):
    """At twice the size each pixel splits into four whose rays, plate and colour average to its own."""
    frames, s = tensors, tensors.size

    def rays(size, grid=None):
        pixel = torch.arange((grid or size) ** 2)
        return frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 9), pixel, size)

    def blocks(x):  # (4 S^2, C) on the 2S grid -> (S^2, C), the mean of each 2x2 block
        return x.reshape(s, 2, s, 2, -1).mean((1, 3)).reshape(s * s, -1)

    coarse, fine = rays(s), rays(2 * s)
    for key, value in rays(None, s).items():
        assert torch.equal(value, coarse[key]), key  # the frames' own size is the default
    torch.testing.assert_close(blocks(fine["d_cam"]), coarse["d_cam"], rtol=0, atol=1e-5)
    assert (blocks(fine["background"]) - coarse["background"]).abs().mean() < 0.01
    model = tiny_model(frames).eval()
    with torch.no_grad():
        small = render.render_frame(model, frames, 1, 9, torch.device("cpu"))
        large = render.render_frame(model, frames, 1, 9, torch.device("cpu"), size=2 * s)
    assert small.shape == (s, s, 3) and large.shape == (2 * s, 2 * s, 3)
    # 46 dB measured; the same images a pixel apart differ at 35 dB
    assert metrics.psnr(blocks(large.reshape(-1, 3)).reshape(s, s, 3), small) > 40


def test_empty_occupancy_leaves_only_the_background(tensors, tiny_model):
    frames = tensors
    model = tiny_model(frames).eval()
    model.head_grid.occupied.zero_()
    model.torso_grid.occupied.zero_()
    pixel = torch.arange(0, frames.size * frames.size, 5)
    rays = frames.rays(torch.zeros_like(pixel), torch.full_like(pixel, 3), pixel)
    out = render.render_rays(
        model, rays, torch.zeros(len(pixel), model.config.n_expression + 1), jitter=False
    )
    assert out["samples"] == 0
    torch.testing.assert_close(out["colour"], rays["background"])


def test_visible_samples_stop_behind_opaque_ones_the_heads_behind_the_head_alone():
    t_head, sigma_head = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[0.0, 100.0, 0.0, 0.0]])
    t_torso, sigma_torso = torch.tensor([[1.5, 2.5]]), torch.tensor([[100.0, 0.0]])
    keep_head = torch.tensor([True, True, False, True])  # a sample the grid skipped stays skipped
    keep_torso = torch.tensor([True, True])
    t, order = render.depth_order(t_head, t_torso)
    head, torso = visible_samples(t, order, t_head, sigma_head, sigma_torso, keep_head, keep_torso, 1e-3)
    # the head sample at 2 lies behind the opaque torso sample at 1.5, but the head's own
    # silhouette sees it; the torso sample at 2.5 lies behind the opaque head sample at 2
    assert head.tolist() == [True, True, False, False]
    assert torso.tolist() == [True, False]


def test_training_renders_leave_out_hidden_samples_without_changing_picture_or_gradients(tensors, tiny_model):
    frames = tensors
    model = tiny_model(frames)
    pixel = torch.arange(0, frames.size * frames.size, 3)
    rays = frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 7), pixel)
    state = torch.randn(1, model.config.n_expression + 1).expand(len(pixel), -1)
    with torch.no_grad():
        model.head_out.bias[0] = 8.0  # an opaque head: what lies behind its front cannot show
    runs = {}
    for min_transmittance in (0.0, 1e-3):
        model.zero_grad()
        out = render.render_rays(model, rays, state, jitter=False, min_transmittance=min_transmittance)
        (out["colour"].sum() + out["opacity"].sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.head_enc.parameters()])
        runs[min_transmittance] = out, grads
    (full, full_grad), (visible, visible_grad) = runs.values()
    assert visible["samples"] < 0.6 * full["samples"]
    assert (visible["colour"] - full["colour"]).abs().max() <= 1e-3 + 1e-5
    assert (visible["opacity"] - full["opacity"]).abs().max() <= 1e-3 + 1e-5
    assert (visible_grad - full_grad).norm() <= 0.01 * full_grad.norm()


def test_front_to_back_rendering_matches_compositing_and_stops_behind_opaque_surfaces(tensors, tiny_model):
    frames = tensors
    model = tiny_model(frames).eval()
    pixel = torch.arange(0, frames.size * frames.size, 3)
    rays = frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 7), pixel)
    state = torch.randn(1, model.config.n_expression + 1).expand(len(pixel), -1)
    with torch.no_grad():
        full = render.render_rays(model, rays, state, jitter=False)
        exact = render.render_rays_front_to_back(model, rays, state, slab=3, min_transmittance=0.0)
        torch.testing.assert_close(exact["colour"], full["colour"], atol=1e-5, rtol=0)
        assert exact["samples"] == full["samples"]
        model.head_out.bias[0] = 8.0  # an opaque head: rays stop soon after they reach it
        full = render.render_rays(model, rays, state, jitter=False)
        early = render.render_rays_front_to_back(model, rays, state, slab=4, min_transmittance=1e-3)
    assert (early["colour"] - full["colour"]).abs().max() <= 1e-3 + 1e-5
    assert early["samples"] < 0.6 * full["samples"]


def test_a_2d_torso_is_a_layer_between_the_plate_and_the_head(tensors, tiny_model):
    """ER-NeRF 3.4: C = C_head + (1 - A_head) (alpha c + (1 - alpha) c_bg). Without head samples the
    picture is the layer over the plate, by hand; an opaque head hides the layer entirely; front to
    back rendering composites the same way."""
    frames = tensors
    model = tiny_model(frames, torso="2d", pose_encoding="keypoints").eval()
    pixel = torch.arange(0, frames.size * frames.size, 3)
    rays = frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 7), pixel)
    state = torch.randn(1, model.config.n_expression + 1).expand(len(pixel), -1)
    with torch.no_grad():
        colour, alpha = model.torso_layer(rays)
        assert colour.shape == (len(pixel), 3) and ((alpha > 0) & (alpha < 1)).all()
        full = render.render_rays(model, rays, state, jitter=False)
        exact = render.render_rays_front_to_back(model, rays, state, slab=3, min_transmittance=0.0)
        torch.testing.assert_close(exact["colour"], full["colour"], atol=1e-5, rtol=0)
        torch.testing.assert_close(exact["opacity"], full["opacity"], atol=1e-5, rtol=0)
        torch.testing.assert_close(full["torso_alpha"], alpha)  # what training's torso silhouette fits
        model.head_out.bias[0] = 8.0  # an opaque head
        covered = render.render_rays(model, rays, state, jitter=False, parts=True)
        hidden = covered["head_opacity"] > 1 - 1e-6
        assert hidden.sum() > 20 and (~hidden).sum() > 20
        model.torso_out[-1].bias[1:] += 3.0  # another torso colour: shows around the head only
        recoloured = render.render_rays(model, rays, state, jitter=False)
        torch.testing.assert_close(recoloured["colour"][hidden], covered["colour"][hidden], atol=1e-5, rtol=0)
        assert (recoloured["colour"][~hidden] - covered["colour"][~hidden]).abs().max() > 0.05
        model.head_grid.occupied.zero_()  # no head: the layer over the plate
        bare = render.render_rays(model, rays, state, jitter=False, parts=True)
        colour, alpha = model.torso_layer(rays)
    assert bare["samples"] == 0
    torch.testing.assert_close(
        bare["colour"], alpha[:, None] * colour + (1 - alpha[:, None]) * rays["background"]
    )
    torch.testing.assert_close(bare["opacity"], alpha)
    torch.testing.assert_close(bare["torso"], bare["colour"])
    torch.testing.assert_close(bare["head"], rays["background"])
