"""A textured 3D head-and-shoulders avatar, ray-cast per pixel.

Each person of the sample is three ellipsoids seen by a fixed pinhole camera:
a head carrying a photographic face, a neck and a torso in clothes, in front of
a static background. A photo portrait is mapped onto the front of the head by
projecting along the head's depth axis; MediaPipe FaceMesh, run once on the
portrait, locates the face oval, eyes and mouth in it. Expressions are warps of
that texture: the jaw drops below the mouth line (opening a dark mouth
interior) and the upper eyelids slide down over the eyes for a blink.

Because the image is a function of (head pose, torso pose, mouth, blink) and
nothing else, a frame can be re-rendered exactly from the stored ground truth,
and head pose is well defined, as it is for a NeRF.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import matplotlib.cbook as cbook
import numpy as np
from PIL import Image
from skimage import data

from minitalk.camera import euler_to_matrix, intrinsic_matrix
from minitalk.prepare import face

TILE = 256  # pixels per person, square
FOCAL = 2.2 * TILE  # a ~26 degree field of view, a typical interview framing
SUPERSAMPLE = 2  # rays per pixel along each axis, averaged (anti-aliasing)
HEAD_RADII = np.array([0.080, 0.108, 0.095])  # metres
FACE_HALF_WIDTH = 0.066  # cheek to cheek, metres
CHIN_Y = 0.098  # the chin sits just above the bottom of the head ellipsoid
NECK_CENTRE, NECK_RADII = np.array([0.0, -0.13, 0.01]), np.array([0.050, 0.10, 0.048])
TORSO_CENTRE, TORSO_RADII = np.array([0.0, 0.12, 0.03]), np.array([0.21, 0.15, 0.11])
LIGHT = np.array([-0.4, -0.5, -0.75]) / np.linalg.norm([-0.4, -0.5, -0.75])
MOUTH_MAX_DROP = 0.5  # jaw drop at full opening, in mouth half-widths


def camera_matrix() -> np.ndarray:
    return intrinsic_matrix(FOCAL, TILE, TILE)


# --- the two people -------------------------------------------------------------------------


def load_portrait(name: str) -> np.ndarray:
    """The two public-domain portraits, (H, W, 3) uint8."""
    if name == "astronaut":
        return data.astronaut()
    if name == "grace_hopper":
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    raise ValueError(f"unknown portrait {name!r}")


@dataclass(frozen=True)
class Person:
    """What the renderer needs to know about one person."""

    front: np.ndarray  # (H, W, 3) float32 albedo atlas of the head's front, texture pixels
    back: np.ndarray  # same size: hair above the ears, skin below (the head's back)
    scale: float  # texture pixels per metre
    centre: tuple[float, float]  # texture pixel of the head centre
    mouth: tuple[float, float, float, float]  # u, v of the mouth line, half-width, distance to chin
    eyes: tuple[tuple[float, float, float, float], ...]  # u centre, upper lid v, lower lid v, half-width
    skin: np.ndarray  # (3,) float colours
    cloth: np.ndarray
    shirt: np.ndarray
    background: np.ndarray  # (TILE*SUPERSAMPLE, TILE*SUPERSAMPLE, 3) float32


PEOPLE = ("astronaut", "grace_hopper")
# clothes: main colour picked from the portrait at (u, v) fractions, and the shirt of the V-neck
CLOTH_AT = {"astronaut": ((0.15, 0.75), (0.5, 0.33)), "grace_hopper": ((0.2, 0.9), (0.5, 0.62))}


@functools.cache
def make_person(index: int) -> Person:
    """Build person 0 (left) or 1 (right) from its portrait, deterministically."""
    name = PEOPLE[index]
    img = load_portrait(name).astype(np.float32) / 255.0
    h, w = img.shape[:2]
    lm = face.detect_landmarks([load_portrait(name)])[0]
    if np.isnan(lm).any():
        raise RuntimeError(f"FaceMesh found no face in the {name} portrait")
    lm = np.round(lm[:, :2].astype(np.float64), 1)  # (478, 2) pixels

    cheek_l, cheek_r = lm[face.CHEEKS[0]], lm[face.CHEEKS[1]]
    scale = float(np.linalg.norm(cheek_r - cheek_l) / (2 * FACE_HALF_WIDTH))
    chin = lm[face.CHIN]
    centre = ((cheek_l[0] + cheek_r[0]) / 2, chin[1] - CHIN_Y * scale)

    # colours sampled from the photo: skin on the cheeks, hair above the forehead, clothes
    def patch(uv, r=4):
        u, v = int(uv[0]), int(uv[1])
        return np.median(img[v - r : v + r, u - r : u + r].reshape(-1, 3), axis=0)

    skin = np.median([patch(0.55 * lm[face.CHEEKS[i]] + 0.45 * lm[4]) for i in (0, 1)], axis=0)
    top = lm[face.FOREHEAD]
    hair = patch((top[0], top[1] - 0.12 * (chin[1] - top[1])))
    (cu, cv), (su, sv) = CLOTH_AT[name]
    cloth, shirt = patch((cu * w, cv * h), 8), patch((su * w, sv * h), 3)

    # the head's front atlas: the photo inside the (slightly grown) face oval, hair or skin outside
    oval = lm[face.face_oval_indices()]
    mid = oval.mean(axis=0)
    grown = (mid + 1.04 * (oval - mid)).astype(np.int32)
    matte = np.zeros((h, w), np.float32)
    cv2.fillPoly(matte, [grown], 1.0)
    matte = cv2.GaussianBlur(matte, (0, 0), 0.015 * scale)[..., None]
    rng = np.random.default_rng(index)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5)
    ear_v = lm[4][1]  # below the nose tip the sides of the head are skin
    below = 1 / (1 + np.exp(-(np.arange(h, dtype=np.float32) - ear_v) / (0.01 * scale)))
    back = hair * (1 - below[:, None, None]) + 0.85 * skin * below[:, None, None]
    back = back * (1 + 0.12 * grain[..., None] * (1 - below[:, None, None]))
    front = matte * img + (1 - matte) * back

    def eye(idx):
        outer, inner, up, low = (lm[i] for i in idx)
        return ((outer[0] + inner[0]) / 2, up[1], low[1], abs(inner[0] - outer[0]) / 2)

    c0, c1 = lm[face.MOUTH_CORNERS[0]], lm[face.MOUTH_CORNERS[1]]
    v_mouth = (lm[face.LIP_UPPER_INNER][1] + lm[face.LIP_LOWER_INNER][1]) / 2
    mouth = ((c0[0] + c1[0]) / 2, v_mouth, abs(c1[0] - c0[0]) / 2, chin[1] - v_mouth)
    return Person(
        front.astype(np.float32),
        back.astype(np.float32),
        scale,
        centre,
        mouth,
        tuple(eye(e) for e in face.EYES),
        skin,
        cloth,
        shirt,
        make_background(index),
    )


def make_background(index: int) -> np.ndarray:
    """A static, softly lit room wall with a few blurred shapes, one per person."""
    n = TILE * SUPERSAMPLE
    rng = np.random.default_rng(100 + index)
    wall = (np.array([0.55, 0.62, 0.70]), np.array([0.74, 0.68, 0.58]))[index]
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    img = wall * (0.8 + 0.25 * (1 - y[..., None]) - 0.1 * (x[..., None] - 0.5) ** 2)
    for _ in range(5):
        x0, y0 = rng.uniform(0.0, 0.85, 2)
        wx, wy = rng.uniform(0.1, 0.35, 2)
        colour = rng.uniform(0.2, 0.9, 3)
        box = (x > x0) & (x < x0 + wx) & (y > y0) & (y < y0 + wy)
        img[box] = 0.5 * img[box] + 0.5 * colour
    return cv2.GaussianBlur(img.astype(np.float32), (0, 0), 3.0 * SUPERSAMPLE)


# --- ray casting ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def pixel_rays() -> np.ndarray:
    """Unit ray directions (n, n, 3) in camera coordinates, SUPERSAMPLE^2 per pixel."""
    n = TILE * SUPERSAMPLE
    centres = (np.arange(n) + 0.5) / SUPERSAMPLE  # sub-pixel centres in pixel units
    u, v = np.meshgrid(centres, centres)
    intrinsics = camera_matrix()
    d = np.stack(
        [
            (u - intrinsics[0, 2]) / intrinsics[0, 0],
            (v - intrinsics[1, 2]) / intrinsics[1, 1],
            np.ones_like(u),
        ],
        -1,
    )
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def hit_ellipsoid(rays_d, rot, t, centre, radii):
    """Nearest hit of camera rays (origin 0) with an ellipsoid placed by (rot, t).

    Returns the ray distance (inf on a miss) and the hit point in the
    ellipsoid's own frame (centred). Solves |o' + s d'|^2 = 1 in the frame where
    the ellipsoid is the unit sphere.
    """
    o = (-(rot.T @ t) - centre) / radii  # ray origin in unit-sphere coordinates, (3,)
    d = (rays_d @ rot) / radii  # rays_d @ rot == (rot.T @ d) per ray, (n, n, 3)
    a = np.einsum("...i,...i->...", d, d)
    b = 2.0 * d @ o
    c = o @ o - 1.0
    disc = b * b - 4 * a * c
    s = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    s = np.where((disc > 0) & (s > 0), s, np.inf)
    local = (o + np.where(np.isfinite(s), s, 0.0)[..., None] * d) * radii
    return s, local


def shade(normal_local, rot, radii) -> np.ndarray:
    """Lambertian shading factor from an ellipsoid point's normal, (n, n, 1)."""
    n = (normal_local / radii**2) @ rot.T
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    return (0.72 + 0.38 * np.clip(n @ LIGHT, 0.0, 1.0))[..., None]


