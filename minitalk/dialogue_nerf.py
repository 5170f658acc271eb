"""DialogueNeRF: one conditional radiance field for every person of a conversation (IV-B, Eq. 6-7).

    F_theta: (gamma(x), gamma(d), f_s, f_p,s, z_s,s, z_a,s) -> (c_s, sigma_s)     speaker, Eq. 6
    F_theta: (gamma(x), gamma(d), f_l, f_p,l, z_s,l, z_a,l) -> (c_l, sigma_l)     listener, Eq. 7

* The head pose f_p places the camera: rays are cast in the head's canonical
  frame (`minitalk.camera.camera_to_head`), so the field itself never moves.
* Each person p owns a shape code z_s[p], which joins the position encoding
  and so shapes density and colour, and an appearance code z_a[p], which joins
  the direction encoding and affects colour only (GRAF-style).
* The condition differs by role. `condition` gives each frame a face state:
  Eq. 1 expression coefficients plus blink, for a speaker predicted from the
  mel windows by `AudioEncoder` (smoothed over neighbouring frames with
  learned attention weights, as AD-NeRF does), for a listener the tracked
  ones. `feature` encodes a state into the condition feature (f_s for a
  speaker, f_l for a listener). `audio_loss` ties the audio to the mouth: L2
  on the predicted coefficients and InfoNCE alignment. ER-NeRF's region
  attention (section 3.2), a per-position channel weighting of the
  condition, is an option.
* Expression planes (an option, on by default): a tri-plane basis of feature
  offsets, one per coefficient, added as sum_k e_k B_k(x) to the head's
  position features; Eq. 1's linear expression model, moved into feature
  space, so that mouths are learned at the speed grids learn.
* The torso is a second field, in camera coordinates, conditioned on gamma(et)
  (the head's Euler angles and translation; by default also their causal
  moving average over the last half second, since a body follows its head
  with a lag and the current head pose alone cannot say where it is), with a
  deformation field
  x -> x' = x + D(gamma(x), gamma(et)) (Nerfies-style) so it can follow the
  head without tearing. Head and torso samples of the same pixel ray are
  composited together, with the background plate as the last sample
  (`minitalk.render`).
* The camera of a tracked frame is corrected (`corrected_rays`): the face
  tracker's pose error follows the expression (an open mouth reads as too
  little nod), so a per-person linear map from the tracked expression and
  blink to a pose offset is learned through the camera, from zero.
* Positions are encoded by tri-plane grids (the default) or by the sinusoidal
  Eq. 2 (`minitalk.encoding`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from minitalk import render
from minitalk.camera import head_rays_torch
from minitalk.encoding import TriPlane, make_encoder, positional_encoding
from minitalk.rays import box_samples
from minitalk.utils import SettingError


@dataclass(frozen=True)
class DialogueNeRFConfig:
    encoding: str = "grid"  # "grid" (tri-planes) or "frequency" (Eq. 2)
    levels: int = 4  # tri-plane pyramid
    features: int = 4
    min_res: int = 16
    max_res: int = 128
    pos_freqs: int = 8  # sinusoidal encoding
    width: int = 64  # MLP width
    depth: int = 1  # hidden layers of the head's trunk before the condition joins (AD-NeRF: 8)
    code_dim: int = 16  # z_s and z_a
    cond_dim: int = 32  # audio / expression feature
    n_expression: int = 16
    smooth_frames: int = 8  # audio windows weighed together per frame
    region_attention: bool = True
    expression_planes: int = 1  # features per expression coefficient in the head's expression planes; 0: none
    expression_res: int = 64
    deformation: bool = True
    torso_lag_s: float = 0.5  # the torso also sees the head's pose smoothed over the past this long; 0: not
    head_samples: int = 32
    torso_samples: int = 16
    grid_res: int = 48  # occupancy grid cells per side
    skipping: bool = True  # empty-space skipping with the occupancy grids
    n_people: int = 2
    camera_correction: bool = True  # a per-person pose correction learned from the tracked expression

    def __post_init__(self):
        if self.torso_lag_s < 0:
            raise SettingError("torso_lag_s", "0 or more seconds", self.torso_lag_s)
        if self.encoding not in ("grid", "frequency"):
            raise SettingError("encoding", "'grid' or 'frequency'", repr(self.encoding))

    def to_dict(self) -> dict:
        return asdict(self)


class RayConditioned(nn.Module):
    """Linear([point features, ray features]) computed as W_p p + (W_r r)[ray of p] + b: the
    per-ray part (latent code, condition, pose) once per ray instead of once per sample.

    Rows are gathered with `index_select` here and in the fields below: on a CPU it is several
    times faster than `x[index]` (3.4x for 131k rows of 64 floats), and its backward pass sums
    in a fixed order, so training runs repeat bit for bit (`x[index]`'s does not)."""

    def __init__(self, d_point: int, d_ray: int, width: int):
        super().__init__()
        self.point = nn.Linear(d_point, width)
        self.ray = nn.Linear(d_ray, width, bias=False)

    def forward(self, point: torch.Tensor, ray: torch.Tensor, ray_of: torch.Tensor) -> torch.Tensor:
        """point (M, d_point), ray (N, d_ray), ray_of (M,) the ray of each point -> (M, width)."""
        per_ray = self.ray(ray) + self.point.bias
        return torch.addmm(per_ray.index_select(0, ray_of), point, self.point.weight.T)


class Occupancy(nn.Module):
    """Per-person occupancy grids over a unit cube: where a field has density worth sampling.

    Instant-NGP / ER-NeRF empty-space skipping: every `update` folds the field's
    density at jittered cell centres into a decaying maximum (`minitalk.rays.grid_update`);
    samples in cells below the threshold (`minitalk.rays.box_samples` tests them) are never sent
    through the network.
    """

    # densities per metre: below 3 a head sample (about 7 mm long) is under 2% opaque, and leaving such
    # cells out moved held-out PSNR by under 0.04 dB while saving a seventh of the rendered samples
    def __init__(self, n_people: int, res: int = 48, threshold: float = 3.0):
        super().__init__()
        self.res, self.threshold = res, threshold
        # no evidence yet, so every cell counts as occupied until the first update replaces the zeros
        self.register_buffer("density", torch.zeros((n_people, res, res, res)))
        self.register_buffer("occupied", torch.ones((n_people, res, res, res), dtype=torch.bool))

    @torch.no_grad()
    def update(self, density_fn, decay: float = 0.9, chunk: int = 65536) -> None:
        """density_fn(unit points (M, 3), person int) -> sigma (M,); refresh every person's grid."""
        from minitalk.rays_torch import grid_update_torch

        r = self.res
        idx = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
        for p in range(self.density.shape[0]):
            centres = (idx + torch.rand(idx.shape)) / r * 2 - 1  # jittered within each cell
            centres = centres.to(self.density.device)
            sigma = torch.cat([density_fn(centres[i : i + chunk], p) for i in range(0, len(centres), chunk)])
            self.density[p], self.occupied[p] = grid_update_torch(
                self.density[p], sigma.reshape(r, r, r), decay, self.threshold
            )


def mlp(d_in: int, width: int, d_out: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else width, width), nn.ReLU()]
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)


