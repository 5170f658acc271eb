"""Disentangled codes: identity, expression, albedo and illumination (Disentangling Head NeRF 3.1, 3.3).

    L_dis = l_id |C_id - C_id_ref|^2 + l_ex |C_ex - C_ex_ref|^2 + l_al |C_al - C_al_ref|^2
            + l_ill |C_ill - C_ill_ref|^2                                                    (Eq. 6)

With `DialogueNeRFConfig(codes="disentangled")` a person's codes are C_id = `z_shape` (density and
colour), C_al = `z_app` and C_ill = `z_light` (colour only), and a frame's C_ex is the expression
feature of its face state (`DialogueNeRF.expression_code`). The reference codes C_ref come from
`ReferenceEncoder`, four small CNNs on face crops trained contrastively before the field, from
the training frames alone (no downloaded weights):

* identity, albedo: positives the same person in another frame under another light;
* expression: positives the other person in the frame whose tracked expression is nearest (each
  person's coefficients standardised over their own frames: a face's rest is its own), and hard
  negatives the same person in another frame (the paper's pairs);
* illumination: positives another person or frame under the same light, hard negatives the same
  image under another light; the lights are random per-channel gains of the crop.

Identity and expression see a grey, standardised crop (lighting cannot reach them); albedo and
illumination see colour statistics pooled over the crop (no geometry can reach them).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from minitalk.utils import to_uint8

CODES = ("identity", "expression", "albedo", "illumination")
CROP = 48  # face crops of CROP x CROP pixels: enough for a mouth's opening, cheap on a CPU


def face_crops(images: torch.Tensor, landmarks: np.ndarray, size: int = CROP) -> torch.Tensor:
    """Square crops around the face, (N, 3, size, size) in 0..1, of images (N, S, S, 3) uint8 with
    their FaceMesh landmarks (N, 478, 2 or 3) in pixels: the landmarks' box, enlarged by a fifth. A
    frame without landmarks (NaN) takes the median box of the others (the whole image if none)."""
    s = images.shape[1]
    pts = np.asarray(landmarks, np.float64)[..., :2]
    found = np.isfinite(pts).all((1, 2))
    boxes = np.tile([0.0, 0.0, s, s], (len(pts), 1))  # (N, 4): x0, y0, x1, y1
    boxes[found] = np.concatenate([pts[found].min(1), pts[found].max(1)], -1)
    if found.any():
        boxes[~found] = np.median(boxes[found], 0)
    lo, hi = torch.tensor(boxes[:, :2], dtype=torch.float32), torch.tensor(boxes[:, 2:], dtype=torch.float32)
    centre, half = (lo + hi) / 2, 0.6 * (hi - lo).amax(1)
    theta = torch.zeros(len(images), 2, 3)  # output [-1, 1] -> input [-1, 1] (align_corners=False)
    theta[:, 0, 0] = theta[:, 1, 1] = 2 * half / s
    theta[:, :, 2] = 2 * centre / s - 1
    grid = F.affine_grid(theta, (len(images), 3, size, size), align_corners=False)
    x = images.permute(0, 3, 1, 2).float() / 255
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def relight(crops: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """A crop under another light: per-channel gains (N, 3), clipped to 0..1."""
    return (crops * gains[:, :, None, None]).clamp(0, 1)


def random_gains(n: int, spread: float = 0.25) -> torch.Tensor:
    """(n, 3) lights: a brightness and a tint, log-normal around 1."""
    return torch.exp(spread * torch.randn(n, 1) + 0.5 * spread * torch.randn(n, 3))


def grey_standardised(crops: torch.Tensor) -> torch.Tensor:
    """Luminance, zero mean and unit spread per crop (N, 1, H, W): blind to a global light."""
    grey = crops.mean(1, keepdim=True).clamp_min(1e-3).log()  # a gain is an offset in log space
    return (grey - grey.mean((2, 3), keepdim=True)) / (grey.std((2, 3), keepdim=True) + 1e-3)


def conv_encoder(channels: int, dim: int) -> nn.Sequential:
    """48 -> 6 px in three stride-2 convolutions, then a linear map to `dim`."""
    layers, c = [], channels
    for out in (16, 32, 64):
        layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.GroupNorm(4, out), nn.LeakyReLU(0.1)]
        c = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * (CROP // 8) ** 2, dim))


class ColourStatistics(nn.Module):
    """Per-pixel features (1x1 convolutions) of the crop shrunk 4x, pooled by mean and spread -> (N, dim):
    what colours a face has, not where."""

    def __init__(self, dim: int):
        super().__init__()
        self.pixel = nn.Sequential(nn.Conv2d(3, 32, 1), nn.LeakyReLU(0.1), nn.Conv2d(32, 32, 1))
        self.out = nn.Linear(64, dim)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        h = self.pixel(F.avg_pool2d(crops, 4).clamp_min(1e-3).log())
        return self.out(torch.cat([h.mean((2, 3)), h.std((2, 3))], -1))


class ReferenceEncoder(nn.Module):
    """Face crops (N, 3, 48, 48) of people (N,) -> the four reference codes, each of unit length (the
    extractor of Eq. 6). `dims` maps each code to its size: the model's code_dim, cond_dim for
    expression. The expression encoder sees the grey crop less its person's mean grey crop
    (`mean_face`, (P, 1, 48, 48)): what this frame changes in this face, the same for any face
    that makes the same change, so it need not learn first to ignore who it is."""

    def __init__(self, dims: dict[str, int], mean_face: torch.Tensor):
        super().__init__()
        self.dims = dict(dims)
        self.register_buffer("mean_face", mean_face)
        self.identity = conv_encoder(1, dims["identity"])
        self.expression = conv_encoder(1, dims["expression"])
        self.albedo = ColourStatistics(dims["albedo"])
        self.illumination = ColourStatistics(dims["illumination"])

    def forward(self, crops: torch.Tensor, person: torch.Tensor) -> dict[str, torch.Tensor]:
        grey = grey_standardised(crops)
        raw = {"identity": self.identity(grey), "expression": self.expression(grey - self.mean_face[person]),
               "albedo": self.albedo(crops), "illumination": self.illumination(crops)}  # fmt: skip
        return {k: F.normalize(v, dim=-1) for k, v in raw.items()}


def contrastive(anchor, positive, not_negative=None, hard=None, temperature: float = 0.1):
    """InfoNCE: each anchor (B, D) must pick its own positive (B, D) among the batch's others.
    `not_negative` (B, B) bool marks pairs that are neither (left out of the softmax); `hard`
    (B, D) adds one more negative per anchor."""
    logits = anchor @ positive.T / temperature  # (B, B): the diagonal holds the positives
    if not_negative is not None:
        eye = torch.eye(len(anchor), dtype=torch.bool, device=anchor.device)
        logits = logits.masked_fill(not_negative & ~eye, float("-inf"))
    if hard is not None:
        logits = torch.cat([logits, (anchor * hard).sum(-1, keepdim=True) / temperature], 1)
    return F.cross_entropy(logits, torch.arange(len(anchor), device=anchor.device))


def relative_expression(expression: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Each person's coefficients (P, T, K) less their mean over frames `pool`, over their spread: one
    face at rest may read as another's half-open mouth (on the sample, one person's lips part at
    rest), so "the same expression" is the same departure from one's own rest."""
    own = expression[:, pool]
    return (expression - own.mean(1, keepdim=True)) / (own.std(1, keepdim=True) + 1e-6)


