"""Volume rendering: compositing (DialogueNeRF Eq. 4-5; NeRF Eq. 3) and the renderer.

For samples i = 1..S along a ray with densities sigma_i, colours c_i and lengths delta_i,

    alpha_i = 1 - exp(-sigma_i delta_i)
    T_i     = exp(-sum_{j<i} sigma_j delta_j)          (transmittance)
    w_i     = T_i alpha_i                               (weights: >= 0, sum <= 1)
    C       = sum_i w_i c_i + (1 - sum_i w_i) c_bg      (the background is the last sample)

DialogueNeRF IV-B composites head and torso samples of the same pixel ray together, in depth
order, with the background plate behind them (`depth_order`, `in_depth_order`); ER-NeRF's 2D
torso (3.4) is instead a layer over the plate, behind every head sample (`under_head`). Compositing
comes in two layouts, padded (N_rays, N_samples) and packed (ray r owning a run of samples, as
occupancy-grid marching produces), torch (differentiable, any device) beside NumPy and Numba
twins. The renderer takes the fields as callables (nerfacc's style): it samples each field's box,
asks the fields only about samples in occupied cells, and composites, differentiably for
training or front to back with early ray termination for whole frames (`render_frame`).
"""

from __future__ import annotations

import numpy as np
import torch

from minitalk.nerf.kernels import composite_numba, composite_packed_numba  # noqa: F401  (beside their references)
from minitalk.nerf.rays import box_samples
from minitalk.utils import keep_freed_memory

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


# --- the renderer: fields as callables (nerfacc's volrend style) ------------------------------
#
# A field is a callable `field(unit (M, 3), ray_of (M,), rows=None, colour=True) -> (sigma (M,),
# rgb (M, 3) or None)` over points in its unit box (`DialogueNeRF.fields` binds the per-ray
# inputs). The renderer draws samples in each field's box, asks the fields only about samples in
# occupied cells, merges head and torso samples of a ray in depth order and composites them in
# front of the background (DialogueNeRF IV-B). It never imports a model.


def sample_fields(boxes: dict, person: torch.Tensor, jitter: bool = True) -> dict:
    """Stratified samples in each field's box (`DialogueNeRF.sample_boxes`), per field:
    t (N, S) along the ray, unit (N * S, 3) the points in the unit box, and keep (N * S,), True
    for samples in the box and, with occupancy grids, in an occupied cell."""
    out = {}
    for name, (o, d, lo, hi, count, occupied) in boxes.items():
        n = len(d)
        u = torch.rand(n, count, device=d.device) if jitter else torch.full((n, count), 0.5, device=d.device)
        t, unit, keep = box_samples(o, d, lo, hi, u, occupied, person)
        if o.requires_grad:  # the points again, differentiably in the camera (the sampler is not)
            unit = 2 * (o[:, None] + t[..., None] * d[:, None] - lo[:, None]) / (hi - lo)[:, None] - 1
        out[name] = (t, unit.reshape(-1, 3), keep.reshape(-1))
    return out


def no_samples(n: int, device) -> tuple:
    """`sample_fields`' entry for a field with no samples on n rays: t (N, 0), unit (0, 3), keep (0,).
    It stands for the 3D torso when the torso is a 2D layer (`DialogueNeRF.torso_layer`)."""
    return (
        torch.zeros(n, 0, device=device),
        torch.zeros(0, 3, device=device),
        torch.zeros(0, dtype=torch.bool, device=device),
    )


def under_head(background: torch.Tensor, torso_layer: tuple | None) -> torch.Tensor:
    """What the head's samples are composited over: the background (N, C), with a 2D torso layer
    (colour (N, C), alpha (N,)) laid on it first, alpha c + (1 - alpha) c_bg (ER-NeRF 3.4)."""
    if torso_layer is None:
        return background
    colour, alpha = torso_layer
    return alpha[:, None] * colour + (1 - alpha[:, None]) * background


