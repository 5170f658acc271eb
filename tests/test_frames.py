"""A prepared folder as tensors: cameras from each frame's pose, the torso's condition, mouth boxes."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minitalk import metrics
from minitalk.nerf.frames import held_out_frames, pose_condition
from minitalk.prepare.face import mouth_boxes


def test_each_frame_is_seen_from_its_own_pose(tensors, prepared_clip):
    """Cameras come from the frame's own PnP pose, which fits its landmarks better than the
    smoothed track does."""
    from minitalk import camera
    from minitalk.prepare import data
    from minitalk.prepare.headpose import RIGID

    tracks = data.load_tracks(prepared_clip)
    own = camera.camera_to_head(tracks["pose_raw"].astype(np.float64))
    np.testing.assert_allclose(tensors.c2w.numpy(), own, atol=1e-5)

    def reprojection_px(pose, p):
        rot, trans = camera.pose_to_rt(pose.astype(np.float64))  # (T, 3, 3), (T, 3)
        points = np.einsum("tij,nj->tni", rot, tracks["face3d"][p][list(RIGID)]) + trans[:, None]
        uv = camera.project(points, tracks["intrinsics"][p])
        return np.linalg.norm(uv - tracks["landmarks"][p][:, list(RIGID), :2], axis=-1).mean()

    for p in range(2):
        assert reprojection_px(tracks["pose_raw"][p], p) < reprojection_px(tracks["pose"][p], p)


def test_the_torso_sees_where_the_head_has_been(tensors, tiny_model):
    """The trailing pose is a causal low-pass: untouched by the future, 1 - 1/e of a step after lag_s."""
    fps, lag = 25.0, 0.5
    pose = np.zeros((1, 100, 6))
    pose[:, 50:, 1] = 30.0  # a 30-degree turn at frame 50
    et = pose_condition(pose, fps, lag)
    assert et.shape == (1, 100, 12) and np.array_equal(et[..., :6], pose_condition(pose, fps, 0.0))
    trail = et[0, :, 6 + 1]
    assert np.all(trail[:50] == 0.0) and np.all(np.diff(trail[50:]) > 0)
    np.testing.assert_allclose(trail[50 + int(fps * lag) - 1], 1 - np.exp(-1), atol=0.02)

    model = tiny_model(tensors).eval()  # and the torso field reads it: two histories, two torsos
    unit, ray_of = torch.rand(64, 3) * 2 - 1, torch.zeros(64, dtype=torch.long)
    still, turning = torch.zeros(1, 12), torch.zeros(1, 12)
    turning[0, 6 + 1] = 1.0
    person = torch.tensor([0])
    colour = [model.torso(unit, person, history, ray_of)[1] for history in (still, turning)]
    assert not torch.allclose(*colour)


def test_mouth_boxes_hold_the_lips_and_little_else(tensors):
    from minitalk.prepare.face import LIP_LOWER_INNER, LIP_UPPER_INNER, MOUTH_CORNERS

    landmarks = tensors.landmarks
    boxes = mouth_boxes(landmarks, tensors.size)
    assert boxes.shape == (2, tensors.n_frames, tensors.size, tensors.size)
    share = boxes.mean(axis=(2, 3))
    assert (share > 0).all() and (share < 0.1).all()
    for p, t in [(0, 5), (1, 100)]:
        for i in (*MOUTH_CORNERS, LIP_UPPER_INNER, LIP_LOWER_INNER):
            x, y = np.floor(landmarks[p, t, i, :2]).astype(int)
            assert boxes[p, t, y, x], (p, t, i)


def test_training_draws_head_and_mouth_pixels_by_the_one_weight_rule(tensors):
    from minitalk.nerf.rays import pixel_weights
    from minitalk.prepare.masks import HEAD

    person, frame = torch.tensor([0, 1, 1]), torch.tensor([3, 3, 40])
    weights = tensors.pixel_weights(person, frame)
    assert weights.shape == (3, tensors.size**2) and weights.dtype == torch.float32
    for row, (p, t) in enumerate(zip(person.tolist(), frame.tolist(), strict=True)):
        head = tensors.labels[p, t].numpy() == HEAD
        mouth = mouth_boxes(tensors.landmarks[p, t], tensors.size).reshape(-1)
        expected = pixel_weights(head, mouth, tensors.face_weight, tensors.mouth_weight)
        np.testing.assert_array_equal(weights[row].numpy(), expected)
        assert set(np.unique(expected)) <= {1.0, 4.0, 16.0} and (expected[mouth & head] == 16).all()


def test_mouth_interior_follows_the_true_opening_on_the_real_frames(tensors, sample_dir):
    """On the 64x64 clip, every speaking frame (0.90 / 0.65 for person 0 / 1 when written)."""
    with np.load(sample_dir / "dialogue_gt.npz") as z:
        truth = z["mouth"][:, : tensors.n_frames]
    for p in range(2):
        speaking = np.nonzero(tensors.speaking[p].numpy())[0]
        read = [
            metrics.mouth_interior(
                tensors.images[p, t].numpy(), mouth_boxes(tensors.landmarks[p, t], tensors.size)
            )
            for t in speaking
        ]
        assert len(speaking) > 50 and metrics.correlation(read, truth[p, speaking]) > 0.5, p


@settings(max_examples=60, deadline=None)
@given(n_frames=st.integers(2, 2000), fps=st.sampled_from([24.0, 25.0, 29.97, 30.0]),
       held_out_s=st.floats(0.2, 2.0), every_s=st.floats(2.5, 20.0))  # fmt: skip
def test_every_clip_holds_out_some_frames_and_trains_on_most(n_frames, fps, held_out_s, every_s):
    held = held_out_frames(n_frames, fps, held_out_s, every_s)
    assert held.any() and not held.all()
    if n_frames / fps >= every_s:  # the last held_out_s of every every_s, in one block per period
        t = np.arange(n_frames) / fps
        np.testing.assert_array_equal(held, (t % every_s) >= every_s - held_out_s)
    else:  # shorter than one period: its last tenth
        assert held[-1] and np.flatnonzero(held)[0] == n_frames - held.sum()
        assert held.sum() == max(1, round(0.1 * n_frames))


def test_chosen_moments_are_held_out_besides_the_rule():
    held = held_out_frames(250, 25.0, 1.0, 10.0, at_s=(2.0, 4.5))
    expected = np.zeros(250, bool)
    expected[50:75] = expected[113:138] = expected[225:] = True  # [2, 3) s, [4.5, 5.5) s, the last second
    np.testing.assert_array_equal(held, expected)


def test_the_seam_band_lies_where_head_meets_torso_and_scores_only_there():
    """A head square on a torso square: the band holds the rows around their boundary only, an
    error away from it leaves the seam error at zero, and one on it is read in grey levels."""
    from minitalk.nerf.evaluate import region_scores, seam_band
    from minitalk.prepare.masks import HEAD, TORSO

    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, 10:30, 20:44] = HEAD
    labels[0, 30:60, 8:56] = TORSO
    band = seam_band(labels, width=2)
    rows = np.flatnonzero(band[0].any(axis=1))
    assert rows.min() == 28 and rows.max() == 31  # 2 rows of head above the boundary, 2 of torso below
    real = np.full((1, 64, 64, 3), 0.5, np.float32)
    fake = real.copy()
    fake[0, 50:] += 0.2  # the bottom of the torso only
    scores = region_scores(fake, real, labels)
    assert scores["seam_error"] == 0 and np.isfinite(scores["torso_psnr"])
    fake[0, 29:31] = 0.5 + 10 / 255  # both seam rows, ten grey levels off
    assert abs(region_scores(fake, real, labels)["seam_error"] - 10 * 2 / 4) < 1e-3  # half the band's rows
