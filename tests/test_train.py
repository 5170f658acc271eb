"""DialogueNeRF: the model's pieces, and training on a prepared clip (tiny budgets: behaviour only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minitalk import metrics, render, train
from minitalk.dialogue_nerf import AudioEncoder, DialogueNeRF, DialogueNeRFConfig, visible_samples
from minitalk.encoding import Frequency, TriPlane

TINY = dict(  # a few small steps: enough to exercise every path
    frames_per_batch=4,
    rays_per_frame=64,
    eval_frames=2,
    checkpoint_every=3,
    occupancy_warmup=2,
    occupancy_every=2,
    eval_every=10**6,
)


@pytest.fixture(scope="module")
def tensors(prepared_clip):
    return train.Frames(prepared_clip)


def tiny_model(frames, **overrides):
    torch.manual_seed(0)
    config = DialogueNeRFConfig(head_samples=8, torso_samples=4, grid_res=16, **overrides)
    return DialogueNeRF(config, frames.head_box, frames.torso_boxes)


def test_encodings_have_their_sizes_and_gradients():
    x = torch.rand(5, 7, 3, requires_grad=True) * 2 - 1
    tri = TriPlane(levels=3, features=2, min_res=4, max_res=16)
    assert tri(x).shape == (5, 7, tri.out_dim) and tri.out_dim == 3 * 3 * 2
    tri(x).sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in tri.grids)
    assert Frequency(4)(x).shape == (5, 7, 3 * 9)


def test_the_condition_follows_the_role(tensors):
    frames = tensors
    """Speaker frames use the audio feature and ignore the expression; listener frames the reverse."""
    model = tiny_model(frames)
    person, frame = torch.tensor([0, 0]), torch.tensor([10, 10])
    mel, exp, blink, _ = frames.condition_inputs(person, frame)
    roles = torch.tensor([True, False])
    base = model.condition(mel, exp, blink, roles)
    other_exp = model.condition(mel, exp + 1.0, blink, roles)
    other_mel = model.condition(mel + 1.0, exp, blink, roles)
    assert torch.equal(base[0], other_exp[0]) and not torch.equal(base[1], other_exp[1])
    assert torch.equal(base[1], other_mel[1]) and not torch.equal(base[0], other_mel[0])


def test_the_audio_smoothing_can_keep_to_the_frames_own_window():
    """Windows of independent noise, the target read off the middle one (the frame's own): the
    attention has only the window position to go by, and the encoder learns the target."""
    torch.manual_seed(0)
    enc = AudioEncoder(cond_dim=4, windows=8)
    head = torch.nn.Linear(4, 1)
    optim = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)

    def batch(n):
        mel = torch.randn(n, 8, 16, 80)
        return mel, mel[:, 4, 6:10, :20].mean(dim=(1, 2)) * 10  # offset 0 of windows -4..3

    for _ in range(150):
        mel, target = batch(32)
        loss = ((head(enc(mel))[:, 0] - target) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    mel, target = batch(256)
    with torch.no_grad():
        r = torch.corrcoef(torch.stack([head(enc(mel))[:, 0], target]))[0, 1]
        weight = torch.softmax(enc.position, 0)
    assert r > 0.9, r
    assert int(weight.argmax()) == 4 and weight[4] > 0.5, weight


def test_latent_codes_separate_the_people(tensors):
    """The same rays rendered as person 0 and as person 1 differ through the latent codes alone."""
    frames = tensors
    model = tiny_model(frames).eval()
    pixel = torch.arange(0, frames.size * frames.size, 7)
    rays0 = frames.rays(torch.zeros_like(pixel), torch.full_like(pixel, 20), pixel)
    rays1 = {**rays0, "person": torch.ones_like(pixel)}
    cond = torch.zeros(len(pixel), model.config.n_expression + 1)

    def head(rays):
        return model.render_rays(rays, cond, jitter=False, parts=True)["head"]

    assert torch.equal(head(rays0), head(rays0))  # deterministic without jitter
    assert not torch.allclose(head(rays0), head(rays1))
    with torch.no_grad():  # give person 1 the codes of person 0: the head field cannot tell them apart
        model.z_shape[1] = model.z_shape[0]
        model.z_app[1] = model.z_app[0]
    torch.testing.assert_close(head(rays0), head(rays1))


def test_each_frame_is_seen_from_its_own_pose(tensors, prepared_clip):
    """Cameras come from the frame's own PnP pose, which fits its landmarks better than the
    smoothed track does."""
    from minitalk import camera, data
    from minitalk.headpose import RIGID

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


def test_a_frame_renders_at_any_size_and_its_finer_pixels_average_to_the_coarse_ones(tensors):
    """At twice the size each pixel splits into four whose rays, plate and colour average to its own."""
    frames, s = tensors, tensors.size

    def rays(size, grid=None):
        pixel = torch.arange((grid or size) ** 2)
        return frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 9), pixel, size)

    def blocks(x):  # (4 S^2, C) on the 2S grid -> (S^2, C), the mean of each 2x2 block
        return x.reshape(s, 2, s, 2, -1).mean((1, 3)).reshape(s * s, -1)

    coarse, fine = rays(s), rays(2 * s)
    for key, value in rays(None, s).items():
        assert torch.equal(value, coarse[key]), key  # the frames' own size is the default
    torch.testing.assert_close(blocks(fine["d_cam"]), coarse["d_cam"], rtol=0, atol=1e-5)
    assert (blocks(fine["background"]) - coarse["background"]).abs().mean() < 0.01
    model = tiny_model(frames).eval()
    with torch.no_grad():
        small = train.render_frame(model, frames, 1, 9, torch.device("cpu"))
        large = train.render_frame(model, frames, 1, 9, torch.device("cpu"), size=2 * s)
    assert small.shape == (s, s, 3) and large.shape == (2 * s, 2 * s, 3)
    # 46 dB measured; the same images a pixel apart differ at 35 dB
    assert metrics.psnr(blocks(large.reshape(-1, 3)).reshape(s, s, 3), small) > 40


def test_the_camera_correction_starts_at_the_tracked_camera_and_learns(tensors):
    """With W = 0 the corrected rays are the tracked camera's; the loss reaches W through the camera."""
    model = tiny_model(tensors)
    person, frame, pixel = torch.tensor([0, 1, 1]), torch.tensor([3, 20, 40]), torch.tensor([100, 800, 1200])
    rays = tensors.rays(person, frame, pixel)
    fixed = model.corrected_rays(rays)
    for key in ("o_head", "d_head"):
        torch.testing.assert_close(fixed[key], rays[key], atol=1e-6, rtol=0)
    model.render_rays(rays, torch.zeros(3, model.config.n_expression + 1))["colour"].sum().backward()
    assert model.camera_fix.grad.abs().sum() > 0
    without = tiny_model(tensors, camera_correction=False)
    assert without.corrected_rays(rays) is rays


def test_the_torso_sees_where_the_head_has_been(tensors):
    """The trailing pose is a causal low-pass: untouched by the future, 1 - 1/e of a step after lag_s."""
    fps, lag = 25.0, 0.5
    pose = np.zeros((1, 100, 6))
    pose[:, 50:, 1] = 30.0  # a 30-degree turn at frame 50
    et = train.pose_condition(pose, fps, lag)
    assert et.shape == (1, 100, 12) and np.array_equal(et[..., :6], train.pose_condition(pose, fps, 0.0))
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


def test_a_density_only_pass_gives_the_same_densities_without_colour(tensors):
    """Compaction and the occupancy grids ask the fields for densities alone."""
    model = tiny_model(tensors).eval()
    unit, ray_of = torch.rand(64, 3) * 2 - 1, torch.zeros(64, dtype=torch.long)
    person, d = torch.tensor([1]), torch.tensor([[0.0, 0.0, 1.0]])
    state = torch.cat([tensors.expression[1, :1], tensors.blink[1, :1, None]], -1)  # a listener's (1, K + 1)
    for field, args in ((model.head, (d, person, state)), (model.torso, (person, torch.rand(1, 12)))):
        sigma, rgb = field(unit, *args, ray_of)
        alone, none = field(unit, *args, ray_of, colour=False)
        assert none is None and rgb.shape == (64, 3)
        torch.testing.assert_close(alone, sigma, rtol=0, atol=0)


def test_empty_occupancy_leaves_only_the_background(tensors):
    frames = tensors
    model = tiny_model(frames).eval()
    model.head_grid.occupied.zero_()
    model.torso_grid.occupied.zero_()
    pixel = torch.arange(0, frames.size * frames.size, 5)
    rays = frames.rays(torch.zeros_like(pixel), torch.full_like(pixel, 3), pixel)
    out = model.render_rays(rays, torch.zeros(len(pixel), model.config.n_expression + 1), jitter=False)
    assert out["samples"] == 0
    torch.testing.assert_close(out["colour"], rays["background"])


def test_training_writes_a_report_and_a_loadable_checkpoint_and_export(prepared_clip, tmp_path):
    report = train.train(prepared_clip, tmp_path / "run", DialogueNeRFConfig(head_samples=8, torso_samples=4),
                         progress=False, iters=4, held_out_s=2.0, **TINY)  # fmt: skip
    saved = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert saved["iterations"] == 4 == report["iterations"]
    assert len(saved["psnr"]) == 2 and all(np.isfinite(saved["psnr"]))
    assert 0 < saved["ssim"][0] <= 1 and saved["peak_mem_gb"] > 0 and saved["held_out_frames"] > 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4
    model, frames = train.load_model(tmp_path / "run", prepared_clip)
    image = train.render_frame(model, frames, 1, 5, torch.device("cpu"))
    assert image.shape == (frames.size, frames.size, 3) and 0 <= image.min() and image.max() <= 1
    # the export: float16 weights, and the data seen as the run saw it (its own held-out seconds)
    exported = train.export_model(tmp_path / "run", tmp_path / "model.pt")
    shipped, seen = train.load_exported(exported, prepared_clip)
    assert torch.equal(seen.held_out, frames.held_out)  # 2 s of every 10, not the default 1:
    assert seen.held_out.sum() > train.Frames(prepared_clip).held_out.sum()
    for key, value in model.state_dict().items():
        if not key.endswith(".density"):
            torch.testing.assert_close(shipped.state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(prepared_clip, tmp_path):
    config = DialogueNeRFConfig(head_samples=8, torso_samples=4)
    settings = {**TINY, "lr_decay_steps": 4}  # the learning-rate schedule runs across the resumption
    train.train(prepared_clip, tmp_path / "straight", config, progress=False, iters=6, **settings)
    train.train(prepared_clip, tmp_path / "resumed", config, progress=False, iters=3, **settings)
    train.train(prepared_clip, tmp_path / "resumed", config, progress=False, iters=6, **settings)
    a, b = (
        torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ["straight", "resumed"]
    )
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    cfg = train.TrainConfig()  # the sixth step (step 5) ran at a tenth of each rate: the schedule's floor
    rates = [group["lr"] for group in b["optim"]["param_groups"]]
    assert rates == pytest.approx([0.1 * cfg.lr_grid, 0.1 * cfg.lr_mlp])


def test_learning_rates_fall_tenfold_over_the_decay_steps_then_stay():
    factor = train.learning_rate_factor
    assert factor(0, 3000) == 1.0 and factor(1500, 3000) == pytest.approx(0.1**0.5)
    assert factor(3000, 3000) == pytest.approx(0.1) and factor(9000, 3000) == pytest.approx(0.1)
    assert factor(5000, 0) == 1.0  # no decay


def test_a_checkpoint_of_another_config_is_refused(prepared_clip, tmp_path):
    train.train(prepared_clip, tmp_path / "run", DialogueNeRFConfig(head_samples=8, torso_samples=4),
                progress=False, iters=3, **TINY)  # fmt: skip
    other = DialogueNeRFConfig(head_samples=8, torso_samples=4, width=32)
    with pytest.raises(
        train.TrainingError, match=r"checkpoint\.pt: a checkpoint of another model config .*width"
    ):
        train.train(prepared_clip, tmp_path / "run", other, progress=False, iters=5, **TINY)


def test_divergence_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    prepared_clip, tmp_path, monkeypatch
):
    real_step = train.train_step
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        loss, psnr = real_step(*args, **kwargs)
        return (float("nan"), psnr) if calls["n"] == 5 else (loss, psnr)

    monkeypatch.setattr(train, "train_step", step)
    with pytest.raises(train.TrainingError, match=r"diverged at step 5 .*checkpoint \(step 3\)"):
        train.train(prepared_clip, tmp_path / "run", DialogueNeRFConfig(head_samples=8, torso_samples=4),
                    progress=False, iters=8, **TINY)  # fmt: skip
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3


def test_ssim_of_an_image_with_itself_is_one_and_noise_lowers_it():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert metrics.ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
    assert (
        metrics.ssim(img, noisy) < metrics.ssim(img, np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)) < 1
    )