def with_torso_layer(opacity: torch.Tensor, torso_layer: tuple | None) -> torch.Tensor:
    """The person's opacity (N,): the volume-rendered one, and a 2D torso layer's alpha under it,
    1 - (1 - A) (1 - alpha)."""
    return opacity if torso_layer is None else 1 - (1 - opacity) * (1 - torso_layer[1])


def _evaluate(field, unit, ray_of, channels: int, rows=None, colour: bool = True):
    """A field at the kept points; nothing to evaluate when every sample was skipped."""
    if len(unit) == 0:
        return unit.new_zeros(0), unit.new_zeros(0, channels) if colour else None
    return field(unit, ray_of, rows, colour=colour)


def visible_samples(t, order, t_head, sigma_head, sigma_torso, keep_head, keep_torso, min_transmittance):
    """Which kept samples along each ray can still show: those whose transmittance through head and
    torso merged in depth order (the composite) is at least `min_transmittance`, and head samples
    whose transmittance through the head alone is (the head's silhouette term sees the head alone,
    with its own sample lengths, which are longer than the merged ones: neither bound holds the other).

    t_head, sigma_head (N, A), sigma_torso (N, B); t, order (N, A + B) from `depth_order`;
    keep_* flat (N * A,) and (N * B,). Instant-NGP trains this way: one pass of densities without
    gradients finds where each ray turns opaque, and only the samples in front of that go through
    the network again, with gradients. A sample behind adds at most its transmittance to the
    colour and the opacities, and about as little to any gradient.
    """
    a = t_head.shape[1]
    sigma = in_depth_order(order, sigma_head, sigma_torso)
    merged = transmittance(sigma * deltas(t))
    shows = torch.empty_like(merged).scatter_(1, order, merged) >= min_transmittance
    head_alone = transmittance(sigma_head * deltas(t_head))
    head_shows = shows[:, :a] | (head_alone >= min_transmittance)
    torso_shows = shows[:, a:]
    return keep_head & head_shows.reshape(-1), keep_torso & torso_shows.reshape(-1)


def composite_fields(samples: dict, fields: dict, background: torch.Tensor, parts: bool = False,
                     min_transmittance: float = 0.0, torso_layer: tuple | None = None) -> dict:  # fmt: skip
    """Composite head, torso and background for a batch of rays (differentiable).

    `samples` from `sample_fields`, `fields` the callables, background (N, C) with C the fields'
    channels (3, or the neural renderer's features, `DialogueNeRF.background_features`); a 2D torso
    comes as `torso_layer` (`DialogueNeRF.torso_layer`) instead of samples. Only the kept samples
    go through the fields; the rest have zero density. Returns colour, opacity (of head and torso
    together), head_opacity, depth and the number of samples evaluated (and a 2D torso's alpha,
    "torso_alpha"), with `parts` also the head-only and torso-only colours. With
    `min_transmittance` > 0, samples hidden behind what lies in front of them are left out
    (`visible_samples`).
    """
    n, channels = len(samples["head"][0]), background.shape[-1]
    (t_h, unit_h, keep_h), (t_t, unit_t, keep_t) = (
        samples["head"],
        samples.get("torso", no_samples(n, background.device)),
    )
    behind = under_head(background, torso_layer)

    def evaluate(field, t, unit, keep, colour=True):
        """The field at the kept samples; zero density (and colour) at the others, (N, S)."""
        count = t.shape[1]
        index = torch.nonzero(keep)[:, 0]
        ray_of = torch.div(index, count, rounding_mode="floor")
        sigma, rgb = _evaluate(field, unit.index_select(0, index), ray_of, channels, colour=colour)
        full_sigma = t.new_zeros(n * count).index_copy(0, index, sigma).reshape(n, count)
        if not colour:
            return full_sigma, None
        full_rgb = t.new_zeros(n * count, channels).index_copy(0, index, rgb)
        return full_sigma, full_rgb.reshape(n, count, channels)

    t, order = depth_order(t_h, t_t)  # head and torso samples along each ray, merged
    if min_transmittance > 0:  # densities alone: where does each ray turn opaque?
        with torch.no_grad():
            sigma_h = evaluate(fields["head"], t_h, unit_h, keep_h, colour=False)[0]
            sigma_t = evaluate(fields.get("torso"), t_t, unit_t, keep_t, colour=False)[0]
        keep_h, keep_t = visible_samples(t, order, t_h, sigma_h, sigma_t, keep_h, keep_t, min_transmittance)
    sigma_h, rgb_h = evaluate(fields["head"], t_h, unit_h, keep_h)
    sigma_t, rgb_t = evaluate(fields.get("torso"), t_t, unit_t, keep_t)
    sigma = in_depth_order(order, sigma_h, sigma_t)
    rgb = in_depth_order(order, rgb_h, rgb_t)
    colour, opacity, depth, _ = composite(sigma, rgb, t, background=behind)
    out = {
        "colour": colour,
        "opacity": with_torso_layer(opacity, torso_layer),
        "head_opacity": 1.0 - torch.exp(-(sigma_h * deltas(t_h)).sum(dim=1)),
        "depth": depth,
        "samples": int(keep_h.sum() + keep_t.sum()),
    }
    if torso_layer is not None:
        out["torso_alpha"] = torso_layer[1]
    if parts:
        out["head"] = composite(sigma_h, rgb_h, t_h, background=background)[0]
        out["torso"] = composite(sigma_t, rgb_t, t_t, background=behind)[0]
    return out