class AudioEncoder(nn.Module):
    """Mel windows (B, W, 16, 80) of W neighbouring frames -> one smoothed feature (B, cond_dim).

    AD-NeRF's attention smoothing weighs the W per-window features by a softmax over a small
    convolution of them. That weighting sees only the windows' content, not which of them is the
    frame's own, so it averages the mouth over neighbouring frames; a learned bias per window
    position (zero at first) lets it keep to the frame itself where the mouth moves fast.
    """

    def __init__(self, cond_dim: int, n_mels: int = 80, windows: int = 8):
        super().__init__()
        self.frame = nn.Sequential(  # over the 16 mel steps, mel bands as channels
            nn.Conv1d(n_mels, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(64, cond_dim, 4), nn.Flatten(),
        )  # fmt: skip
        self.attention = nn.Sequential(
            nn.Conv1d(cond_dim, 8, 3, padding=1), nn.LeakyReLU(0.02), nn.Conv1d(8, 1, 1)
        )
        self.position = nn.Parameter(torch.zeros(windows))  # attention logit per window offset

    def per_frame(self, mel: torch.Tensor) -> torch.Tensor:
        """(..., 16, 80) -> (..., cond_dim), one window at a time."""
        lead = mel.shape[:-2]
        x = mel.reshape(-1, *mel.shape[-2:]).transpose(1, 2)  # (N, 80, 16)
        return self.frame(x).reshape(*lead, -1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        feats = self.per_frame(mel)  # (B, W, C)
        logits = self.attention(feats.transpose(1, 2))[:, 0] + self.position  # (B, W)
        weights = torch.softmax(logits, dim=1)
        return (weights[..., None] * feats).sum(dim=1)


def visible_samples(t, order, t_head, sigma_head, sigma_torso, keep_head, keep_torso, min_transmittance):
    """Which kept samples along each ray can still show: those whose transmittance through head and
    torso merged in depth order (the composite) is at least `min_transmittance`, and head samples
    whose transmittance through the head alone is (the head's silhouette term sees the head alone,
    with its own sample lengths, which are longer than the merged ones: neither bound holds the other).

    t_head, sigma_head (N, A), sigma_torso (N, B); t, order (N, A + B) from `render.depth_order`;
    keep_* flat (N * A,) and (N * B,). Instant-NGP trains this way: one pass of densities without
    gradients finds where each ray turns opaque, and only the samples in front of that go through
    the network again, with gradients. A sample behind adds at most its transmittance to the
    colour and the opacities, and about as little to any gradient.
    """
    a = t_head.shape[1]
    sigma = render.in_depth_order(order, sigma_head, sigma_torso)
    merged = render.transmittance(sigma * render.deltas(t))
    shows = torch.empty_like(merged).scatter_(1, order, merged) >= min_transmittance
    head_alone = render.transmittance(sigma_head * render.deltas(t_head))
    head_shows = shows[:, :a] | (head_alone >= min_transmittance)
    torso_shows = shows[:, a:]
    return keep_head & head_shows.reshape(-1), keep_torso & torso_shows.reshape(-1)


class DialogueNeRF(nn.Module):
    """Head and torso fields for every person; `render_rays` composites them over the background."""

    def __init__(self, config: DialogueNeRFConfig, head_box, torso_boxes):
        super().__init__()
        self.config = c = config
        self.register_buffer("head_box", torch.as_tensor(head_box, dtype=torch.float32))  # (2, 3)
        self.register_buffer("torso_boxes", torch.as_tensor(torso_boxes, dtype=torch.float32))  # (P, 2, 3)
        enc_kw = (
            {"levels": c.levels, "features": c.features, "min_res": c.min_res, "max_res": c.max_res}
            if c.encoding == "grid"
            else {"n_freqs": c.pos_freqs}
        )
        self.z_shape = nn.Parameter(0.01 * torch.randn(c.n_people, c.code_dim))
        self.z_app = nn.Parameter(0.01 * torch.randn(c.n_people, c.code_dim))
        # conditions
        self.audio = AudioEncoder(c.cond_dim, windows=c.smooth_frames)
        self.audio_to_expression = nn.Linear(c.cond_dim, c.n_expression)
        self.expression = mlp(c.n_expression, c.cond_dim, c.cond_dim, layers=1)
        # head field
        self.head_enc = make_encoder(c.encoding, **enc_kw)
        self.expression_planes = None
        if c.expression_planes:  # a basis of feature offsets, one per coefficient (and blink), zero at first
            k = c.n_expression + 1
            self.expression_planes = TriPlane(1, k * c.expression_planes, c.expression_res, c.expression_res)
            for grid in self.expression_planes.grids:
                nn.init.zeros_(grid)
        d_feats = self.head_enc.out_dim + 3 * c.expression_planes
        self.head_in = RayConditioned(d_feats, c.code_dim, c.width)  # with z_s
        self.head_trunk = nn.Sequential(
            *[m for _ in range(c.depth - 1) for m in (nn.Linear(c.width, c.width), nn.ReLU())]
        )
        self.attention = nn.Linear(d_feats, c.cond_dim + 1) if c.region_attention else None
        self.head_cond = RayConditioned(c.width, c.cond_dim + 1, c.width)  # with f_s or f_l
        self.head_out = nn.Linear(c.width, 1 + 15)
        self.head_rgb_in = RayConditioned(15, 3 * 5 + c.code_dim, c.width // 2)  # with gamma(d), z_a
        self.head_rgb = nn.Linear(c.width // 2, 3)
        # torso field
        et_dim = (12 if c.torso_lag_s > 0 else 6) * (1 + 2 * 4)
        self.deform_in = self.deform = None
        if c.deformation:  # D(gamma(x), gamma(et)): the pose part once per ray
            self.deform_in = RayConditioned(3 * (1 + 2 * 4), et_dim, c.width)
            width = c.width
            self.deform = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))
            nn.init.zeros_(self.deform[-1].weight)  # start as the identity warp
            nn.init.zeros_(self.deform[-1].bias)
        self.torso_enc = make_encoder(c.encoding, **enc_kw)
        self.torso_in = RayConditioned(self.torso_enc.out_dim, et_dim + c.code_dim, c.width)  # gamma(et), z_s
        self.torso_out = mlp(c.width, c.width, 1 + 3, layers=1)
        # the tracker's pose error follows the face: delta pose = W [expression, blink, 1], per person
        self.camera_fix = None
        if c.camera_correction:
            self.camera_fix = nn.Parameter(torch.zeros(c.n_people, 6, c.n_expression + 2))
        # empty-space skipping
        self.head_grid = Occupancy(c.n_people, c.grid_res)
        self.torso_grid = Occupancy(c.n_people, c.grid_res)

    # -- conditions -------------------------------------------------------------------------

    def condition(self, mel, expression, blink, speaking) -> torch.Tensor:
        """Per frame, the face's state: Eq. 1 expression coefficients and blink, (B, K + 1).

        mel (B, W, 16, 80), expression (B, K), blink (B,), speaking (B,) bool. A speaker's
        coefficients are predicted from the audio, a listener's are the tracked ones, so both
        roles reach the field through one expression encoder (`feature`), and what the field
        learns of mouths from either role serves the other.
        """
        predicted = self.audio_to_expression(self.audio(mel))
        e = torch.where(speaking[:, None], predicted, expression)
        return torch.cat([e, blink[:, None]], dim=-1)

    def feature(self, state: torch.Tensor) -> torch.Tensor:
        """The condition feature of Eq. 6-7 (f_s for a speaker, f_l for a listener) from a state
        (N, K + 1) of `condition`: the encoded coefficients, with blink -> (N, cond_dim + 1)."""
        return torch.cat([self.expression(state[:, :-1]), state[:, -1:]], dim=-1)

    def audio_loss(self, mel, expression, temperature: float = 0.1) -> torch.Tensor:
        """Teach the audio encoder the speaker's mouth, on speaker frames (B >= 2).

        Two terms: the expression coefficients the audio predicts against the tracked ones (L2),
        and audio-lip alignment by InfoNCE (seed 002, section 3.4): each frame's audio feature must
        pick out its own frame's expression feature among the batch's others (its negatives), so
        the condition carries the mouth shape instead of collapsing to a mean mouth.

        mel (B, W, 16, 80), expression (B, K) of speaker frames.
        """
        predicted = self.audio_to_expression(self.audio(mel))
        regression = ((predicted - expression) ** 2).mean()
        a = nn.functional.normalize(self.expression(predicted), dim=-1)
        e = nn.functional.normalize(self.expression(expression), dim=-1)
        logits = a @ e.T / temperature  # (B, B): the diagonal holds the positives
        contrastive = nn.functional.cross_entropy(logits, torch.arange(len(a), device=a.device))
        return regression + contrastive

    # -- fields -----------------------------------------------------------------------------

    def head(self, unit, d, person, state, ray_of, colour: bool = True):
        """Head field at unit-box points (M, 3) of rays ray_of (M,); per ray: direction d (N, 3),
        person (N,), face state (N, K + 1) from `condition`. Returns density (M,) and colour (M, 3),
        or None for the colour when `colour` is False (the colour branch is then never run).

        With expression planes, the point's features gain sum_k e_k B_k(x): one tri-plane feature
        offset per coefficient (and blink), the counterpart in feature space of Eq. 1's linear
        expression basis. Each step's gradient reaches the offsets near the pixels it renders
        directly, so the field learns how the mouth moves as fast as it learns how it looks.
        """
        feats = self.head_enc(unit)  # (M, E)
        if self.expression_planes is not None:
            feats = torch.cat([feats, self.expression_offsets(unit, state, ray_of)], -1)
        cond = self.feature(state)
        h = self.head_trunk(torch.relu(self.head_in(feats, self.z_shape.index_select(0, person), ray_of)))
        if self.attention is not None:  # ER-NeRF region attention: which channels matter here
            c = cond.index_select(0, ray_of) * torch.sigmoid(self.attention(feats))  # (M, C): per sample
            h = torch.relu(torch.addmm(self.head_cond.point(h), c, self.head_cond.ray.weight.T))
        else:
            h = torch.relu(self.head_cond(h, cond, ray_of))
        out = self.head_out(h)
        sigma = nn.functional.softplus(out[:, 0] - 1.0) * 40.0  # densities per metre
        if not colour:
            return sigma, None
        ray = torch.cat([positional_encoding(d, 2), self.z_app.index_select(0, person)], dim=-1)
        rgb = torch.sigmoid(self.head_rgb(torch.relu(self.head_rgb_in(out[:, 1:], ray, ray_of))))
        return sigma, rgb

    def expression_offsets(self, unit, state, ray_of):
        """sum_k e_k B_k(x) of `head`, (M, 3 * F). When every ray has the same state (a rendered
        frame), the basis planes are summed first and sampled once: F channels per point instead
        of (K + 1) F, the same value since bilinear sampling is linear."""
        k = state.shape[1]
        if bool((state == state[:1]).all()):  # channel k F + f of the planes is B_k's feature f
            per_feature = torch.eye(self.config.expression_planes, device=state.device)
            return self.expression_planes(unit, mix=torch.kron(state[:1], per_feature))  # (F, (K + 1) F)
        basis = self.expression_planes(unit).reshape(len(unit), 3, k, -1)  # (M, 3, K + 1, F)
        # a product and a sum: twice as fast here as einsum's batch of M tiny matrix products
        return (basis * state.index_select(0, ray_of)[:, None, :, None]).sum(2).flatten(1)

    def torso(self, unit, person, et, ray_of, colour: bool = True):
        """Torso field at unit-box points (M, 3) of rays ray_of (M,); per ray: person (N,), et (N, 6 or
        12) the head's pose, normalised (`minitalk.train.pose_condition`). Returns density (M,) and
        colour (M, 3), or None for the colour when `colour` is False."""
        e = positional_encoding(et, 4)
        if self.deform is not None:  # x' = x + D(gamma(x), gamma(et))
            unit = unit + self.deform(self.deform_in(positional_encoding(unit, 4), e, ray_of))
        per_ray = torch.cat([e, self.z_shape.index_select(0, person)], dim=-1)
        h = torch.relu(self.torso_in(self.torso_enc(unit), per_ray, ray_of))
        out = self.torso_out(h)
        sigma = nn.functional.softplus(out[:, 0] - 1.0) * 40.0
        return sigma, torch.sigmoid(out[:, 1:]) if colour else None

    # -- rendering --------------------------------------------------------------------------

    # a unit of the correction: a quarter degree of rotation, a quarter millimetre of translation
    CAMERA_FIX_UNITS = (0.25, 0.25, 0.25, 0.25e-3, 0.25e-3, 0.25e-3)

    def corrected_rays(self, rays: dict) -> dict:
        """The head-frame rays under the tracked pose plus the learned correction W [e, blink, 1].

        A face tracker's pose error follows the expression (on the sample, the pitch of an open
        mouth reads too small); W is learned through the camera with the fields, from zero, and
        applied to every frame alike, held-out ones included, since it corrects the tracker,
        not the image. Rays without a tracked pose (generated motion) pass unchanged."""
        if self.camera_fix is None or "pose" not in rays:
            return rays
        tracked = rays["tracked"]
        state = torch.cat([tracked, torch.ones_like(tracked[:, :1])], -1)
        units = torch.tensor(self.CAMERA_FIX_UNITS, device=tracked.device)
        delta = torch.einsum("nck,nk->nc", self.camera_fix.index_select(0, rays["person"]), state) * units
        o, d = head_rays_torch(rays["pose"] + delta, rays["d_cam"])
        return {**rays, "o_head": o, "d_head": d}

    def samples(self, rays, jitter: bool = True) -> dict:
        """Stratified samples of both fields for a batch of rays (see `render_rays` for `rays`).

        Per field ("head": head box, head frame; "torso": the person's torso box, camera frame):
        t (N, S) along the ray, unit (N * S, 3) the points in the unit box, and keep (N * S,)
        True for samples in the box and, with skipping, in an occupied cell of the grid.
        """
        c, person = self.config, rays["person"]
        n = len(person)
        boxes = {
            "head": (rays["o_head"], rays["d_head"], self.head_box[0].expand(n, 3),
                     self.head_box[1].expand(n, 3), c.head_samples, self.head_grid),
            "torso": (torch.zeros_like(rays["d_cam"]), rays["d_cam"], self.torso_boxes[person, 0],
                      self.torso_boxes[person, 1], c.torso_samples, self.torso_grid),
        }  # fmt: skip
        out = {}
        for name, (o, d, lo, hi, count, grid) in boxes.items():
            u = (
                torch.rand(n, count, device=d.device)
                if jitter
                else torch.full((n, count), 0.5, device=d.device)
            )
            t, unit, keep = box_samples(o, d, lo, hi, u, grid.occupied if c.skipping else None, person)
            if o.requires_grad:  # the points again, differentiably in the camera (the sampler is not)
                unit = 2 * (o[:, None] + t[..., None] * d[:, None] - lo[:, None]) / (hi - lo)[:, None] - 1
            unit, keep = unit.reshape(-1, 3), keep.reshape(-1)
            out[name] = (t, unit, keep)
        return out

    def render_rays(self, rays, cond, jitter: bool = True, parts: bool = False, min_transmittance: float = 0):
        """Composite head, torso and background for a batch of rays.

        `rays` holds per-ray tensors: o_head, d_head (head frame), d_cam (camera
        frame; the camera sits at the origin), person (long), et (N, 6 or 12) and
        background (N, 3); `cond` (N, K + 1) the face state of `condition`.
        Stratified samples in each field's box; only those in occupied cells go
        through the network, the rest have zero density. Returns a dict with
        colour, opacity (of head and torso together), head_opacity, depth, and
        with `parts` also the head-only and torso-only colours.

        With `min_transmittance` > 0, samples hidden behind what lies in front of them
        (transmittance below it) are left out (`visible_samples`): a training step then
        differentiates only through the samples that can show.
        """
        rays = self.corrected_rays(rays)
        person = rays["person"]
        n = len(person)
        (t_h, unit_h, keep_h), (t_t, unit_t, keep_t) = self.samples(rays, jitter).values()

        def evaluate(field, t, unit, keep, *args, colour=True):
            """The field at the kept samples; zero density (and colour) at the others, (N, S)."""
            count = t.shape[1]
            index = torch.nonzero(keep)[:, 0]
            ray_of = torch.div(index, count, rounding_mode="floor")
            sigma, rgb = self._field(field, unit.index_select(0, index), *args, ray_of, colour=colour)
            full_sigma = t.new_zeros(n * count).index_copy(0, index, sigma).reshape(n, count)
            if not colour:
                return full_sigma, None
            full_rgb = t.new_zeros(n * count, 3).index_copy(0, index, rgb)
            return full_sigma, full_rgb.reshape(n, count, 3)

        t, order = render.depth_order(t_h, t_t)  # head and torso samples along each ray, merged
        if min_transmittance > 0:  # densities alone: where does each ray turn opaque?
            with torch.no_grad():
                sigma_h = evaluate(
                    self.head, t_h, unit_h, keep_h, rays["d_head"], person, cond, colour=False
                )[0]
                sigma_t = evaluate(self.torso, t_t, unit_t, keep_t, person, rays["et"], colour=False)[0]
            keep_h, keep_t = visible_samples(
                t, order, t_h, sigma_h, sigma_t, keep_h, keep_t, min_transmittance
            )
        sigma_h, rgb_h = evaluate(self.head, t_h, unit_h, keep_h, rays["d_head"], person, cond)
        sigma_t, rgb_t = evaluate(self.torso, t_t, unit_t, keep_t, person, rays["et"])
        sigma = render.in_depth_order(order, sigma_h, sigma_t)
        rgb = render.in_depth_order(order, rgb_h, rgb_t)
        colour, opacity, depth, _ = render.composite(sigma, rgb, t, background=rays["background"])
        out = {
            "colour": colour,
            "opacity": opacity,
            "head_opacity": 1.0 - torch.exp(-(sigma_h * render.deltas(t_h)).sum(dim=1)),
            "depth": depth,
            "samples": int(keep_h.sum() + keep_t.sum()),
        }
        if parts:
            out["head"] = render.composite(sigma_h, rgb_h, t_h, background=rays["background"])[0]
            out["torso"] = render.composite(sigma_t, rgb_t, t_t, background=rays["background"])[0]
        return out

    @torch.no_grad()
    def render_rays_front_to_back(self, rays, cond, slab: int = 8, min_transmittance: float = 1e-3):
        """`render_rays(jitter=False)`'s colour, computed front to back with early ray termination.

        The merged head and torso samples are evaluated `slab` depths at a time, and a ray whose
        transmittance has fallen below `min_transmittance` takes no further samples (Instant-NGP's
        inference marching): behind an opaque face nothing can show. The colour differs from
        `render_rays` by at most `min_transmittance` (0 gives the same samples exactly).
        Returns a dict with colour, opacity and the number of samples evaluated.
        """
        rays = self.corrected_rays(rays)
        person = rays["person"]
        n = len(person)
        (t_h, unit_h, keep_h), (t_t, unit_t, keep_t) = self.samples(rays, jitter=False).values()
        s_h = t_h.shape[1]
        t, order = render.depth_order(t_h, t_t)  # (N, S): merged depth order
        keep = render.in_depth_order(order, keep_h.reshape(n, -1), keep_t.reshape(n, -1))
        dt = render.deltas(t)
        units = torch.cat([unit_h.reshape(n, s_h, 3), unit_t.reshape(n, -1, 3)], dim=1).reshape(-1, 3)
        units_per_ray = t.shape[1]
        colour = torch.zeros(n, 3, device=t.device)
        transmittance = torch.ones(n, device=t.device)
        evaluated = 0
        for j in range(0, t.shape[1], slab):
            width = min(slab, t.shape[1] - j)
            live = keep[:, j : j + width] & (transmittance > min_transmittance)[:, None]
            flat = torch.nonzero(live.reshape(-1))[:, 0]  # the slab's samples still to evaluate
            ray = torch.div(flat, width, rounding_mode="floor")
            which = order[:, j : j + width].reshape(-1).index_select(0, flat)  # into [head | torso] samples
            is_head = which < s_h
            sigma = torch.zeros(len(flat), device=t.device)
            rgb = torch.zeros(len(flat), 3, device=t.device)
            for mask, field, args in (
                (is_head, self.head, (rays["d_head"], person, cond)),
                (~is_head, self.torso, (person, rays["et"])),
            ):
                mine = torch.nonzero(mask)[:, 0]
                if len(mine):  # per-ray inputs of the rays that still sample, not of all N
                    r = ray.index_select(0, mine)
                    rows, ray_of = torch.unique_consecutive(r, return_inverse=True)
                    points = units.index_select(0, r * units_per_ray + which.index_select(0, mine))
                    s, c = field(points, *(a.index_select(0, rows) for a in args), ray_of)
                    sigma.index_copy_(0, mine, s)
                    rgb.index_copy_(0, mine, c)
            evaluated += len(flat)
            slab_sigma = t.new_zeros(n * width).index_copy_(0, flat, sigma).reshape(n, width)
            slab_rgb = t.new_zeros(n * width, 3).index_copy_(0, flat, rgb).reshape(n, width, 3)
            cols = slice(j, j + width)  # the slab composited alone, then seen through what lies in front
            slab_colour, slab_opacity, _, _ = render.composite(slab_sigma, slab_rgb, t[:, cols], dt[:, cols])
            colour += transmittance[:, None] * slab_colour
            transmittance = transmittance * (1.0 - slab_opacity)
        colour += transmittance[:, None] * rays["background"]
        return {"colour": colour, "opacity": 1.0 - transmittance, "samples": evaluated}

    @staticmethod
    def _field(field, unit, *args, colour: bool = True):
        """A field at the kept points; nothing to evaluate when every sample was skipped."""
        if len(unit) == 0:
            return unit.new_zeros(0), unit.new_zeros(0, 3) if colour else None
        return field(unit, *args, colour=colour)

    @torch.no_grad()
    def update_occupancy(self, head_cond: torch.Tensor, et: torch.Tensor) -> None:
        """Refresh both grids; head_cond (P, C) and et (P, 6 or 12): one training frame's per person."""

        def head_density(unit, p):
            ray = torch.zeros(len(unit), dtype=torch.long, device=unit.device)
            person = torch.tensor([p], device=unit.device)
            d = torch.tensor([[0.0, 0.0, 1.0]], device=unit.device)
            return self.head(unit, d, person, head_cond[p : p + 1], ray, colour=False)[0]

        def torso_density(unit, p):
            ray = torch.zeros(len(unit), dtype=torch.long, device=unit.device)
            person = torch.tensor([p], device=unit.device)
            return self.torso(unit, person, et[p : p + 1], ray, colour=False)[0]

        self.head_grid.update(head_density)
        self.torso_grid.update(torso_density)

    def grid_parameters(self):
        """The tri-plane texels (trained with a larger learning rate than the MLPs)."""
        return [p for name, p in self.named_parameters() if ".grids." in name]

    def mlp_parameters(self):
        return [p for name, p in self.named_parameters() if ".grids." not in name]