def test_the_first_occupancy_update_empties_cells_the_field_leaves_empty(tensors):
    """The grid starts all occupied but holds no evidence: one update with a field that is empty
    outside a ball must leave only the ball's cells (no decaying start value keeping them on)."""
    model = tiny_model(tensors)
    grid = model.head_grid
    assert grid.occupied.all()
    grid.update(lambda unit, p: 100.0 * (unit.norm(dim=-1) < 0.5))
    share = grid.occupied.float().mean().item()
    assert 0.4 * (4 / 3 * np.pi * 0.5**3 / 8) < share < 2.0 * (4 / 3 * np.pi * 0.5**3 / 8)


def test_mouth_boxes_hold_the_lips_and_little_else(tensors):
    from minitalk.face import LIP_LOWER_INNER, LIP_UPPER_INNER, MOUTH_CORNERS

    landmarks = tensors.landmarks
    boxes = train.mouth_boxes(landmarks, tensors.size)
    assert boxes.shape == (2, tensors.n_frames, tensors.size, tensors.size)
    share = boxes.mean(axis=(2, 3))
    assert (share > 0).all() and (share < 0.1).all()
    for p, t in [(0, 5), (1, 100)]:
        for i in (*MOUTH_CORNERS, LIP_UPPER_INNER, LIP_LOWER_INNER):
            x, y = np.floor(landmarks[p, t, i, :2]).astype(int)
            assert boxes[p, t, y, x], (p, t, i)


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


