"""The 2D neural renderer: feature maps composited like colours, a CNN that starts as bilinear
upsampling over a sharp background, patch training, and sizes it refuses."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import TINY

from minitalk.nerf import render, train
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.nerf.upsampler import NeuralRenderer
from minitalk.utils import SettingError, in_background


def test_an_untrained_upsampler_enlarges_the_person_bilinearly_over_the_sharp_background():
    """Zero-initialised corrections: I_S = up(P) + (1 - up(A)) c_bg,S exactly."""
    torch.manual_seed(0)
    b, c, s, u = 2, 8, 6, 4
    opacity = torch.rand(b, 1, s, s)
    person = torch.rand(b, 3, s, s) * opacity  # premultiplied
    background, background_low = torch.rand(b, 3, s * u, s * u), torch.rand(b, 3, s, s)
    feat = torch.cat([person + (1 - opacity) * background_low, torch.rand(b, c - 3, s, s)], 1)
    image = NeuralRenderer(c, u)(feat, opacity, background, background_low)
    up = F.interpolate(torch.cat([person, opacity], 1), scale_factor=u, mode="bilinear")
    torch.testing.assert_close(image, up[:, :3] + (1 - up[:, 3:]) * background)


def test_where_nothing_is_opaque_the_image_is_the_full_size_plate():
    s, u = 5, 2
    background, background_low = torch.rand(1, 3, s * u, s * u), torch.rand(1, 3, s, s)
    feat = F.pad(background_low, (0, 0, 0, 0, 0, 1))  # empty rays: the plate's colour, zero features
    image = NeuralRenderer(4, u)(feat, torch.zeros(1, 1, s, s), background, background_low)
    torch.testing.assert_close(image, background)


@pytest.mark.parametrize("factor", [0, 3, 16])
def test_a_factor_that_is_not_a_power_of_two_up_to_eight_is_refused(factor):
    with pytest.raises(SettingError, match="upsample"):
        DialogueNeRFConfig(upsample=factor)


def test_patches_cover_the_same_square_at_both_sizes(tensors):
    """Each feature-map pixel of a patch sits over the u x u block of image pixels at the same place."""
    torch.manual_seed(1)
    u, side, size = 2, 8, tensors.size
    person, frame = torch.tensor([0, 1, 1]), torch.tensor([3, 7, 20])
    low, high = train.patch_pixels(tensors, person, frame, side, u)
    assert low.shape == (3, side, side) and high.shape == (3, side * u, side * u)
    ly, lx = torch.div(low, size // u, rounding_mode="floor"), low % (size // u)
    hy, hx = torch.div(high, size, rounding_mode="floor"), high % size
    assert torch.equal(torch.div(hy, u, rounding_mode="floor")[:, ::u, ::u], ly)
    assert torch.equal(torch.div(hx, u, rounding_mode="floor")[:, ::u, ::u], lx)
    assert (ly.max() < size // u) and (lx.min() >= 0)  # inside the image, however near the edge


def test_patches_are_centred_where_the_weights_draw_pixels(tensors):
    """Patch centres follow the one pixel-weight rule: a head pixel four times as often as another,
    a mouth pixel sixteen times, so the head and the mouth fill far more of the patches than of the frame."""
    from minitalk.prepare.masks import HEAD

    torch.manual_seed(0)
    n = 4000
    person, frame = torch.zeros(n, dtype=torch.long), torch.full((n,), 5)
    low, high = train.patch_pixels(tensors, person, frame, 2, 2)  # 4 x 4 image pixels around each centre
    head = tensors.labels[0, 5] == HEAD
    weights = tensors.pixel_weights(person[:1], frame[:1])[0]
    expected = (weights * head).sum() / weights.sum()  # the share of centres on the head
    drawn = head[high.reshape(n, -1)].float().mean()
    assert head.float().mean() < 0.5 * expected and abs(drawn - expected) < 0.05, (drawn, expected)


def test_a_neural_renderer_trains_renders_any_multiple_of_its_factor_and_refuses_others(
    prepared_clip, tmp_path, tiny_model, tensors
):
    config = DialogueNeRFConfig(head_samples=8, torso_samples=4, upsample=2, feature_channels=8)
    report = train.train(prepared_clip, tmp_path / "run", config, progress=False, iters=3, **TINY)
    assert np.isfinite(report["psnr"]).all()
    model = tiny_model(tensors, upsample=2, feature_channels=8).eval()
    cpu = torch.device("cpu")
    for size in (tensors.size, 2 * tensors.size):
        image = render.render_frame(model, tensors, 1, 4, cpu, size=size)
        assert image.shape == (size, size, 3) and 0 <= image.min() and image.max() <= 1
    # a batch of images is the images one at a time
    batch = render.render_images(model, tensors, [0, 1], [4, 4], cpu)
    np.testing.assert_allclose(batch[1], render.render_frame(model, tensors, 1, 4, cpu), atol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        render.render_frame(model, tensors, 1, 4, cpu, size=tensors.size + 1)


def test_training_refuses_sizes_the_factor_cannot_divide_and_patches_that_do_not_fit(prepared_clip, tmp_path):
    cfg = train.TrainConfig()
    with pytest.raises(train.TrainingError, match="multiple of 8"):
        train.check_neural_renderer("prepared", 100, DialogueNeRFConfig(upsample=8), cfg)
    with pytest.raises(SettingError, match="rays_per_frame"):  # 16 x 16 patches in a 12 x 12 feature map
        train.check_neural_renderer("prepared", 96, DialogueNeRFConfig(upsample=8), cfg)
    with pytest.raises(SettingError, match="rays_per_frame"):  # not a square
        train.train(prepared_clip, tmp_path / "b", DialogueNeRFConfig(upsample=2), progress=False, iters=1,
                    **{**TINY, "rays_per_frame": 60})  # fmt: skip


def test_in_background_yields_everything_in_order_and_hands_on_the_producers_error():
    assert list(in_background(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(in_background(failing()))

    def endless():
        i = 0
        while True:
            yield i
            i += 1

    for item in in_background(endless(), depth=2):
        if item == 5:
            break  # the consumer stops early: the producer is told to stop, not left running
    assert not any(t.name == "minitalk-producer" and t.is_alive() for t in threading.enumerate())
