"""DialogueNeRF's pieces: face states by role, latent codes, camera correction, expression planes, grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minitalk.nerf import render
from minitalk.nerf.model import AudioEncoder


def test_the_condition_follows_the_role(tensors, tiny_model):
    frames = tensors
    """Speaker frames use the audio feature and ignore the expression; listener frames the reverse."""
    model = tiny_model(frames)
    person, frame = torch.tensor([0, 0]), torch.tensor([10, 10])
    mel, exp, blink, _ = frames.face_state_inputs(person, frame)
    roles = torch.tensor([True, False])
    base = model.face_state(mel, exp, blink, roles)
    other_exp = model.face_state(mel, exp + 1.0, blink, roles)
    other_mel = model.face_state(mel + 1.0, exp, blink, roles)
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


def test_latent_codes_separate_the_people(tensors, tiny_model):
    """The same rays rendered as person 0 and as person 1 differ through the latent codes alone."""
    frames = tensors
    model = tiny_model(frames).eval()
    pixel = torch.arange(0, frames.size * frames.size, 7)
    rays0 = frames.rays(torch.zeros_like(pixel), torch.full_like(pixel, 20), pixel)
    rays1 = {**rays0, "person": torch.ones_like(pixel)}
    face_state = torch.zeros(len(pixel), model.config.n_expression + 1)

    def head(rays):
        return render.render_rays(model, rays, face_state, jitter=False, parts=True)["head"]

    assert torch.equal(head(rays0), head(rays0))  # deterministic without jitter
    assert not torch.allclose(head(rays0), head(rays1))
    with torch.no_grad():  # give person 1 the codes of person 0: the head field cannot tell them apart
        model.z_shape[1] = model.z_shape[0]
        model.z_app[1] = model.z_app[0]
    torch.testing.assert_close(head(rays0), head(rays1))


def test_the_camera_correction_starts_at_the_tracked_camera_and_learns(tensors, tiny_model):
    """With W = 0 the corrected rays are the tracked camera's; the loss reaches W through the camera."""
    model = tiny_model(tensors)
    person, frame, pixel = torch.tensor([0, 1, 1]), torch.tensor([3, 20, 40]), torch.tensor([100, 800, 1200])
    rays = tensors.rays(person, frame, pixel)
    fixed = model.corrected_rays(rays)
    for key in ("o_head", "d_head"):
        torch.testing.assert_close(fixed[key], rays[key], atol=1e-6, rtol=0)
    render.render_rays(model, rays, torch.zeros(3, model.config.n_expression + 1))["colour"].sum().backward()
    assert model.camera_fix.grad.abs().sum() > 0
    without = tiny_model(tensors, camera_correction=False)
    assert without.corrected_rays(rays) is rays


def test_a_density_only_pass_gives_the_same_densities_without_colour(tensors, tiny_model):
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


def test_the_first_occupancy_update_empties_cells_the_field_leaves_empty(tensors, tiny_model):
    """The grid starts all occupied but holds no evidence: one update with a field that is empty
    outside a ball must leave only the ball's cells (no decaying start value keeping them on)."""
    model = tiny_model(tensors)
    grid = model.head_grid
    assert grid.occupied.all()
    grid.update(lambda unit, p: 100.0 * (unit.norm(dim=-1) < 0.5))
    share = grid.occupied.float().mean().item()
    assert 0.4 * (4 / 3 * np.pi * 0.5**3 / 8) < share < 2.0 * (4 / 3 * np.pi * 0.5**3 / 8)


def test_expression_planes_start_at_zero_and_let_the_state_move_the_head(tensors, tiny_model):
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
            return render.render_rays(model, rays, s, jitter=False, parts=True)["head"]

        torch.testing.assert_close(head(state), head(bumped))
        for g in model.expression_planes.grids:
            g.normal_(0, 0.5)
        assert not torch.allclose(head(state), head(bumped))


def test_one_state_for_every_ray_mixes_the_expression_planes_before_sampling(tensors, tiny_model):
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_forward_pass_agrees_on_cpu_and_cuda(tensors, tiny_model):
    """One DialogueNeRF, the same rays and face states, rendered on both devices (unjittered)."""
    model = tiny_model(tensors)
    person, frame = torch.tensor([0, 1, 1]).repeat(200), torch.tensor([3, 5, 9]).repeat(200)
    pixel = torch.randint(tensors.size**2, (600,), generator=torch.Generator().manual_seed(0))
    rays = tensors.rays(person, frame, pixel)
    state = model.face_state(*tensors.face_state_inputs(person, frame))
    with torch.no_grad():
        cpu = render.render_rays(model, rays, state, jitter=False)
        cuda = torch.device("cuda")
        on_gpu = {k: v.to(cuda) for k, v in rays.items()}
        gpu = render.render_rays(model.to(cuda), on_gpu, state.to(cuda), jitter=False)
    for key in ("colour", "opacity", "depth"):
        # the CPU samples with the Numba kernel, CUDA with the torch twin: float32 rounding apart
        np.testing.assert_allclose(gpu[key].cpu().numpy(), cpu[key].numpy(), atol=2e-3, rtol=1e-3)


def test_adaptive_pose_encoding_projects_the_key_points_where_the_camera_sees_them(tensors, tiny_model):
    """ER-NeRF 3.4: the torso's condition is the key points moved by the head pose and projected;
    here checked against the project's NumPy camera (`camera.project`), now and trailed."""
    from minitalk.camera import pose_to_rt, project

    frames = tensors
    model = tiny_model(frames, pose_encoding="keypoints")
    person, frame = torch.tensor([0, 1, 1]), torch.tensor([0, 7, 30])
    inputs = frames.torso_inputs(person, frame)
    got = model.torso_condition(inputs).detach().numpy().reshape(3, 2, 3, 2)  # (N, now/trailed, key, uv)
    keys = model.keypoints.detach().numpy().astype(np.float64)
    for n in range(3):
        for k, pose in enumerate(inputs["head_pose"][n].numpy().reshape(2, 6)):
            rot, t = pose_to_rt(pose)
            pixels = project(keys @ rot.T + t, frames.intrinsics[person[n]].numpy())
            np.testing.assert_allclose(got[n, k], 2 * pixels / frames.size - 1, atol=1e-4)
    assert model.torso_condition(inputs).shape == inputs["et"].shape  # it takes et's place
    # the key points learn through the torso: a loss on the torso's colour reaches them
    rays = frames.rays(person, frame, torch.tensor([40, 900, 2000]))
    unit = torch.rand(6, 3) * 2 - 1
    _, rgb = model.fields(rays, torch.zeros(3, model.config.n_expression + 1))["torso"](
        unit, torch.tensor([0, 0, 1, 1, 2, 2])
    )
    rgb.sum().backward()
    assert model.keypoints.grad is not None and model.keypoints.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "settings, field",
    [({"hash_log2": 4}, "hash_log2"), ({"hash_log2": 12, "encoding": "frequency"}, "hash_log2"),
     ({"hash_log2": 14}, "hash_log2"),
     ({"pose_encoding": "image"}, "pose_encoding"), ({"codes": "split"}, "codes"),
     ({"torso": "flat"}, "torso")],
)  # fmt: skip
def test_bad_option_combinations_are_refused_by_name(settings, field):
    from minitalk.nerf.model import DialogueNeRFConfig
    from minitalk.utils import SettingError

    with pytest.raises(SettingError) as err:
        DialogueNeRFConfig(**settings)
    assert err.value.name == field