def test_mouth_interior_follows_the_true_opening_on_the_real_frames(tensors, sample_dir):
    """On the 64x64 clip, every speaking frame (0.90 / 0.65 for person 0 / 1 when written)."""
    with np.load(sample_dir / "dialogue_gt.npz") as z:
        truth = z["mouth"][:, : tensors.n_frames]
    for p in range(2):
        speaking = np.nonzero(tensors.speaking[p].numpy())[0]
        read = [
            metrics.mouth_interior(
                tensors.images[p, t].numpy(), train.mouth_boxes(tensors.landmarks[p, t], tensors.size)
            )
            for t in speaking
        ]
        assert len(speaking) > 50 and metrics.correlation(read, truth[p, speaking]) > 0.5, p


def test_expression_planes_start_at_zero_and_let_the_state_move_the_head(tensors):
    """At first the planes add nothing; once they hold something, the face state changes the head."""
    frames = tensors
    model = tiny_model(frames, region_attention=False).eval()
    assert all((g == 0).all() for g in model.expression_planes.grids)
    pixel = torch.arange(0, frames.size * frames.size, 7)
    rays = frames.rays(torch.zeros_like(pixel), torch.full_like(pixel, 20), pixel)
    state = torch.zeros(len(pixel), model.config.n_expression + 1)
    bumped = state.clone()
    bumped[:, 0] = 3.0
    with torch.no_grad():  # the MLP path of the state shut: only the planes can carry it
        model.head_cond.ray.weight.zero_()

        def head(s):
            return model.render_rays(rays, s, jitter=False, parts=True)["head"]

        torch.testing.assert_close(head(state), head(bumped))
        for g in model.expression_planes.grids:
            g.normal_(0, 0.5)
        assert not torch.allclose(head(state), head(bumped))


