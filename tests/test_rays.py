"""Ray helpers: every Numba kernel equals its NumPy reference (and its own .py_func), the torch
twins agree, and the sampling properties hold."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minitalk.camera import camera_to_head, intrinsic_matrix
from minitalk.nerf import rays

BOX_MIN, BOX_MAX = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.0])


def random_rays(n, seed=0, origin_radius=3.0):
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(n, 3))
    o = (origin_radius * o / np.linalg.norm(o, axis=1, keepdims=True)).astype(np.float32)
    target = rng.uniform(-1.2, 1.2, (n, 3))
    d = target - o
    return o, (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)


def ref_and_numba(name, *args, **kwargs):
    """The NumPy reference and the Numba kernel on the same input."""
    ref = getattr(rays, f"{name}_numpy")(*args, **kwargs)
    fast = getattr(rays, f"{name}_numba")(*args, **kwargs)
    return ref, fast


def assert_same(a, b, atol=1e-5):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=atol, rtol=1e-5)


# --- camera rays ----------------------------------------------------------------------------


def test_camera_rays_twins_and_geometry():
    intrinsics = intrinsic_matrix(200.0, 64, 48)
    pose = np.array([10.0, -20.0, 5.0, 0.01, -0.02, 0.7])
    c2w = camera_to_head(pose)
    px = rays.pixel_grid(48, 64)
    ref, fast = ref_and_numba("camera_rays", intrinsics, c2w, px)
    assert_same(ref, fast)
    py = rays.camera_rays_numba.py_func(intrinsics, c2w, px[:50])
    assert_same(py, (fast[0][:50], fast[1][:50]))
    o, d = fast
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    # the central ray points from the camera at the head origin when the head sits on the axis
    on_axis = camera_to_head(np.array([10.0, -20.0, 5.0, 0.0, 0.0, 0.7]))
    o2, d2 = rays.camera_rays_numba(intrinsics, on_axis, np.array([[31.5, 23.5]], np.float32))
    np.testing.assert_allclose(o2[0] + 0.7 * d2[0], 0.0, atol=1e-6)
    assert_same(rays.head_rays(intrinsics, pose, px), fast)
    ot, dt = rays.camera_rays(torch.from_numpy(intrinsics), torch.from_numpy(c2w), torch.from_numpy(px))
    assert_same((ot.numpy(), dt.numpy()), fast)


def test_py_func_equals_compiled():
    """The kernels' Python source, run as plain Python, computes what the compiled kernels do."""
    o, d = random_rays(40, seed=1)
    near, far, _ = rays.ray_aabb_numba(o, d, BOX_MIN, BOX_MAX)
    bins, weights = coarse_pass(40, 8, seed=2)
    u = np.random.default_rng(3).random((40, 6))
    u[::2] = np.sort(u[::2], axis=1)  # the merge of sorted rows and the sort of the others
    occupied = sphere_grid(16) > 0
    for name, args in (
        ("ray_aabb", (o, d, BOX_MIN, BOX_MAX)),
        ("stratified", (np.zeros(40, np.float32), np.ones(40, np.float32), np.full((40, 8), 0.3))),
        ("importance", (bins, weights, u)),
        ("march", (o, d, near, far, occupied, BOX_MIN, BOX_MAX, 0.2, 24)),  # dense: a sample every 1.6 cells
        ("march", (o, d, near, far, occupied, BOX_MIN, BOX_MAX, 0.02, 200)),  # jumping: 6 samples per cell
        ("grid_update", (np.full((4, 4, 4), 0.5, np.float32), sphere_grid(4), 0.9, 0.3)),
        ("sample_pixels", (np.random.default_rng(4).random((8, 8)), np.linspace(0, 0.999, 30))),
    ):
        kernel = getattr(rays, f"{name}_numba")
        assert_same(kernel(*args), kernel.py_func(*args))


# --- box intersection -----------------------------------------------------------------------


