"""Metric functions against known cases."""

from __future__ import annotations

import numpy as np
import pytest

from minitalk import metrics


def test_ssim_of_an_image_with_itself_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert metrics.ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
    assert (
        metrics.ssim(img, noisy) < metrics.ssim(img, np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)) < 1
    )


def test_mouth_interior_is_the_share_of_the_box_far_darker_than_its_median():
    rng = np.random.default_rng(0)
    image = np.full((20, 30, 3), [200.0, 150.0, 130.0]) + rng.uniform(-10, 10, (20, 30, 3))  # skin
    box = np.zeros((20, 30), bool)
    box[5:15, 5:25] = True  # 200 pixels
    assert metrics.mouth_interior(image, box) == 0.0
    image[9:12, 8:20] = [40.0, 20.0, 20.0]  # an open mouth of 36 pixels inside the box
    image[0:3, 0:30] = 0.0  # dark, but outside the box
    assert metrics.mouth_interior(image, box) == pytest.approx(36 / 200)
    assert metrics.mouth_interior(image * 0.3, box) == pytest.approx(36 / 200)  # darker skin, same reading
    with pytest.raises(ValueError, match="empty"):
        metrics.mouth_interior(image, np.zeros((20, 30), bool))


# --- pose metrics ---


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 3))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shifted = x + np.array([1.0, 2.0, 0.0])
    assert metrics.frechet_distance(x, shifted) == pytest.approx(5.0, rel=1e-6)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    a, b = rng.normal(0, 1, (50000, 1)), rng.normal(1, 3, (50000, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-9)


def test_pose_metrics_units():
    a = np.zeros((10, 6))
    b = a.copy()
    b[:, 0] = 180 / np.pi  # one radian of pitch
    assert metrics.pose_l1(a, b) == pytest.approx(1 / 6)
    assert metrics.correlation(np.ones(5), np.arange(5)) == 0.0