def test_one_state_for_every_ray_mixes_the_expression_planes_before_sampling(tensors):
    """A rendered frame's rays share one face state: the planes are summed first, then sampled
    once. That equals summing the sampled basis, and rays with other states take the general path."""
    model = tiny_model(tensors)
    with torch.no_grad():
        for g in model.expression_planes.grids:
            g.normal_(0, 0.5)
        unit, ray_of = torch.rand(600, 3) * 2 - 1, torch.randint(0, 20, (600,))
        state = torch.randn(1, model.config.n_expression + 1).expand(20, -1)
        basis = model.expression_planes(unit).reshape(600, 3, state.shape[1], -1)

        def summed(s):
            return torch.einsum("mpkf,mk->mpf", basis, s.index_select(0, ray_of)).flatten(1)

        torch.testing.assert_close(model.expression_offsets(unit, state, ray_of), summed(state))
        varied = state.clone()
        varied[3] += 1.0
        torch.testing.assert_close(model.expression_offsets(unit, varied, ray_of), summed(varied))


def test_visible_samples_stop_behind_opaque_ones_the_heads_behind_the_head_alone():
    t_head, sigma_head = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[0.0, 100.0, 0.0, 0.0]])
    t_torso, sigma_torso = torch.tensor([[1.5, 2.5]]), torch.tensor([[100.0, 0.0]])
    keep_head = torch.tensor([True, True, False, True])  # a sample the grid skipped stays skipped
    keep_torso = torch.tensor([True, True])
    t, order = render.depth_order(t_head, t_torso)
    head, torso = visible_samples(t, order, t_head, sigma_head, sigma_torso, keep_head, keep_torso, 1e-3)
    # the head sample at 2 lies behind the opaque torso sample at 1.5, but the head's own
    # silhouette sees it; the torso sample at 2.5 lies behind the opaque head sample at 2
    assert head.tolist() == [True, True, False, False]
    assert torso.tolist() == [True, False]