def test_ray_aabb_twins_and_misses():
    o, d = random_rays(2000)
    ref, fast = ref_and_numba("ray_aabb", o, d, BOX_MIN, BOX_MAX)
    assert_same(ref, fast)
    near, far, hit = fast
    assert hit.any() and not hit.all()
    assert np.all(near[~hit] == 0) and np.all(far[~hit] == 0) and np.isfinite(near).all()
    for t in (near[hit], far[hit]):  # entry and exit points lie on the box surface
        p = o[hit] + t[:, None] * d[hit]
        np.testing.assert_allclose(np.abs(p).max(1), 1.0, atol=1e-4)
    # axis-parallel rays (zero direction components) inside and outside a slab
    o2 = np.array([[0.5, 0.5, -3.0], [1.5, 0.5, -3.0]], np.float32)
    d2 = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
    ref, fast = ref_and_numba("ray_aabb", o2, d2, BOX_MIN, BOX_MAX)
    assert_same(ref, fast)
    np.testing.assert_array_equal(fast[2], [True, False])
    np.testing.assert_allclose(fast[0][0], 2.0, atol=1e-6)
    tn, tf, th = rays.ray_aabb(torch.from_numpy(o), torch.from_numpy(d), BOX_MIN, BOX_MAX)
    assert_same((tn.numpy(), tf.numpy(), th.numpy()), rays.ray_aabb(o, d, BOX_MIN, BOX_MAX))


# --- stratified and importance sampling -----------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(1, 33), st.integers(0, 2**31))
def test_stratified_samples_are_inside_and_sorted(n, s, seed):
    rng = np.random.default_rng(seed)
    near = rng.uniform(0, 2, n).astype(np.float32)
    far = near + rng.uniform(0.01, 3, n).astype(np.float32)
    u = rng.random((n, s))
    ref, fast = ref_and_numba("stratified", near, far, u)
    assert_same(ref, fast)
    assert np.all(fast >= near[:, None] - 1e-6) and np.all(fast <= far[:, None] + 1e-6)
    assert np.all(np.diff(fast, axis=1) >= -1e-6)
    tn, tf, tu = (torch.from_numpy(x) for x in (near, far, u))
    assert_same(rays.stratified(tn, tf, tu).numpy(), fast)


def coarse_pass(n, s, seed):
    rng = np.random.default_rng(seed)
    bins = np.sort(rng.uniform(0, 4, (n, s + 1)), axis=1).astype(np.float32)
    weights = (rng.random((n, s)) ** 4).astype(np.float32)
    weights[: n // 4] = 0.0  # some rays saw nothing at all
    return bins, weights


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 40), st.integers(1, 40), st.integers(0, 2**31))
def test_importance_twins_inside_and_sorted(n, s, n_new, seed):
    bins, weights = coarse_pass(n, s, seed)
    u = np.sort(np.random.default_rng(seed + 1).random((n, n_new)), axis=1)
    ref, fast = ref_and_numba("importance", bins, weights, u)
    assert_same(ref, fast, atol=1e-4)
    assert np.all(fast >= bins[:, :1] - 1e-5) and np.all(fast <= bins[:, -1:] + 1e-5)
    assert np.all(np.diff(fast, axis=1) >= -1e-5)
    tb, tw, tu = (torch.from_numpy(x) for x in (bins, weights, u))
    assert_same(rays.importance(tb, tw, tu).numpy(), fast, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 40), st.integers(1, 40), st.integers(0, 2**31))
def test_importance_twins_agree_on_unsorted_draws(n, s, n_new, seed):
    """The kernel merges sorted draws with the cdf; rows that are not sorted come back in their own order."""
    bins, weights = coarse_pass(n, s, seed)
    u = np.random.default_rng(seed + 1).random((n, n_new))
    u[::2] = np.sort(u[::2], axis=1)  # sorted and unsorted rows side by side
    ref, fast = ref_and_numba("importance", bins, weights, u)
    assert_same(ref, fast, atol=1e-4)


def test_importance_samples_concentrate_on_heavy_weights():
    bins = np.tile(np.linspace(0, 1, 65, dtype=np.float32), (200, 1))
    weights = np.full((200, 64), 1e-3, np.float32)
    weights[:, 40:44] = 1.0  # a surface between t = 0.625 and 0.6875
    u = np.random.default_rng(0).random((200, 128))
    t = rays.importance(bins, weights, u)
    share = np.mean((t >= 0.625) & (t <= 0.6875))
    assert share > 0.9  # ~4 / (4 + 60 * 1e-3) of the mass


def test_importance_of_empty_ray_is_uniform():
    bins = np.tile(np.linspace(0, 1, 9, dtype=np.float32), (1, 1))
    u = np.linspace(0, 0.999, 64)[None]
    t = rays.importance(bins, np.zeros((1, 8), np.float32), u)
    np.testing.assert_allclose(t[0], u[0], atol=1e-4)


# --- occupancy grid and marching ------------------------------------------------------------


def sphere_grid(res=32, radius=0.6):
    centres = rays.grid_cell_centres(BOX_MIN, BOX_MAX, res).reshape(res, res, res, 3)
    density = (np.linalg.norm(centres, axis=-1) < radius).astype(np.float32) * 10
    return density