# --- expressions as texture warps -----------------------------------------------------------


def warp_mouth(u, v, mouth_param, opening: float):
    """Drop the jaw: below the mouth line the texture slides down, compressed toward the chin.

    Returns the source rows to sample and a mask of the opened mouth's interior.
    """
    um, vm, half_w, to_chin = mouth_param
    x = np.clip((u - um) / (1.3 * half_w), -1.0, 1.0)
    gap = opening * MOUTH_MAX_DROP * half_w * np.cos(0.5 * np.pi * x) ** 2
    below = v - vm
    inside = (below >= 0) & (below < gap)
    jaw = (below >= gap) & (below < to_chin)
    src = np.where(jaw, vm + (below - gap) * to_chin / np.maximum(to_chin - gap, 1e-6), v)
    return src, inside, np.clip(below / np.maximum(gap, 1e-6), 0.0, 1.0)


def eyelids(u, v, eyes, closure: float, lash_width: float):
    """Upper lids lowered over the eyes by `closure` (0 open .. 1 shut).

    Returns where the lid covers the eye, a shading of the lid (darker toward
    its edge) and the dark lash line along its lower edge, all (n, n).
    """
    lid = np.zeros(v.shape, bool)
    lid_shade = np.ones_like(v)
    lash = np.zeros_like(v)
    if closure <= 0:
        return lid, lid_shade, lash
    for uc, v_up, v_low, half_w in eyes:
        x = (u - uc) / (1.15 * half_w)
        arc = np.sqrt(np.clip(1 - x * x, 0.0, 1.0))  # the lid's curve across the eye
        top = v_up - 0.2 * (v_low - v_up) - 0.5
        bottom = v_low + 0.2 * (v_low - v_up) + 0.5
        edge = top + closure * (bottom - top) * arc  # the lid's lower edge
        here = (v >= top) & (v < edge) & (arc > 0)
        lid |= here
        lid_shade = np.where(here, 0.97 - 0.12 * (v - top) / np.maximum(edge - top, 1e-6), lid_shade)
        line = np.exp(-(((v - edge) / lash_width) ** 2)) * arc * min(1.0, 2 * closure)
        lash = np.maximum(lash, 0.6 * line)
    return lid, lid_shade, lash


