"""Every Numba kernel of minitalk, in one module: the ray helpers' and the compositing's.

Each kernel computes what the plain function of the same name without `_numba`
computes (`minitalk.nerf.rays.NAME_numpy`, `minitalk.nerf.render.composite_numpy`,
...), as explicit loops: `@njit(cache=True, nogil=True)`, with `parallel=True` and
`prange` over rays where that pays. The tests run each against its reference, and
through `.py_func` as plain Python. Randomness always comes in as arrays of uniform
numbers `u`, so a kernel and its reference see the same draws.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# --- camera rays (DialogueNeRF IV-B: the camera moves by the inverse head pose) --------------


@njit(cache=True, nogil=True, parallel=True)
def camera_rays_numba(intrinsics, c2w, pixels):
    """The arithmetic runs in float32, the outputs' precision (within an ulp of the reference's
    float64), with the camera's numbers converted once, not per ray."""
    n = pixels.shape[0]
    rays_o = np.empty((n, 3), np.float32)
    rays_d = np.empty((n, 3), np.float32)
    f32 = np.float32
    inv_fx, inv_fy = f32(1.0 / intrinsics[0, 0]), f32(1.0 / intrinsics[1, 1])
    # the pixel centre: x + 0.5 - c_x = x - cx
    cx, cy = f32(intrinsics[0, 2] - 0.5), f32(intrinsics[1, 2] - 0.5)
    r = c2w[:3, :3].astype(np.float32)
    o = c2w[:3, 3].astype(np.float32)
    for i in prange(n):
        x = (pixels[i, 0] - cx) * inv_fx
        y = (pixels[i, 1] - cy) * inv_fy
        dx = r[0, 0] * x + r[0, 1] * y + r[0, 2]
        dy = r[1, 0] * x + r[1, 1] * y + r[1, 2]
        dz = r[2, 0] * x + r[2, 1] * y + r[2, 2]
        inv_norm = f32(1.0) / np.sqrt(dx * dx + dy * dy + dz * dz)
        rays_d[i, 0], rays_d[i, 1], rays_d[i, 2] = dx * inv_norm, dy * inv_norm, dz * inv_norm
        rays_o[i, 0], rays_o[i, 1], rays_o[i, 2] = o[0], o[1], o[2]
    return rays_o, rays_d


# --- ray / box intersection (the slab method) ------------------------------------------------


@njit(cache=True, nogil=True)
def _row(a, i):
    """Row i of an (N, 3) array as a float64 3-tuple."""
    return np.float64(a[i, 0]), np.float64(a[i, 1]), np.float64(a[i, 2])


@njit(cache=True, nogil=True)
def _slab(o, d, lo, hi):
    """Entry and exit distances of one ray through one box (3-tuples); far <= near is a miss."""
    near, far = 0.0, np.inf
    for a in range(3):
        if d[a] == 0.0:
            if o[a] < lo[a] or o[a] > hi[a]:
                near = np.inf  # parallel to this slab and outside it: a miss
            continue
        t0, t1 = (lo[a] - o[a]) / d[a], (hi[a] - o[a]) / d[a]
        near, far = max(near, min(t0, t1)), min(far, max(t0, t1))
    return near, far


@njit(cache=True, nogil=True, parallel=True)
def ray_aabb_numba(rays_o, rays_d, box_min, box_max):
    n = rays_o.shape[0]
    near = np.zeros(n, np.float32)
    far = np.zeros(n, np.float32)
    hit = np.zeros(n, np.bool_)
    lo = (np.float64(box_min[0]), np.float64(box_min[1]), np.float64(box_min[2]))
    hi = (np.float64(box_max[0]), np.float64(box_max[1]), np.float64(box_max[2]))
    for i in prange(n):
        t_in, t_out = _slab(_row(rays_o, i), _row(rays_d, i), lo, hi)
        if t_out > t_in:
            near[i], far[i], hit[i] = t_in, t_out, True
    return near, far, hit


# --- stratified samples (NeRF section 4) -----------------------------------------------------


@njit(cache=True, nogil=True, parallel=True)
def stratified_numba(near, far, u):
    n, s = u.shape
    t = np.empty((n, s), np.float32)
    for i in prange(n):
        span = far[i] - near[i]
        for j in range(s):
            t[i, j] = near[i] + span * ((j + u[i, j]) / s)
    return t


# --- hierarchical sampling: inverse transform of the coarse weights (NeRF section 5.2) -------