def nearest_expression(expression: torch.Tensor, person: torch.Tensor, frame: torch.Tensor,
                       pool: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """For each (person, frame) (B,), the frame of `pool` (M,) where the other person's tracked
    expression (P, T, K) is nearest: the positive pairs of the expression code."""
    other = expression[(person + 1) % len(expression)]  # (B, T, K)
    mine = expression[person, frame]  # (B, K)
    distances = torch.cdist(mine[:, None], other[:, pool])[:, 0]  # (B, M)
    return pool[distances.argmin(1)]


def train_reference_encoder(crops: torch.Tensor, expression: torch.Tensor, train: torch.Tensor,
                            dims: dict[str, int], steps: int = 300, batch: int = 32,
                            progress=None) -> tuple[ReferenceEncoder, list[float]]:  # fmt: skip
    """Train the four encoders contrastively on face crops (P, T, 3, 48, 48) of the training frames
    `train` (T,) bool, with the tracked expression (P, T, K); returns the encoder (in eval mode) and
    the loss per step. Random numbers come from torch's global generator (seeded by the caller)."""
    n_people = crops.shape[0]
    pool = torch.nonzero(train)[:, 0]
    expression = relative_expression(expression, pool)
    mean_face = torch.stack([grey_standardised(crops[p, pool]).mean(0) for p in range(n_people)])
    encoder = ReferenceEncoder(dims, mean_face)
    optim = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        person = torch.randint(n_people, (batch,))
        frame = pool[torch.randint(len(pool), (batch,))]
        again = pool[torch.randint(len(pool), (batch,))]  # the same person, another frame
        donor = nearest_expression(expression, person, frame, pool)
        other = torch.randint(n_people, (batch,))
        light, light_b = random_gains(batch), random_gains(batch)
        views = [crops[person, frame], crops[person, again], crops[(person + 1) % n_people, donor],
                 crops[other, again], crops[person, frame]]  # fmt: skip
        lights = [light, light_b, light_b, light, light_b]
        owners = torch.cat([person, person, (person + 1) % n_people, other, person])
        codes = encoder(relight(torch.cat(views), torch.cat(lights)), owners)  # one pass for five views
        anchor, same_person, same_expression, same_light, other_light = (
            {k: v[i * batch : (i + 1) * batch] for k, v in codes.items()} for i in range(5)
        )
        people = person[:, None] == person[None]  # (B, B)
        loss = contrastive(anchor["identity"], same_person["identity"], people)
        loss = loss + contrastive(anchor["albedo"], same_person["albedo"], people)
        # a candidate whose expression is as near the anchor's as its own positive's is no negative
        gap = torch.cdist(expression[person, frame], expression[(person + 1) % n_people, donor])  # (B, B)
        alike = gap <= gap.diagonal()[:, None]
        loss = loss + contrastive(
            anchor["expression"], same_expression["expression"], alike, hard=same_person["expression"]
        )
        loss = loss + contrastive(
            anchor["illumination"], same_light["illumination"], hard=other_light["illumination"]
        )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(len(losses), losses[-1])
    return encoder.eval(), losses


@torch.no_grad()
def reference_codes(encoder: ReferenceEncoder, crops: torch.Tensor, train: torch.Tensor) -> dict:
    """The C_ref of Eq. 6 from face crops (P, T, 3, 48, 48): per person (P, D) for identity, albedo
    and illumination (the mean over training frames, made unit length again), per frame (P, T, D)
    for expression."""
    n_people, n_frames = crops.shape[:2]
    codes = {k: [] for k in CODES}
    for start in range(0, n_frames, 256):
        part = crops[:, start : start + 256]
        out = encoder(part.flatten(0, 1), torch.arange(n_people).repeat_interleave(part.shape[1]))
        for k in CODES:
            codes[k].append(out[k].reshape(n_people, -1, out[k].shape[-1]))
    codes = {k: torch.cat(v, 1) for k, v in codes.items()}
    per_person = {k: F.normalize(codes[k][:, train].mean(1), dim=-1) for k in CODES if k != "expression"}
    return {**per_person, "expression": codes["expression"]}


def disentangling_loss(model, references: dict, person: torch.Tensor, frame: torch.Tensor,
                       face_state: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Eq. 6 with every l_* = 1, each squared distance averaged over its code's dimensions: the
    people's codes against theirs, and the expression code of a batch's face states (B, K + 1)
    against the references of its frames (person, frame) (B,)."""
    own = {"identity": model.z_shape, "albedo": model.z_app, "illumination": model.z_light}
    loss = sum(((own[k] - references[k]) ** 2).mean() for k in own)
    target = references["expression"][person, frame]
    return loss + ((model.expression_code(face_state) - target) ** 2).mean()


PARAMETERS = {"identity": "z_shape", "albedo": "z_app", "illumination": "z_light"}


def expression_swap(model, frames, person: int, donor: int, frame_ids, device) -> dict:
    """`person` rendered at frames `frame_ids` (B,) with `donor`'s face state of the same frames: does
    the expression move and the identity stay?

    Returns the three renders (B, S, S, 3) ("own": the person's own state, "donor": the donor's own
    render, "swapped": the person with the donor's state), the mouths read off them ("mouth": the
    share of the tracked mouth box that is open mouth, `metrics.mouth_interior`, each in its own
    face's box; FaceMesh reads lips at 128 px too weakly, `nerf.evaluate.mouth_measures`) and the
    scores: "identity_shift", the mean distance of the `identity_indices` landmarks between the
    swapped and own renders in face widths (FaceMesh); "mouth_follows_donor" / "mouth_follows_own",
    the correlation over the frames of the swapped mouth with the donor's and with the own."""
    from minitalk import metrics
    from minitalk.nerf.render import render_images
    from minitalk.prepare.face import detect_landmarks, identity_indices, mouth_boxes

    t = torch.as_tensor(np.asarray(frame_ids)).long()
    mine, theirs = torch.full_like(t, person), torch.full_like(t, donor)
    state = model.face_state(*(x.to(device) for x in frames.face_state_inputs(theirs, t)))
    renders = {
        "own": render_images(model, frames, mine, t, device),
        "donor": render_images(model, frames, theirs, t, device),
        "swapped": render_images(model, frames, mine, t, device, face_state=state),
    }
    boxes = {p: mouth_boxes(frames.landmarks[p, t.numpy()], frames.size) for p in (person, donor)}
    mouth = {k: np.array([metrics.mouth_interior(img, box)
                          for img, box in zip(v, boxes[donor if k == "donor" else person], strict=True)])
             for k, v in renders.items()}  # fmt: skip
    marks = {k: detect_landmarks(to_uint8(renders[k])) for k in ("own", "swapped")}
    scores = {
        "identity_shift": metrics.lmd(marks["swapped"], marks["own"], identity_indices()),
        "mouth_follows_donor": metrics.correlation(mouth["swapped"], mouth["donor"]),
        "mouth_follows_own": metrics.correlation(mouth["swapped"], mouth["own"]),
    }
    return {"renders": renders, "mouth": mouth, "scores": scores}


def swap_frames(frames, donor: int, n: int) -> np.ndarray:
    """`n` held-out frames spread over the donor's tracked mouth opening, closed to wide open: the
    frames on which `expression_swap` can tell whether a mouth follows."""
    held = np.flatnonzero(frames.held_out[donor].numpy())
    order = held[np.argsort(frames.mouth[donor, held], kind="stable")]
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]


def colour_swap(model, frames, person: int, donor: int, frame_ids, code: str, device) -> dict:
    """`person` rendered with `donor`'s albedo or illumination code: the renders ("own", "swapped"),
    the landmarks' shift in face widths ("geometry_shift", all 478), and the mean colour change on
    the head's pixels in grey levels ("colour_change")."""
    from minitalk import metrics
    from minitalk.nerf.render import render_images
    from minitalk.prepare.face import detect_landmarks

    t = torch.as_tensor(np.asarray(frame_ids)).long()
    mine = torch.full_like(t, person)
    own = render_images(model, frames, mine, t, device)
    with swapped_code(model, code, person, donor):
        swapped = render_images(model, frames, mine, t, device)
    head = frames.labels[person, t].numpy().reshape(len(t), frames.size, frames.size) == 2
    change = np.abs(swapped - own).mean(-1)[head].mean() * 255
    shift = metrics.lmd(detect_landmarks(to_uint8(swapped)), detect_landmarks(to_uint8(own)))
    return {"renders": {"own": own, "swapped": swapped},
            "scores": {"geometry_shift": shift, "colour_change": float(change)}}  # fmt: skip


@contextmanager
def swapped_code(model, code: str, person: int, donor: int):
    """Within the block, `person` wears `donor`'s identity, albedo or illumination code; restored on
    exit. (An expression is swapped through the face state: `render_images(..., face_state=...)`.)"""
    if code not in PARAMETERS:
        raise ValueError(f"code {code!r}: one of {sorted(PARAMETERS)} (an expression is swapped "
                         "through its face state)")  # fmt: skip
    table = getattr(model, PARAMETERS[code])
    if table is None:
        raise ValueError(f"this model has no {code} code (trained with codes='person')")
    kept = table.data[person].clone()
    table.data[person] = table.data[donor]
    try:
        yield model
    finally:
        table.data[person] = kept
