"""DialogueNeRF: one conditional radiance field for every person of a conversation (IV-B, Eq. 6-7).

    F_theta: (gamma(x), gamma(d), f_s, f_p,s, z_s,s, z_a,s) -> (c_s, sigma_s)     speaker, Eq. 6
    F_theta: (gamma(x), gamma(d), f_l, f_p,l, z_s,l, z_a,l) -> (c_l, sigma_l)     listener, Eq. 7

* The head pose f_p places the camera: rays are cast in the head's canonical frame.
* Each person owns a shape code z_s (position features: density and colour) and an appearance
  code z_a (direction encoding: colour only, GRAF-style); as an option, the Disentangling Head
  NeRF's identity, expression, albedo and illumination codes (3.1, `minitalk.nerf.disentangle`).
* A face state (Eq. 1 coefficients plus blink; a speaker's predicted from the audio) becomes
  exp_feat (f_s or f_l), weighed per position by ER-NeRF's region attention (section 3.3);
  expression planes add Eq. 1's linear model in feature space, sum_k e_k B_k(x).
* The torso is a second field in camera coordinates, conditioned on the head pose and its lagged
  trail, with a deformation field x' = x + D(gamma(x), gamma(et)) so it follows the head; or, as
  options, on ER-NeRF's adaptive pose encoding and as its 2D field over the image plane, a colour
  and an alpha per pixel under the head (3.4). Tri-planes may be hashed (ER-NeRF 3.2).
* A per-person linear map from the face state to a pose offset corrects the tracker's camera.
* With `upsample` u > 1 the fields return feature channels, composited u times coarser, and
  `NeuralRenderer` makes the image (the Disentangling Head NeRF's 2D neural renderer, 3.2).
* The model holds the fields only; `minitalk.nerf.render` samples and composites them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from minitalk.camera import head_rays_torch, rotation_matrices
from minitalk.nerf.encoding import TriPlane, make_encoder, positional_encoding
from minitalk.nerf.rays import Occupancy
from minitalk.nerf.upsampler import FACTORS, NeuralRenderer
from minitalk.settings import option
from minitalk.utils import SettingError


@dataclass(frozen=True)
class DialogueNeRFConfig:
    """The model's settings, saved in every checkpoint and avatar file; `minitalk train` offers
    some of them as options (`minitalk.settings`)."""

    encoding: str = option("grid", "position encoding: tri-plane grids or sinusoids (Eq. 2)",
                           choices=("grid", "frequency"))  # fmt: skip
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
    region_attention: bool = option(True, "turn off ER-NeRF region attention", flag="--no-region-attention",
                                    const=False)  # fmt: skip
    # features per expression coefficient in the head's expression planes; 0: none
    expression_planes: int = option(
        1, "no expression planes in the head", flag="--no-expression-planes", const=0
    )
    expression_res: int = 64
    deformation: bool = option(True, "turn off the torso deformation field", flag="--no-deformation",
                               const=False)  # fmt: skip
    torso_lag_s: float = option(
        0.5, "the torso also sees the head pose trailed over this time; 0: the current pose only",
        flag="--torso-lag", metavar="SECONDS",
    )  # fmt: skip
    hash_log2: int = option(
        0, "ER-NeRF's hashed tri-planes: plane levels finer than 2^K texels are hashed into 2^K entries "
        "(Instant-NGP's table size T = 2^K); 0: dense planes", metavar="K",
    )  # fmt: skip
    pose_encoding: str = option(
        "vector", "how the torso sees the head pose: the pose vector (DialogueNeRF) or ER-NeRF's adaptive "
        "pose encoding, trainable key points moved by the pose and projected into the image",
        choices=("vector", "keypoints"),
    )  # fmt: skip
    torso: str = option(
        "3d", "the torso: DialogueNeRF's field in the camera's space, volume-rendered with the head, or "
        "ER-NeRF's 2D field over the image plane, a colour and an alpha per pixel laid under the head",
        choices=("3d", "2d"),
    )  # fmt: skip
    codes: str = option(
        "person", "a person's codes: DialogueNeRF's shape and appearance, or the Disentangling Head NeRF's "
        "identity, expression, albedo and illumination pulled toward contrastive reference codes (Eq. 6)",
        choices=("person", "disentangled"),
    )  # fmt: skip
    head_samples: int = 32
    torso_samples: int = 16
    grid_res: int = 48  # occupancy grid cells per side
    skipping: bool = True  # empty-space skipping with the occupancy grids
    n_people: int = 2
    camera_correction: bool = True  # a per-person pose correction learned from the tracked expression
    upsample: int = option(
        1, "2D neural renderer: the fields render a feature map at 1/U of the prepared size and a small "
        "CNN upsamples it to the full size (2, 4 or 8; 1: a colour per pixel)", metavar="U",
    )  # fmt: skip
    feature_channels: int = 16  # channels of that feature map (the first three are a colour)

    def __post_init__(self):
        if self.upsample not in FACTORS:
            raise SettingError("upsample", f"one of {FACTORS}", self.upsample)
        if self.upsample > 1 and self.feature_channels < 4:
            raise SettingError("feature_channels", "at least 4 with the neural renderer",
                               self.feature_channels)  # fmt: skip
        if self.torso_lag_s < 0:
            raise SettingError("torso_lag_s", "0 or more seconds", self.torso_lag_s)
        if self.encoding not in ("grid", "frequency"):
            raise SettingError("encoding", "'grid' or 'frequency'", repr(self.encoding))
        if self.hash_log2 and not 8 <= self.hash_log2 <= 24:
            raise SettingError("hash_log2", "0 (dense planes) or from 8 to 24", self.hash_log2)
        if self.hash_log2 and self.encoding != "grid":
            raise SettingError("hash_log2", "0 with the sinusoidal encoding (only tri-planes are hashed)",
                               self.hash_log2)  # fmt: skip
        if self.hash_log2 and self.max_res**2 <= 2**self.hash_log2:
            most = (self.max_res**2 - 1).bit_length() - 1  # the largest K with 2^K < max_res^2
            raise SettingError("hash_log2", f"at most {most} for planes of {self.max_res}^2 texels "
                               "(2^K entries would hash none of their levels)", self.hash_log2)  # fmt: skip
        if self.pose_encoding not in ("vector", "keypoints"):
            raise SettingError("pose_encoding", "'vector' or 'keypoints'", repr(self.pose_encoding))
        if self.torso not in ("3d", "2d"):
            raise SettingError("torso", "'3d' or '2d'", repr(self.torso))
        if self.codes not in ("person", "disentangled"):
            raise SettingError("codes", "'person' or 'disentangled'", repr(self.codes))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def channels(self) -> int:
        """What the fields return per sample: a colour (3), or the neural renderer's features."""
        return 3 if self.upsample == 1 else self.feature_channels


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