@torch.no_grad()
def composite_front_to_back(
    samples: dict, fields: dict, background: torch.Tensor, slab: int = 8, min_transmittance: float = 1e-3,
    torso_layer: tuple | None = None,
) -> dict:  # fmt: skip
    """`composite_fields`' colour (unjittered samples), front to back with early ray termination.

    The merged head and torso samples are evaluated `slab` depths at a time, and a ray whose
    transmittance has fallen below `min_transmittance` takes no further samples (Instant-NGP's
    inference marching): behind an opaque face nothing can show. The colour differs from
    `composite_fields` by at most `min_transmittance` (0 gives the same samples exactly).
    Returns colour, opacity and the number of samples evaluated.
    """
    (n, s_h), channels = samples["head"][0].shape, background.shape[-1]
    (t_h, unit_h, keep_h), (t_t, unit_t, keep_t) = (
        samples["head"],
        samples.get("torso", no_samples(n, background.device)),
    )
    t, order = depth_order(t_h, t_t)  # (N, S): merged depth order
    keep = in_depth_order(order, keep_h.reshape(n, -1), keep_t.reshape(n, -1))
    dt = deltas(t)
    units = torch.cat([unit_h.reshape(n, s_h, 3), unit_t.reshape(n, -1, 3)], dim=1).reshape(-1, 3)
    units_per_ray = t.shape[1]
    colour = torch.zeros(n, channels, device=t.device)
    trans = torch.ones(n, device=t.device)
    evaluated = 0
    for j in range(0, t.shape[1], slab):
        width = min(slab, t.shape[1] - j)
        live = keep[:, j : j + width] & (trans > min_transmittance)[:, None]
        flat = torch.nonzero(live.reshape(-1))[:, 0]  # the slab's samples still to evaluate
        ray = torch.div(flat, width, rounding_mode="floor")
        which = order[:, j : j + width].reshape(-1).index_select(0, flat)  # into [head | torso] samples
        is_head = which < s_h
        sigma = torch.zeros(len(flat), device=t.device)
        rgb = torch.zeros(len(flat), channels, device=t.device)
        for mask, field in ((is_head, fields["head"]), (~is_head, fields.get("torso"))):
            mine = torch.nonzero(mask)[:, 0]
            if len(mine):  # per-ray inputs of the rays that still sample, not of all N
                r = ray.index_select(0, mine)
                rows, ray_of = torch.unique_consecutive(r, return_inverse=True)
                points = units.index_select(0, r * units_per_ray + which.index_select(0, mine))
                s, c = field(points, ray_of, rows)
                sigma.index_copy_(0, mine, s)
                rgb.index_copy_(0, mine, c)
        evaluated += len(flat)
        slab_sigma = t.new_zeros(n * width).index_copy_(0, flat, sigma).reshape(n, width)
        slab_rgb = t.new_zeros(n * width, channels).index_copy_(0, flat, rgb).reshape(n, width, channels)
        cols = slice(j, j + width)  # the slab composited alone, then seen through what lies in front
        slab_colour, slab_opacity, _, _ = composite(slab_sigma, slab_rgb, t[:, cols], dt[:, cols])
        colour += trans[:, None] * slab_colour
        trans = trans * (1.0 - slab_opacity)
    colour += trans[:, None] * under_head(background, torso_layer)
    return {"colour": colour, "opacity": with_torso_layer(1.0 - trans, torso_layer), "samples": evaluated}


