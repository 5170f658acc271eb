import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from minitalk.camera import (
    camera_to_head,
    euler_to_matrix,
    head_rays_torch,
    intrinsic_matrix,
    matrix_to_euler,
    project,
)

angles = st.tuples(st.floats(-80, 80), st.floats(-85, 85), st.floats(-170, 170))


@given(angles)
def test_euler_round_trip(a):
    rot = euler_to_matrix(*a)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(rot), 1.0)
    np.testing.assert_allclose(matrix_to_euler(rot), a, atol=1e-6)


def test_euler_batches_like_single_calls():
    a = np.random.default_rng(0).uniform(-40, 40, (5, 3))
    batch = euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])
    for i in range(5):
        np.testing.assert_allclose(batch[i], euler_to_matrix(*a[i]))


def test_sign_conventions():
    facing = np.array([0.0, 0.0, -1.0])  # the face's normal points at the camera
    assert (euler_to_matrix(10, 0, 0) @ facing)[1] > 0  # pitch > 0: face tilts down (nod)
    assert (euler_to_matrix(0, 10, 0) @ facing)[0] < 0  # yaw > 0: face turns to image left
    assert (euler_to_matrix(0, 0, 10) @ np.array([1.0, 0, 0]))[1] > 0  # roll > 0: clockwise


@given(angles, st.tuples(*[st.floats(-1, 1)] * 3))
def test_camera_to_head_inverts_the_pose(a, t):
    pose = np.array([*a, *t])
    rot = euler_to_matrix(*a)
    x_head = np.array([0.03, -0.05, 0.02])
    x_cam = rot @ x_head + np.array(t)
    back = camera_to_head(pose) @ np.append(x_cam, 1.0)
    np.testing.assert_allclose(back[:3], x_head, atol=1e-9)


@given(angles, st.tuples(*[st.floats(-1, 1)] * 3))
def test_head_rays_torch_is_the_camera_of_camera_to_head(a, t):
    pose = np.array([*a, *t])
    d_cam = np.array([[0.1, -0.2, 1.0], [0.0, 0.0, 1.0]])
    o, d = head_rays_torch(torch.tensor(np.stack([pose, pose])), torch.tensor(d_cam))
    c2w = camera_to_head(pose)
    np.testing.assert_allclose(o.numpy(), np.stack([c2w[:3, 3]] * 2), atol=1e-9)
    np.testing.assert_allclose(d.numpy(), d_cam @ c2w[:3, :3].T, atol=1e-9)


def test_project_principal_point():
    intrinsics = intrinsic_matrix(500.0, 256, 200)
    np.testing.assert_allclose(project(np.array([0.0, 0.0, 2.0]), intrinsics), [128, 100])
    np.testing.assert_allclose(project(np.array([0.2, 0.0, 2.0]), intrinsics), [178, 100])
