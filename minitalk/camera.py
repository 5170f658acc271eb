"""Head pose and pinhole camera conventions shared by the whole project.

Camera coordinates follow OpenCV: x right, y down, z forward (into the scene).
A head pose is six numbers `(pitch, yaw, roll, tx, ty, tz)`:

* the rotation R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in degrees, takes
  head coordinates to camera coordinates; pitch > 0 tilts the face down
  (a nod), yaw > 0 turns it toward the image's left, roll > 0 tilts it clockwise
  in the image;
* the translation t (metres) is the head origin in camera coordinates, so a
  head point x maps to the camera point R @ x + t.

Rendering with a NeRF inverts this (AD-NeRF, DialogueNeRF IV-B): the head stays
in a canonical box and the camera moves by the inverse pose, see `camera_to_head`.
"""

from __future__ import annotations

import numpy as np
import torch


def euler_to_matrix(pitch, yaw, roll) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from Euler angles in degrees."""
    p, y, r = (np.deg2rad(np.asarray(a, dtype=np.float64)) for a in (pitch, yaw, roll))
    cp, sp, cy, sy, cr, sr = np.cos(p), np.sin(p), np.cos(y), np.sin(y), np.cos(r), np.sin(r)
    one, zero = np.ones_like(cp), np.zeros_like(cp)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(*cp.shape, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*cp.shape, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(*cp.shape, 3, 3)
    return rz @ ry @ rx


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """Inverse of `euler_to_matrix`: (..., 3, 3) -> (..., 3) pitch, yaw, roll in degrees.

    Unique for |yaw| < 90 degrees, which covers every head pose a face tracker sees.
    """
    rot = np.asarray(rot, dtype=np.float64)
    yaw = np.arcsin(np.clip(-rot[..., 2, 0], -1.0, 1.0))
    pitch = np.arctan2(rot[..., 2, 1], rot[..., 2, 2])
    roll = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])
    return np.rad2deg(np.stack([pitch, yaw, roll], -1))


def pose_to_rt(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 6) pose -> rotation (..., 3, 3) and translation (..., 3)."""
    pose = np.asarray(pose, dtype=np.float64)
    return euler_to_matrix(pose[..., 0], pose[..., 1], pose[..., 2]), pose[..., 3:6]


def camera_to_head(pose: np.ndarray) -> np.ndarray:
    """4x4 camera-to-head transforms (..., 4, 4): the camera moving around a fixed head."""
    rot, t = pose_to_rt(pose)
    out = np.zeros((*rot.shape[:-2], 4, 4))
    rt = np.swapaxes(rot, -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """`euler_to_matrix` in torch, differentiable: (N, 3) pitch, yaw, roll in degrees -> (N, 3, 3)."""
    a = torch.deg2rad(angles)
    (cp, cy, cr), (sp, sy, sr) = a.cos().unbind(-1), a.sin().unbind(-1)
    one, zero = torch.ones_like(cp), torch.zeros_like(cp)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def head_rays_torch(pose, d_cam):
    """Differentiable in the pose: ray origins and directions (N, 3) in the head frame for camera
    directions d_cam (N, 3) under head poses (N, 6), as `camera_to_head` places them."""
    rt = rotation_matrices(pose[:, :3]).transpose(1, 2)  # head -> camera, inverted
    return -(rt @ pose[:, 3:, None])[..., 0], (rt @ d_cam[..., None])[..., 0]


def focal_from_fov(width: float, fov_deg: float) -> float:
    """Focal length in pixels of a pinhole camera `width` pixels wide with a horizontal field of view."""
    return width / (2.0 * np.tan(np.deg2rad(fov_deg) / 2.0))


def intrinsic_matrix(focal: float, width: int, height: int) -> np.ndarray:
    """3x3 pinhole matrix with square pixels and the principal point at the centre."""
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Camera points (..., 3) -> pixel coordinates (..., 2)."""
    uvw = points @ np.asarray(intrinsics).T
    return uvw[..., :2] / uvw[..., 2:3]