def test_grid_update_twins_and_decay():
    density = sphere_grid(16)
    ema = np.zeros_like(density)
    ref, fast = ref_and_numba("grid_update", ema, density, 0.9, 0.5)
    assert_same(ref, fast)
    ema, occ = fast
    assert occ.sum() == (density > 0.5).sum()
    for _ in range(40):  # the scene empties: cells fade below the threshold
        ema, occ = rays.grid_update(ema, np.zeros_like(density), 0.9, 0.5)
    assert not occ.any()


@pytest.mark.parametrize("per_cell", [0.45, 0.11])  # samples per cell: the dense and the jumping kernel
def test_march_twins_and_empty_space(per_cell):
    occupied = sphere_grid() > 0
    o, d = random_rays(3000, seed=3)
    near, far, hit = rays.ray_aabb(o, d, BOX_MIN, BOX_MAX)
    step = per_cell * 2 / 32  # cells are 2 / 32 wide
    max_samples = int(np.ceil(2 * np.sqrt(3) / step))
    ref = rays.march_numpy(o, d, near, far, occupied, BOX_MIN, BOX_MAX, step, max_samples)
    fast = rays.march(o, d, near, far, occupied, BOX_MIN, BOX_MAX, step, max_samples)
    for x, y in zip(ref, fast, strict=True):
        np.testing.assert_array_equal(x, y)  # the skipping kernel keeps exactly the same samples
    t, offsets, counts = fast
    assert np.all(counts[~hit] == 0)
    # every kept sample lies inside the sphere's cells: none in empty space
    ray_of = np.repeat(np.arange(len(counts)), counts)
    pts = o[ray_of] + t[:, None] * d[ray_of]
    assert np.all(np.linalg.norm(pts, axis=1) < 0.6 + 2 * np.sqrt(3) / 32)
    tt = rays.march(
        *(torch.from_numpy(x) for x in (o, d, near, far, occupied)), BOX_MIN, BOX_MAX, step, max_samples
    )
    for x, y in zip(tt, fast, strict=True):
        np.testing.assert_array_equal(x.numpy(), y)


def test_march_on_an_empty_grid_yields_nothing():
    o, d = random_rays(100)
    near, far, _ = rays.ray_aabb(o, d, BOX_MIN, BOX_MAX)
    t, offsets, counts = rays.march(o, d, near, far, np.zeros((8, 8, 8), bool), BOX_MIN, BOX_MAX, 0.05, 64)
    assert t.size == 0 and counts.sum() == 0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.floats(0.05, 0.6))
@example(seed=1852, fill=0.5)  # a dense sample on a cell boundary (float32 t): either cell is right
def test_march_never_skips_an_occupied_cell(seed, fill):
    """Against dense sampling: every dense sample that lands in an occupied cell is kept, and no
    other. A sample within rounding of a cell face (the kernel marches in float64 grid units and
    returns float32 depths) may count for the cell on either side."""
    rng = np.random.default_rng(seed)
    occupied = rng.random((12, 12, 12)) < fill
    o, d = random_rays(200, seed=seed % 1000)
    near, far, _ = rays.ray_aabb(o, d, BOX_MIN, BOX_MAX)
    t, offsets, counts = rays.march(o, d, near, far, occupied, BOX_MIN, BOX_MAX, 0.02, 200)
    dense = rays.march(o, d, near, far, np.ones_like(occupied), BOX_MIN, BOX_MAX, 0.02, 200)
    ray_of = np.repeat(np.arange(len(dense[2])), dense[2])
    pts = o[ray_of].astype(np.float64) + dense[0][:, None].astype(np.float64) * d[ray_of]
    grid = (pts + 1) / 2 * 12  # grid units: cell i spans [i, i + 1)
    cell = np.clip(np.floor(grid).astype(int), 0, 11)
    expected = occupied[cell[:, 0], cell[:, 1], cell[:, 2]]
    on_a_face = (np.abs(grid - np.round(grid)) < 1e-4).any(axis=1)
    kept_keys = set(zip(np.repeat(np.arange(len(counts)), counts).tolist(), t.tolist(), strict=True))
    kept = np.array([(r, v) in kept_keys for r, v in zip(ray_of.tolist(), dense[0].tolist(), strict=True)])
    assert len(kept_keys) == len(t)  # every kept sample is one of the dense samples of its ray
    assert ((kept == expected) | on_a_face).all()
    assert on_a_face.mean() < 0.01  # the exemption stays an exception


# --- samples in per-ray boxes ---------------------------------------------------------------