class DialogueNeRF(nn.Module):
    """Head and torso fields for every person; `minitalk.nerf.render` composites them over the background."""

    def __init__(self, config: DialogueNeRFConfig, head_box, torso_boxes):
        super().__init__()
        self.config = c = config
        self.register_buffer("head_box", torch.as_tensor(head_box, dtype=torch.float32))  # (2, 3)
        self.register_buffer("torso_boxes", torch.as_tensor(torso_boxes, dtype=torch.float32))  # (P, 2, 3)
        enc_kw = (
            {
                "levels": c.levels,
                "features": c.features,
                "min_res": c.min_res,
                "max_res": c.max_res,
                "hash_log2": c.hash_log2,
            }  # fmt: skip
            if c.encoding == "grid"
            else {"n_freqs": c.pos_freqs}
        )
        self.z_shape = nn.Parameter(0.01 * torch.randn(c.n_people, c.code_dim))
        self.z_app = nn.Parameter(0.01 * torch.randn(c.n_people, c.code_dim))
        self.z_light = None  # the Disentangling Head NeRF's illumination code, colour only like z_app
        if c.codes == "disentangled":
            self.z_light = nn.Parameter(0.01 * torch.randn(c.n_people, c.code_dim))
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
        n_colour_codes = 1 if self.z_light is None else 2  # z_a, and z_light
        self.head_rgb_in = RayConditioned(15, 3 * 5 + n_colour_codes * c.code_dim, c.width // 2)  # gamma(d)
        self.head_rgb = nn.Linear(c.width // 2, c.channels)
        # torso field
        et_dim = (12 if c.torso_lag_s > 0 else 6) * (1 + 2 * 4)  # gamma(et); as many key point coordinates
        self.keypoints = None
        if c.pose_encoding == "keypoints":  # ER-NeRF 3.4: jaw corners and the head's centre to start
            lo, hi = self.head_box
            mid = (lo + hi) / 2
            jaw = [torch.stack([x, hi[1], mid[2]]) for x in (lo[0], hi[0])]
            self.keypoints = nn.Parameter(torch.stack([*jaw, mid]))  # (3, 3) in the head frame, metres
        dims = 2 if c.torso == "2d" else 3  # ER-NeRF 3.4: image-plane points (x, y); else camera-space ones
        self.deform_in = self.deform = None
        if c.deformation:  # D(gamma(x), gamma(et)): the pose part once per ray
            self.deform_in = RayConditioned(dims * (1 + 2 * 4), et_dim, c.width)
            width = c.width
            self.deform = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, dims))
            nn.init.zeros_(self.deform[-1].weight)  # start as the identity warp
            nn.init.zeros_(self.deform[-1].bias)
        self.torso_enc = make_encoder(c.encoding, dims=dims, **enc_kw)
        self.torso_in = RayConditioned(self.torso_enc.out_dim, et_dim + c.code_dim, c.width)  # gamma(et), z_s
        self.torso_out = mlp(c.width, c.width, 1 + c.channels, layers=1)  # density or alpha, colour
        # the tracker's pose error follows the face: delta pose = W [expression, blink, 1], per person
        self.camera_fix = None
        if c.camera_correction:
            self.camera_fix = nn.Parameter(torch.zeros(c.n_people, 6, c.n_expression + 2))
        # the 2D neural renderer (the Disentangling Head NeRF, section 3.2): feature map -> image
        self.upsampler = NeuralRenderer(c.channels, c.upsample) if c.upsample > 1 else None
        # empty-space skipping
        self.head_grid = Occupancy(c.n_people, c.grid_res)
        self.torso_grid = Occupancy(c.n_people, c.grid_res) if c.torso == "3d" else None

    # -- conditions -------------------------------------------------------------------------

    def face_state(self, mel, expression, blink, speaking) -> torch.Tensor:
        """Per frame, the face's state: Eq. 1 expression coefficients and blink, (B, K + 1).

        mel (B, W, 16, 80), expression (B, K), blink (B,), speaking (B,) bool. A speaker's
        coefficients are predicted from the audio, a listener's are the tracked ones, so both
        roles reach the field through one expression encoder (`exp_feature`), and what the field
        learns of mouths from either role serves the other.
        """
        predicted = self.audio_to_expression(self.audio(mel))
        coefficients = torch.where(speaking[:, None], predicted, expression)
        return torch.cat([coefficients, blink[:, None]], dim=-1)

    def expression_code(self, face_state: torch.Tensor) -> torch.Tensor:
        """The encoded expression coefficients of a (N, K + 1) `face_state` -> (N, cond_dim): C_ex of
        the Disentangling Head NeRF (Eq. 6) when codes are disentangled."""
        return self.expression(face_state[:, :-1])

    def exp_feature(self, face_state: torch.Tensor) -> torch.Tensor:
        """The expression feature of Eq. 6-7, exp_feat (f_s for a speaker, f_l for a listener), from a
        (N, K + 1) of `face_state`: the encoded coefficients, with blink -> (N, cond_dim + 1)."""
        return torch.cat([self.expression_code(face_state), face_state[:, -1:]], dim=-1)

    def audio_loss(self, mel, expression, contrastive: bool = True, temperature: float = 0.1) -> torch.Tensor:
        """Teach the audio encoder the speaker's mouth, on speaker frames (B >= 2).

        Two terms: the expression coefficients the audio predicts against the tracked ones (L2),
        and audio-lip alignment by InfoNCE (the Disentangling Head NeRF, section 3.4): each
        frame's audio feature must pick out its own frame's expression feature among the batch's
        others (its negatives), so exp_feat carries the mouth shape instead of a mean mouth.

        mel (B, W, 16, 80), expression (B, K) of speaker frames; `contrastive` False: the L2 alone.
        """
        predicted = self.audio_to_expression(self.audio(mel))
        regression = ((predicted - expression) ** 2).mean()
        if not contrastive:
            return regression
        audio_feat = nn.functional.normalize(self.expression(predicted), dim=-1)
        exp_feat = nn.functional.normalize(self.expression(expression), dim=-1)
        logits = audio_feat @ exp_feat.T / temperature  # (B, B): the diagonal holds the positives
        contrastive = nn.functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))
        return regression + contrastive

    # -- fields -----------------------------------------------------------------------------

    def head(self, unit, d, person, face_state, ray_of, colour: bool = True):
        """Head field at unit-box points (M, 3) of rays ray_of (M,); per ray: direction d (N, 3),
        person (N,), face_state (N, K + 1) from `face_state`. Returns density (M,) and colour (M, 3),
        or None for the colour when `colour` is False (the colour branch is then never run).

        With expression planes, the point's features gain sum_k e_k B_k(x): one tri-plane feature
        offset per coefficient (and blink), the counterpart in feature space of Eq. 1's linear
        expression basis. Each step's gradient reaches the offsets near the pixels it renders
        directly, so the field learns how the mouth moves as fast as it learns how it looks.
        """
        feats = self.head_enc(unit)  # (M, E)
        if self.expression_planes is not None:
            feats = torch.cat([feats, self.expression_offsets(unit, face_state, ray_of)], -1)
        exp_feat = self.exp_feature(face_state)
        h = self.head_trunk(torch.relu(self.head_in(feats, self.z_shape.index_select(0, person), ray_of)))
        if self.attention is not None:  # ER-NeRF region attention: which channels matter here
            attended = exp_feat.index_select(0, ray_of) * torch.sigmoid(self.attention(feats))  # (M, C)
            h = torch.relu(torch.addmm(self.head_cond.point(h), attended, self.head_cond.ray.weight.T))
        else:
            h = torch.relu(self.head_cond(h, exp_feat, ray_of))
        out = self.head_out(h)
        sigma = nn.functional.softplus(out[:, 0] - 1.0) * 40.0  # densities per metre
        if not colour:
            return sigma, None
        codes = [self.z_app] if self.z_light is None else [self.z_app, self.z_light]  # albedo, illumination
        ray = torch.cat([positional_encoding(d, 2), *(z.index_select(0, person) for z in codes)], dim=-1)
        rgb = torch.sigmoid(self.head_rgb(torch.relu(self.head_rgb_in(out[:, 1:], ray, ray_of))))
        return sigma, rgb

    def expression_offsets(self, unit, face_state, ray_of):
        """sum_k e_k B_k(x) of `head`, (M, 3 * F). When every ray has the same face state (a rendered
        frame), the basis planes are summed first and sampled once: F channels per point instead
        of (K + 1) F, the same value since bilinear sampling is linear."""
        k = face_state.shape[1]
        if bool((face_state == face_state[:1]).all()):  # channel k F + f of the planes is B_k's feature f
            per_feature = torch.eye(self.config.expression_planes, device=face_state.device)
            return self.expression_planes(unit, mix=torch.kron(face_state[:1], per_feature))  # (F, (K + 1) F)
        basis = self.expression_planes(unit).reshape(len(unit), 3, k, -1)  # (M, 3, K + 1, F)
        # a product and a sum: twice as fast here as einsum's batch of M tiny matrix products
        return (basis * face_state.index_select(0, ray_of)[:, None, :, None]).sum(2).flatten(1)

    def torso_condition(self, inputs: dict) -> torch.Tensor:
        """What the torso knows of the head's pose, per ray (N, 6 or 12), from `Cameras.torso_inputs`:
        et, the pose vector (`minitalk.nerf.frames.pose_condition`), or with `pose_encoding="keypoints"`
        ER-NeRF's adaptive pose encoding (section 3.4): trainable key points X_keys in the head frame,
        moved by the pose (now, and trailed), X = R X_keys + t, and projected into the image,
        x = 2 (K X)_xy / (K X)_z - 1 with K normalised by the side. A point of the image says where
        the head is in the torso's own coordinates, which a vector of angles does not."""
        if self.keypoints is None:
            return inputs["et"]
        poses = inputs["head_pose"].reshape(len(inputs["head_pose"]), -1, 6)  # (N, 1 or 2, 6)
        rotation = rotation_matrices(poses[..., :3].reshape(-1, 3)).reshape(*poses.shape[:2], 3, 3)
        points = (
            torch.einsum("nkij,qj->nkqi", rotation, self.keypoints) + poses[:, :, None, 3:]
        )  # (N, k, 3, 3)
        image = torch.einsum("nij,nkqj->nkqi", inputs["projection"], points)
        return (2 * image[..., :2] / image[..., 2:] - 1).flatten(1)  # (N, k * 3 * 2)

    def torso(self, unit, person, et, ray_of, colour: bool = True):
        """Torso field at unit-box points (M, 3) of rays ray_of (M,); per ray: person (N,), et (N, 6 or
        12) the head's pose from `torso_condition`. Returns density (M,) and colour (M, 3), or None
        for the colour when `colour` is False. With `torso="2d"` the points are image-plane ones
        (M, 2) and the density is an alpha in 0..1 (`torso_layer`)."""
        gamma_et = positional_encoding(et, 4)
        if self.deform is not None:  # x' = x + D(gamma(x), gamma(et))
            unit = unit + self.deform(self.deform_in(positional_encoding(unit, 4), gamma_et, ray_of))
        per_ray = torch.cat([gamma_et, self.z_shape.index_select(0, person)], dim=-1)
        h = torch.relu(self.torso_in(self.torso_enc(unit), per_ray, ray_of))
        out = self.torso_out(h)
        if self.config.torso == "2d":
            opaque = torch.sigmoid(out[:, 0])
        else:
            opaque = nn.functional.softplus(out[:, 0] - 1.0) * 40.0  # densities per metre
        return opaque, torch.sigmoid(out[:, 1:]) if colour else None

    def torso_layer(self, rays: dict) -> tuple | None:
        """ER-NeRF's torso (section 3.4), for `torso="2d"`: a 2D deformable neural field over each
        person's image, read once per pixel, xy (N, 2) in [-1, 1] (`Cameras.rays`), conditioned
        like the 3D torso on the head's pose (best on the adaptive pose encoding, `torso_condition`):

            (alpha, c) = F_torso(gamma(xy + D(gamma(xy), gamma(et))), gamma(et), z_s)

        Returns (colour (N, channels), alpha (N,)), which `minitalk.nerf.render` lays under the head:
        C = C_head + (1 - A_head) (alpha c + (1 - alpha) c_bg). None for the 3D torso. One reading
        per pixel instead of `torso_samples` along each ray; what it gives up is a torso that
        occludes the head, which a portrait's torso never does."""
        if self.config.torso != "2d":
            return None
        n = len(rays["xy"])
        alpha, colour = self.torso(rays["xy"], rays["person"], self.torso_condition(rays),
                                   torch.arange(n, device=rays["xy"].device))  # fmt: skip
        return colour, alpha

    # -- rendering --------------------------------------------------------------------------

    # a unit of the correction: a quarter degree of rotation, a quarter millimetre of translation
    CAMERA_FIX_SCALE = (0.25, 0.25, 0.25, 0.25e-3, 0.25e-3, 0.25e-3)

    def corrected_rays(self, rays: dict) -> dict:
        """The head-frame rays under the tracked pose plus the learned correction W [e, blink, 1].

        A face tracker's pose error follows the expression (on the sample, the pitch of an open
        mouth reads too small); W is learned through the camera with the fields, from zero, and
        applied to every frame alike, held-out ones included, since it corrects the tracker,
        not the image. Rays without a tracked pose (generated motion) pass unchanged."""
        if self.camera_fix is None or "pose" not in rays:
            return rays
        tracked = rays["tracked_state"]
        inputs = torch.cat([tracked, torch.ones_like(tracked[:, :1])], -1)  # (N, K + 2): [e, blink, 1]
        scale = torch.tensor(self.CAMERA_FIX_SCALE, device=tracked.device)
        delta = torch.einsum("nck,nk->nc", self.camera_fix.index_select(0, rays["person"]), inputs) * scale
        o, d = head_rays_torch(rays["pose"] + delta, rays["d_cam"])
        return {**rays, "o_head": o, "d_head": d}

    def background_features(self, background: torch.Tensor) -> torch.Tensor:
        """The background as the last sample of a ray, (N, 3) -> (N, channels): its colour, and zeros
        in the neural renderer's other feature channels."""
        return nn.functional.pad(background, (0, self.config.channels - 3))

    def sample_boxes(self, rays: dict) -> dict:
        """Where each field is sampled along a batch of rays: per field, ray origins and directions
        (N, 3) in its frame (head: the head frame; torso: the camera's, origin at the camera), the
        box corners (N, 3), the number of samples per ray and the occupancy grids (None without
        empty-space skipping). `minitalk.nerf.render.sample_fields` draws the samples."""
        c, person = self.config, rays["person"]
        n = len(person)
        boxes = {"head": (rays["o_head"], rays["d_head"], self.head_box[0].expand(n, 3),
                          self.head_box[1].expand(n, 3), c.head_samples,
                          self.head_grid.occupied if c.skipping else None)}  # fmt: skip
        if self.torso_grid is not None:  # a 3D torso (the 2D one is `torso_layer`, no samples)
            boxes["torso"] = (torch.zeros_like(rays["d_cam"]), rays["d_cam"], self.torso_boxes[person, 0],
                              self.torso_boxes[person, 1], c.torso_samples,
                              self.torso_grid.occupied if c.skipping else None)  # fmt: skip
        return boxes

    def fields(self, rays: dict, face_state: torch.Tensor) -> dict:
        """The volume-rendered fields bound to a batch of rays, as the renderer calls them (the head,
        and the torso unless it is the 2D `torso_layer`):
        `field(unit (M, 3), ray_of (M,), rows=None, colour=True) -> (sigma (M,), rgb (M, 3) or None)`,
        where `ray_of` indexes the batch's rays, or `rows` (R,) of them when given (the renderer
        then pays the per-ray inputs of those rows only). `face_state` (N, K + 1) from `face_state`."""

        def bind(field, inputs):
            def call(unit, ray_of, rows=None, colour: bool = True):
                args = inputs if rows is None else tuple(x.index_select(0, rows) for x in inputs)
                return field(unit, *args, ray_of, colour=colour)

            return call

        bound = {"head": bind(self.head, (rays["d_head"], rays["person"], face_state))}
        if self.torso_grid is not None:
            bound["torso"] = bind(self.torso, (rays["person"], self.torso_condition(rays)))
        return bound

    @torch.no_grad()
    def update_occupancy(self, face_state: torch.Tensor, et: torch.Tensor) -> None:
        """Refresh both grids; face_state (P, K + 1) and et (P, 6 or 12) from `torso_condition`: one
        training frame's per person."""

        def head_density(unit, p):
            ray = torch.zeros(len(unit), dtype=torch.long, device=unit.device)
            person = torch.tensor([p], device=unit.device)
            d = torch.tensor([[0.0, 0.0, 1.0]], device=unit.device)
            return self.head(unit, d, person, face_state[p : p + 1], ray, colour=False)[0]

        def torso_density(unit, p):
            ray = torch.zeros(len(unit), dtype=torch.long, device=unit.device)
            person = torch.tensor([p], device=unit.device)
            return self.torso(unit, person, et[p : p + 1], ray, colour=False)[0]

        self.head_grid.update(head_density)
        if self.torso_grid is not None:
            self.torso_grid.update(torso_density)

    def grid_parameters(self):
        """The tri-plane texels (trained with a larger learning rate than the MLPs)."""
        return [p for name, p in self.named_parameters() if ".grids." in name]

    def mlp_parameters(self):
        return [p for name, p in self.named_parameters() if ".grids." not in name]