# --- one person, one frame ------------------------------------------------------------------


def render_person(index: int, pose, torso_pose, mouth: float, blink: float) -> np.ndarray:
    """Person `index` as a (TILE, TILE, 3) uint8 image."""
    person = make_person(index)
    rays = pixel_rays()
    head_rot, head_t = euler_to_matrix(*pose[:3]), np.asarray(pose[3:], np.float64)
    body_rot, body_t = euler_to_matrix(*torso_pose[:3]), np.asarray(torso_pose[3:], np.float64)
    s_head, p_head = hit_ellipsoid(rays, head_rot, head_t, np.zeros(3), HEAD_RADII)
    s_neck, p_neck = hit_ellipsoid(rays, body_rot, body_t, NECK_CENTRE, NECK_RADII)
    s_body, p_body = hit_ellipsoid(rays, body_rot, body_t, TORSO_CENTRE, TORSO_RADII)
    nearest = np.argmin(np.stack([s_head, s_neck, s_body, np.full_like(s_head, 1e9)]), axis=0)

    # head: texture coordinates by projecting along the head's depth axis, then the warps
    u = person.centre[0] + p_head[..., 0] * person.scale
    v = person.centre[1] + p_head[..., 1] * person.scale
    v_src, interior, depth_in_mouth = warp_mouth(u, v, person.mouth, mouth)
    lid, lid_shade, lash = eyelids(u, v, person.eyes, blink, 0.0025 * person.scale)
    mu, mv = u.astype(np.float32), v_src.astype(np.float32)
    front = cv2.remap(person.front, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    back = cv2.remap(person.back, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    head = np.where((p_head[..., 2] < 0)[..., None], front, back)
    mouth_colour = np.array([0.30, 0.08, 0.08]) * (1 - 0.5 * depth_in_mouth)[..., None]
    teeth = (depth_in_mouth < 0.22)[..., None] & (mouth > 0.25)
    mouth_colour = np.where(teeth, np.array([0.86, 0.83, 0.76]), mouth_colour)
    head = np.where((interior & (p_head[..., 2] < 0))[..., None], mouth_colour, head)
    head = np.where(lid[..., None], person.skin * lid_shade[..., None], head)
    head = head * (1 - lash[..., None]) * shade(p_head, head_rot, HEAD_RADII)

    neck = person.skin * 0.9 * shade(p_neck - NECK_CENTRE, body_rot, NECK_RADII)
    x, y, z = (p_body[..., i] + TORSO_CENTRE[i] for i in range(3))
    vneck = (z < TORSO_CENTRE[2]) & (np.abs(x) < 0.6 * (0.06 - y))
    fabric = 1 + 0.05 * np.sin(45 * x + 12 * y)
    body = np.where(vneck[..., None], person.shirt, person.cloth * fabric[..., None])
    body = body * shade(p_body, body_rot, TORSO_RADII)

    layers = np.stack([head, neck, body, person.background])  # (4, n, n, 3)
    img = np.take_along_axis(layers, nearest[None, ..., None], axis=0)[0]
    img = img.reshape(TILE, SUPERSAMPLE, TILE, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def render_frame(pose, torso_pose, mouth, blink) -> np.ndarray:
    """Both people side by side (TILE, 2*TILE, 3) uint8 from per-person arrays of length 2."""
    return np.concatenate(
        [render_person(p, pose[p], torso_pose[p], float(mouth[p]), float(blink[p])) for p in (0, 1)],
        axis=1,
    )