def two_people_boxes(n, seed):
    """Rays toward two boxes of different shapes, each ray owned by one person, and random grids."""
    rng = np.random.default_rng(seed)
    o, d = random_rays(n, seed=seed)
    person = rng.integers(0, 2, n)
    lo = np.array([[-1.0, -0.8, -1.0], [-0.6, -1.0, -0.9]], np.float32)[person]
    hi = np.array([[1.0, 0.9, 0.7], [0.8, 1.0, 1.0]], np.float32)[person]
    occupied = rng.random((2, 10, 10, 10)) < 0.3
    return o, d, lo, hi, occupied, person, rng


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 400), st.integers(1, 20), st.integers(0, 2**31), st.booleans())
def test_box_samples_twins_keep_exactly_the_occupied_samples(n, s, seed, jitter):
    o, d, lo, hi, occupied, person, rng = two_people_boxes(n, seed % 10_000)
    u = rng.random((n, s)) if jitter else np.full((n, s), 0.5)
    results = {}
    for grid in (None, occupied):
        ref, results[grid is None] = ref_and_numba("box_samples", o, d, lo, hi, u, grid, person)
        for x, y in zip(ref, results[grid is None], strict=True):
            np.testing.assert_array_equal(x, y)  # the same float64 arithmetic, step for step
    t, unit, keep = results[False]
    near, far, hit = rays.ray_aabb_numpy(o, d, lo, hi)
    np.testing.assert_array_equal(results[True][2], np.broadcast_to(hit[:, None], t.shape))  # no grid
    inside = t[hit]  # samples of rays that hit lie in [near, far], sorted
    assert np.all(inside >= near[hit, None] - 1e-6) and np.all(inside <= far[hit, None] + 1e-6)
    assert np.all(np.diff(t, axis=1) >= 0)
    assert not keep[~hit].any()  # a ray that misses its box samples nothing
    np.testing.assert_allclose(unit, 2 * (o[:, None] + t[..., None] * d[:, None] - lo[:, None])
                               / (hi - lo)[:, None] - 1, atol=1e-5)  # fmt: skip
    # against the grid: a sample of a hitting ray is kept exactly when its person's cell is occupied
    cell = np.clip(np.floor((unit.astype(np.float64) + 1) / 2 * 10).astype(int), 0, 9)
    expected = hit[:, None] & occupied[person[:, None], cell[..., 0], cell[..., 1], cell[..., 2]]
    far_from_faces = np.all(np.abs((unit + 1) / 2 * 10 - np.round((unit + 1) / 2 * 10)) > 1e-4, -1)
    np.testing.assert_array_equal(keep[far_from_faces], expected[far_from_faces])


def test_box_samples_on_torch_tensors():
    """CPU tensors run the Numba kernel on zero-copy views; the torch twin (CUDA's path) agrees."""
    o, d, lo, hi, occupied, person, rng = two_people_boxes(3000, 7)
    u = rng.random((3000, 12)).astype(np.float32)
    args = [torch.from_numpy(x) for x in (o, d, lo, hi, u, occupied, person)]
    fast = rays.box_samples_numba(o, d, lo, hi, u, occupied, person)
    on_cpu = rays.box_samples(*args)
    assert all(isinstance(x, torch.Tensor) for x in on_cpu)
    for x, y in zip(on_cpu, fast, strict=True):
        np.testing.assert_array_equal(x.numpy(), y)
    twin = rays.box_samples_torch(*args)
    assert_same(tuple(x.numpy() for x in twin[:2]), fast[:2])
    assert (twin[2].numpy() != fast[2]).mean() < 1e-3  # float32 vs float64 at cell faces only
    assert fast[2].any() and not fast[2].all()


# --- pixel sampling -------------------------------------------------------------------------


def test_pixel_sampling_twins_and_face_weighting():
    face = np.zeros((64, 64))
    face[16:48, 16:48] = 1
    mouth = np.zeros((64, 64))
    mouth[36:44, 24:40] = 1
    w = rays.pixel_weights(face, mouth)
    u = np.random.default_rng(0).random(20000)
    ref, fast = ref_and_numba("sample_pixels", w, u)
    np.testing.assert_array_equal(ref, fast)
    np.testing.assert_array_equal(rays.sample_pixels(torch.from_numpy(w), torch.from_numpy(u)).numpy(), fast)
    hits_mouth = mouth.ravel()[fast].mean()
    expected = (mouth * w).sum() / w.sum()
    assert hits_mouth == pytest.approx(expected, abs=0.02) and hits_mouth > 4 * mouth.mean()


def test_to_torch_is_zero_copy():
    a = np.arange(6, dtype=np.float32)
    (t,) = rays.to_torch(a)
    a[0] = 42
    assert t[0].item() == 42