@njit(cache=True, nogil=True, inline="always")
def _inverse_cdf_step(lane, b, m):
    """One step of merging a ray's sorted `u` with its cdf: write sample m from bin b, then move
    on to the next bin if u[m] lies past this one, else to the next sample. No branch on the data
    (a walk that branches mispredicts about once per sample). Past the last sample u holds -1.0,
    which never moves the walk on, and m runs on into the rows' padding."""
    cdf, slope, intercept, u, out = lane
    x = u[m]
    out[m] = intercept[b] + x * slope[b]
    past = np.int64(cdf[b + 1] <= x)
    return b + past, m + 1 - past


@njit(cache=True, nogil=True, inline="always")
def _inverse_cdf_setup(bins_i, weights_i, u_i, cdf, slope, intercept, u_r, order):
    """One ray's scratch rows. The cdf is left unnormalised (a running sum of the weights) and u is
    scaled by its total instead: one pass fewer. In bin j the sample at x is the straight line
    intercept[j] + x slope[j] through (cdf[j], bins[j]) and (cdf[j + 1], bins[j + 1]). The cdf ends
    in twice the total where the total belongs (no u reaches it, so the walk stops in the last bin),
    u in -1.0. `order` maps sorted u back to the ray's own order, or starts with -1 when u came
    sorted."""
    nb, n_new = len(weights_i), len(u_i)
    total = 0.0
    cdf[0] = 0.0
    for j in range(nb):
        total += weights_i[j] + 1e-5
        cdf[j + 1] = total
    for j in range(nb):
        step = cdf[j + 1] - cdf[j]
        slope[j] = (bins_i[j + 1] - bins_i[j]) / (step if step >= 1e-8 * total else total)
        intercept[j] = bins_i[j] - cdf[j] * slope[j]
    cdf[nb] = 2.0 * total
    unsorted = 0
    for j in range(1, n_new):
        unsorted += u_i[j] < u_i[j - 1]
    if unsorted:  # insertion sort of the indices: short rows, and it compiles in a blink
        for j in range(n_new):
            x = u_i[j] * total
            s = j
            while s > 0 and u_r[s - 1] > x:
                u_r[s] = u_r[s - 1]
                order[s] = order[s - 1]
                s -= 1
            u_r[s] = x
            order[s] = j
    else:
        order[0] = -1  # the samples come out in u's own order
        for j in range(n_new):
            u_r[j] = u_i[j] * total