def render_rays(model, rays: dict, face_state: torch.Tensor, jitter: bool = True, parts: bool = False,
                min_transmittance: float = 0.0) -> dict:  # fmt: skip
    """A DialogueNeRF's picture of a batch of rays (`Frames.rays` gives `rays`; `face_state`
    (N, K + 1) from `DialogueNeRF.face_state`): the camera corrected, samples drawn, composited."""
    rays = model.corrected_rays(rays)
    samples = sample_fields(model.sample_boxes(rays), rays["person"], jitter)
    background = model.background_features(rays["background"])
    fields = model.fields(rays, face_state)
    return composite_fields(samples, fields, background, parts, min_transmittance, model.torso_layer(rays))


@torch.no_grad()
def render_rays_front_to_back(model, rays: dict, face_state: torch.Tensor, slab: int = 8,
                              min_transmittance: float = 1e-3) -> dict:  # fmt: skip
    """`render_rays(jitter=False)`'s colour by `composite_front_to_back`, for whole frames."""
    rays = model.corrected_rays(rays)
    samples = sample_fields(model.sample_boxes(rays), rays["person"], jitter=False)
    fields = model.fields(rays, face_state)
    background = model.background_features(rays["background"])
    return composite_front_to_back(
        samples, fields, background, slab, min_transmittance, model.torso_layer(rays)
    )


# --- whole frames of a trained model ------------------------------------------------------------


def rendered_size(model, trained: int, size: int) -> int:
    """The size the fields and the CNN render for an image of `size` px, `trained` the cameras' own.
    Per-pixel rendering renders any size (more rays, same field), and so does the 2D neural
    renderer above `trained` (a finer feature map through the same CNN: each 2x2 block of a 512 px
    render averages to the 256 px one, notebook 05). Below it the CNN would see a feature map
    coarser than any it learned from and make a broken face (docs/results.md, 2026-12-06), so a
    smaller image is the `trained` render, area-averaged down."""
    return trained if model.config.upsample > 1 and size < trained else size