def test_training_renders_leave_out_hidden_samples_without_changing_picture_or_gradients(tensors):
    frames = tensors
    model = tiny_model(frames)
    pixel = torch.arange(0, frames.size * frames.size, 3)
    rays = frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 7), pixel)
    state = torch.randn(1, model.config.n_expression + 1).expand(len(pixel), -1)
    with torch.no_grad():
        model.head_out.bias[0] = 8.0  # an opaque head: what lies behind its front cannot show
    runs = {}
    for min_transmittance in (0.0, 1e-3):
        model.zero_grad()
        out = model.render_rays(rays, state, jitter=False, min_transmittance=min_transmittance)
        (out["colour"].sum() + out["opacity"].sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.head_enc.parameters()])
        runs[min_transmittance] = out, grads
    (full, full_grad), (visible, visible_grad) = runs.values()
    assert visible["samples"] < 0.6 * full["samples"]
    assert (visible["colour"] - full["colour"]).abs().max() <= 1e-3 + 1e-5
    assert (visible["opacity"] - full["opacity"]).abs().max() <= 1e-3 + 1e-5
    assert (visible_grad - full_grad).norm() <= 0.01 * full_grad.norm()


def test_front_to_back_rendering_matches_compositing_and_stops_behind_opaque_surfaces(tensors):
    frames = tensors
    model = tiny_model(frames).eval()
    pixel = torch.arange(0, frames.size * frames.size, 3)
    rays = frames.rays(torch.ones_like(pixel), torch.full_like(pixel, 7), pixel)
    state = torch.randn(1, model.config.n_expression + 1).expand(len(pixel), -1)
    with torch.no_grad():
        full = model.render_rays(rays, state, jitter=False)
        exact = model.render_rays_front_to_back(rays, state, slab=3, min_transmittance=0.0)
        torch.testing.assert_close(exact["colour"], full["colour"], atol=1e-5, rtol=0)
        assert exact["samples"] == full["samples"]
        model.head_out.bias[0] = 8.0  # an opaque head: rays stop soon after they reach it
        full = model.render_rays(rays, state, jitter=False)
        early = model.render_rays_front_to_back(rays, state, slab=4, min_transmittance=1e-3)
    assert (early["colour"] - full["colour"]).abs().max() <= 1e-3 + 1e-5
    assert early["samples"] < 0.6 * full["samples"]