@njit(cache=True, nogil=True, parallel=True)
def importance_numba(bins, weights, u):
    # Each ray merges its sorted u with its cdf in nb + n_new steps. One merge is a chain of dependent
    # loads, so four rays walk side by side: each one's latency hides behind the other three's work.
    n, n_new = u.shape
    nb = weights.shape[1]
    out = np.empty((n, n_new), np.float32)
    if n_new == 0:
        return out
    chunk = 256
    for first in prange((n + chunk - 1) // chunk):
        cdf, slope, intercept = np.empty((4, nb + 1)), np.empty((4, nb)), np.empty((4, nb))
        # u and the output rows run on to nb + n_new: the walk's m does, past the last sample
        u_r, row = np.full((4, nb + n_new + 1), -1.0), np.empty((4, nb + n_new + 1), np.float32)
        order = np.empty((4, n_new), np.int64)
        end = min(n, (first + 1) * chunk)
        lane0 = (cdf[0], slope[0], intercept[0], u_r[0], row[0])  # views made once, not per step
        lane1 = (cdf[1], slope[1], intercept[1], u_r[1], row[1])
        lane2 = (cdf[2], slope[2], intercept[2], u_r[2], row[2])
        lane3 = (cdf[3], slope[3], intercept[3], u_r[3], row[3])
        for i0 in range(first * chunk, end, 4):
            for r in range(4):
                i = min(i0 + r, end - 1)  # a last group of fewer than four repeats its last ray
                _inverse_cdf_setup(
                    bins[i], weights[i], u[i], cdf[r], slope[r], intercept[r], u_r[r], order[r]
                )
            b0 = b1 = b2 = b3 = m0 = m1 = m2 = m3 = 0
            for _ in range(nb + n_new):
                b0, m0 = _inverse_cdf_step(lane0, b0, m0)
                b1, m1 = _inverse_cdf_step(lane1, b1, m1)
                b2, m2 = _inverse_cdf_step(lane2, b2, m2)
                b3, m3 = _inverse_cdf_step(lane3, b3, m3)
            for r in range(min(4, end - i0)):
                if order[r, 0] < 0:
                    out[i0 + r] = row[r, :n_new]
                else:
                    for j in range(n_new):
                        out[i0 + r, order[r, j]] = row[r, j]
    return out


# --- occupancy grid and empty-space skipping (Instant-NGP / ER-NeRF) -------------------------


@njit(cache=True, nogil=True, parallel=True)
def grid_update_numba(ema, density, decay=0.95, threshold=0.01):
    flat_e, flat_d = ema.ravel(), density.ravel()
    out = np.empty(flat_e.size, np.float32)
    occ = np.empty(flat_e.size, np.bool_)
    for i in prange(flat_e.size):
        out[i] = max(np.float32(decay * flat_e[i]), flat_d[i])
        occ[i] = out[i] > threshold
    return out.reshape(ema.shape), occ.reshape(ema.shape)


@njit(cache=True, nogil=True, inline="always")
def _cell_exit(g, inv_gd, cell):
    """Ray parameter where a ray in grid units (g + t gd) leaves `cell` along one axis."""
    if inv_gd > 0:
        return (cell + 1 - g) * inv_gd
    if inv_gd < 0:
        return (cell - g) * inv_gd
    return np.inf


@njit(cache=True, nogil=True)
def _march_jumping(gx, gy, gz, dx, dy, dz, near, far, occupied, res, step, max_samples, out):
    """March one ray in grid units (origin g, direction d; one cell = 1), writing kept t into `out`.

    Same sample positions and cell test as `march_numpy`; when a sample falls in
    an empty cell, jump to the first sample past that cell's exit instead of
    testing every sample inside it. `occupied` is the grid flattened x-major.
    Returns the number of samples kept.
    """
    ix = 1.0 / dx if dx != 0 else 0.0
    iy = 1.0 / dy if dy != 0 else 0.0
    iz = 1.0 / dz if dz != 0 else 0.0
    count = 0
    i = 0
    while i < max_samples:
        t = near + (i + 0.5) * step
        if t >= far:
            break
        px, py, pz = gx + t * dx, gy + t * dy, gz + t * dz
        if px < 0 or py < 0 or pz < 0 or px >= res or py >= res or pz >= res:
            i += 1
            continue
        cx, cy, cz = int(px), int(py), int(pz)  # truncation = floor for p >= 0
        if occupied[(cx * res + cy) * res + cz]:
            out[count] = t
            count += 1
            i += 1
            continue
        # an empty cell: leave it through the nearest of its faces ahead
        t_exit = min(_cell_exit(gx, ix, cx), _cell_exit(gy, iy, cy), _cell_exit(gz, iz, cz))
        i = max(i + 1, int(np.ceil((t_exit - near) / step - 0.5)))  # the first sample past it
    return count


@njit(cache=True, nogil=True)
def _march_dense(gx, gy, gz, dx, dy, dz, near, far, occupied, res, step, max_samples, out):
    """The same as `_march_jumping`, testing every sample without branches.

    When cells hold only a few samples, jumping saves little and its
    unpredictable branches cost more than they save: here every candidate is
    written and the count advances only for the kept ones.
    """
    n = min(max_samples, max(0, int(np.ceil((far - near) / step - 0.5))))  # samples with t < far
    count = 0
    for i in range(n):
        t = near + (i + 0.5) * step
        px, py, pz = gx + t * dx, gy + t * dy, gz + t * dz
        inside = (px >= 0) & (py >= 0) & (pz >= 0) & (px < res) & (py < res) & (pz < res)
        cx = min(max(int(px), 0), res - 1)
        cy = min(max(int(py), 0), res - 1)
        cz = min(max(int(pz), 0), res - 1)
        out[count] = t
        count += np.int64(inside & (occupied[(cx * res + cy) * res + cz] != 0))
    return count


@njit(cache=True, nogil=True, parallel=True)
def march_numba(rays_o, rays_d, near, far, occupied, box_min, box_max, step, max_samples):
    n = rays_o.shape[0]
    res = occupied.shape[0]
    bmin = box_min.astype(np.float64)
    scale = res / (box_max.astype(np.float64) - bmin)  # cells per metre, per axis
    # jumping over empty cells pays when a cell spans several samples (measured crossover: ~3)
    jumping = step * scale.max() < 1.0 / 3.0
    flat = occupied.ravel().astype(np.uint8)  # x-major, like grid_cell_centres
    counts = np.zeros(n, np.int64)
    chunk = 1024  # rays per task; each task marches into its own buffer, packed afterwards
    n_chunks = (n + chunk - 1) // chunk
    buffers = np.empty((n_chunks, chunk * max_samples + 1), np.float32)
    for c in prange(n_chunks):
        used = 0
        for r in range(c * chunk, min(n, (c + 1) * chunk)):
            gx = (np.float64(rays_o[r, 0]) - bmin[0]) * scale[0]  # the ray in grid units
            gy = (np.float64(rays_o[r, 1]) - bmin[1]) * scale[1]
            gz = (np.float64(rays_o[r, 2]) - bmin[2]) * scale[2]
            dx, dy, dz = rays_d[r, 0] * scale[0], rays_d[r, 1] * scale[1], rays_d[r, 2] * scale[2]
            t0, t1, out = np.float64(near[r]), np.float64(far[r]), buffers[c, used:]
            if jumping:
                counts[r] = _march_jumping(gx, gy, gz, dx, dy, dz, t0, t1, flat, res, step, max_samples, out)
            else:
                counts[r] = _march_dense(gx, gy, gz, dx, dy, dz, t0, t1, flat, res, step, max_samples, out)
            used += counts[r]
    offsets = np.zeros(n, np.int64)
    for r in range(1, n):
        offsets[r] = offsets[r - 1] + counts[r - 1]
    total = offsets[-1] + counts[-1] if n > 0 else 0
    t_all = np.empty(total, np.float32)
    for c in prange(n_chunks):
        first, last = c * chunk, min(n, (c + 1) * chunk)
        used = offsets[last - 1] + counts[last - 1] - offsets[first]
        t_all[offsets[first] : offsets[first] + used] = buffers[c, :used]
    return t_all, offsets, counts


# --- samples in each ray's own box, tested against per-person occupancy grids -----------------


@njit(cache=True, nogil=True, parallel=True)
def box_samples_numba(rays_o, rays_d, box_min, box_max, u, occupied=None, person=None):
    n, s = u.shape
    if occupied is None:
        res, grid = 1, np.ones(1, np.bool_)
    else:
        res, grid = occupied.shape[1], occupied.ravel()  # person-major, then x, y, z
    t_out = np.empty((n, s), np.float32)
    unit_out = np.empty((n, s, 3), np.float32)
    keep = np.empty((n, s), np.bool_)
    for i in prange(n):
        o, d, lo, hi = _row(rays_o, i), _row(rays_d, i), _row(box_min, i), _row(box_max, i)
        near, far = _slab(o, d, lo, hi)
        hit = far > near
        if not hit:
            near, far = 0.0, 1.0
        for j in range(s):
            t = near + (far - near) * ((j + np.float64(u[i, j])) / s)
            t_out[i, j] = t
            inside, flat = True, 0  # the sample's cell, as a flat index into the ray's grid
            for a in range(3):
                v = 2.0 * (o[a] + t * d[a] - lo[a]) / (hi[a] - lo[a]) - 1.0
                unit_out[i, j, a] = v
                cell = np.floor((v + 1.0) / 2.0 * res)
                inside = inside and cell >= 0 and cell < res
                flat = flat * res + int(min(max(cell, 0.0), res - 1.0))
            if occupied is None:
                keep[i, j] = hit
            else:
                keep[i, j] = hit and inside and grid[person[i] * res**3 + flat]
    return t_out, unit_out, keep


# --- pixel sampling for training batches -----------------------------------------------------


@njit(cache=True, nogil=True, parallel=True)
def sample_pixels_numba(weights, u):
    flat = weights.ravel()
    cdf = np.empty(flat.size)
    acc = 0.0
    for i in range(flat.size):
        acc += flat[i]
        cdf[i] = acc
    for i in range(flat.size):
        cdf[i] /= acc
    out = np.empty(u.size, np.int64)
    for m in prange(u.size):
        lo, hi = 0, flat.size
        while lo < hi:
            mid = (lo + hi) // 2
            if cdf[mid] <= u[m]:
                lo = mid + 1
            else:
                hi = mid
        out[m] = min(lo, flat.size - 1)
    return out


# --- padded samples (N_rays, N_samples) ------------------------------------------------------


# The Numba twins composite one ray at a time in three passes over a scratch row: the optical
# depth's running sum, the transmittance T_0..T_S from it, and then the weights by telescoping,
# w_i = T_i alpha_i = T_i - T_{i+1}, so that the opacity is 1 - T_S and the background's share T_S.
# The middle pass is the costly one: one exp per sample. llvmlite's wheels are built without
# Intel's SVML, so np.exp stays one scalar libm call per sample that LLVM cannot vectorise;
# `_exp_neg` is the textbook range reduction and polynomial written out, which it can
# (docs/results.md, "Compositing: a vectorisable exp").

LOG2_E = np.float32(1.4426950408889634)
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 in two parts (Cody-Waite)
F32 = np.float32


@njit(cache=True, nogil=True, inline="always")
def _exp_neg(depth, out, bits):
    """out[j] = exp(-depth[j]) in float32 (relative error under 3e-7) for depth in [-87, 87].

    exp(x) = 2^e exp(r) with e = round(x / ln 2) and |r| <= ln 2 / 2, where the degree-6 Taylor
    polynomial is within float32 rounding of exp(r). 2^e is built as a float's bits (exponent field
    e + 127) in an int32 row, `bits`, read back through its float32 view."""
    scale = bits.view(np.float32)
    for j in range(len(depth)):
        x = -min(max(depth[j], F32(-87.0)), F32(87.0))
        e = np.floor(x * LOG2_E + F32(0.5))
        r = x - e * LN2_HI - e * LN2_LO
        poly = F32(1 / 120) + r * F32(1 / 720)  # Horner's rule, from r^6 / 6! down to 1
        for c in (F32(1 / 24), F32(1 / 6), F32(0.5), F32(1.0), F32(1.0)):
            poly = c + r * poly
        out[j] = poly
        bits[j] = (np.int32(e) + 127) << 23
    for j in range(len(depth)):
        out[j] *= scale[j]


@njit(cache=True, nogil=True, inline="always")
def _composite_ray(sigma, rgb, dt, background, depth, trans, bits, colour, weights):
    """One ray's samples (S,): writes colour (3,) and weights (S,), returns the opacity. depth,
    trans and bits are scratch rows of at least S + 1."""
    s = len(sigma)
    acc = F32(0.0)
    depth[0] = acc
    for j in range(s):
        acc += sigma[j] * dt[j]
        depth[j + 1] = acc
    _exp_neg(depth[: s + 1], trans, bits)
    r, g, b = F32(0.0), F32(0.0), F32(0.0)
    for j in range(s):
        w = trans[j] - trans[j + 1]
        weights[j] = w
        r += w * rgb[j, 0]
        g += w * rgb[j, 1]
        b += w * rgb[j, 2]
    colour[0] = r + trans[s] * background[0]
    colour[1] = g + trans[s] * background[1]
    colour[2] = b + trans[s] * background[2]
    return F32(1.0) - trans[s]


@njit(cache=True, nogil=True, parallel=True)
def composite_numba(sigma, rgb, dt, background):
    n, s = sigma.shape
    colour = np.empty((n, 3), np.float32)
    opacity = np.empty(n, np.float32)
    weights = np.empty((n, s), np.float32)
    chunk = 512  # rays per task: the scratch rows are allocated once per chunk
    for c in prange((n + chunk - 1) // chunk):
        depth, trans = np.empty(s + 1, np.float32), np.empty(s + 1, np.float32)
        bits = np.empty(s + 1, np.int32)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            opacity[i] = _composite_ray(
                sigma[i], rgb[i], dt[i], background[i], depth, trans, bits, colour[i], weights[i]
            )
    return colour, opacity, weights


# --- packed samples --------------------------------------------------------------------------


@njit(cache=True, nogil=True, parallel=True)
def composite_packed_numba(sigma, rgb, dt, offsets, counts, background):
    n = counts.shape[0]
    colour = np.empty((n, 3), np.float32)
    opacity = np.empty(n, np.float32)
    weights = np.empty(sigma.shape[0], np.float32)
    longest = counts.max() if n else 0
    chunk = 512
    for c in prange((n + chunk - 1) // chunk):
        depth, trans = np.empty(longest + 1, np.float32), np.empty(longest + 1, np.float32)
        bits = np.empty(longest + 1, np.int32)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            ray = slice(offsets[i], offsets[i] + counts[i])
            opacity[i] = _composite_ray(
                sigma[ray], rgb[ray], dt[ray], background[i], depth, trans, bits, colour[i], weights[ray]
            )
    return colour, opacity, weights