@torch.no_grad()
def render_images(model, cameras, person, frame, device, face_state=None, size: int | None = None,
                  chunk: int = 16384, parts: bool = False) -> dict | np.ndarray:  # fmt: skip
    """Whole images of B (person, frame) pairs in one batch of rays, (B, S, S, 3) in 0..1 (with
    `parts` a dict that also holds the head-only and torso-only images).

    person, frame (B,); `face_state` (B, K + 1) replaces the frames' own (`DialogueNeRF.face_state`;
    `cameras` must then be `Frames`): to render with other audio or an edited expression. `size`
    renders the same view at another resolution than the cameras' own (`Cameras.rays`). Rays of
    all B images go through the fields together, `chunk` at a time, front to back with early ray
    termination (`render_rays_front_to_back`) unless `parts` are asked for. With the 2D neural
    renderer (`DialogueNeRFConfig.upsample` u > 1) the fields render an (S / u)-pixel feature map
    and `DialogueNeRF.upsampler` turns it into the S-pixel image; `parts` are then the feature
    map's colour channels, bilinearly enlarged (the CNN sees only the whole composite), and the
    dict also holds the CNN's inputs: "features" (B, S / u, S / u, F) and "opacity" (B, S / u, S / u, 1).
    A neural renderer asked for less than the cameras' size renders that size and averages it down
    (`rendered_size`); its "features" and "opacity" are then the ones of that render.
    """
    keep_freed_memory()
    size = size or cameras.size
    u = model.config.upsample
    native = rendered_size(model, cameras.size, size)
    if native % u:
        raise ValueError(f"size {size}: not a multiple of the neural renderer's factor {u}")
    if native != size:
        out = render_images(model, cameras, person, frame, device, face_state, native, chunk, parts)
        images = out if parts else {"colour": out}
        for k in ("colour", "head", "torso") if parts else ("colour",):  # (B, S, S, 3) -> (B, size, size, 3)
            image = torch.from_numpy(images[k]).permute(0, 3, 1, 2)
            image = torch.nn.functional.interpolate(image, size=(size, size), mode="area")
            images[k] = image.permute(0, 2, 3, 1).numpy()
        return images if parts else images["colour"]
    low = size // u
    person, frame = torch.as_tensor(person).long().reshape(-1), torch.as_tensor(frame).long().reshape(-1)
    b, n = len(person), low * low
    if face_state is None:
        face_state = model.face_state(*(x.to(device) for x in cameras.face_state_inputs(person, frame)))
    ray_person, ray_frame = person.repeat_interleave(n), frame.repeat_interleave(n)
    pixel = torch.arange(n).repeat(b)
    states = face_state.to(device).repeat_interleave(n, dim=0)  # (B n, K + 1)
    keys = ("colour", "opacity", "head", "torso") if parts else ("colour", "opacity")
    out = {k: [] for k in keys}
    for i in range(0, b * n, chunk):
        part = slice(i, i + chunk)
        rays = cameras.rays(ray_person[part], ray_frame[part], pixel[part], low)
        rays = {k: v.to(device) for k, v in rays.items()}
        if parts:
            res = render_rays(model, rays, states[part], jitter=False, parts=True)
        else:
            res = render_rays_front_to_back(model, rays, states[part])
        for k in keys:
            out[k].append(res[k])
    # (B, C, s, s)
    maps = {k: torch.cat(v).reshape(b, low, low, -1).permute(0, 3, 1, 2) for k, v in out.items()}
    if u == 1:
        images = {k: v for k, v in maps.items() if k != "opacity"}
    else:
        plates = [cameras.plates(s)[person].reshape(b, s, s, 3).permute(0, 3, 1, 2).to(device)
                  for s in (size, low)]  # fmt: skip
        images = {"colour": model.upsampler(maps["colour"], maps["opacity"], *plates)}
        for k in ("head", "torso") if parts else ():
            images[k] = torch.nn.functional.interpolate(maps[k][:, :3], size=(size, size), mode="bilinear")
        if parts:  # the CNN's inputs: (B, s, s, F) and (B, s, s, 1)
            images["features"], images["opacity"] = maps["colour"], maps["opacity"]
    images = {k: v.permute(0, 2, 3, 1) for k, v in images.items()}  # (B, S, S, C)
    images = {k: (v if k in ("features", "opacity") else v.clamp(0, 1)).cpu().numpy()
              for k, v in images.items()}  # fmt: skip
    return images if parts else images["colour"]


@torch.no_grad()
def render_frame(model, frames, person: int, frame: int, device, chunk: int = 16384,
                 parts: bool = False, face_state=None, size: int | None = None):  # fmt: skip
    """One whole (S, S, 3) image (with `parts` a dict that also holds the head-only and torso-only
    images): `render_images` of a single (person, frame); `face_state` (1, K + 1)."""
    out = render_images(model, frames, [person], [frame], device, face_state, size, chunk, parts)
    return {k: v[0] for k, v in out.items()} if parts else out[0]
