"""Training DialogueNeRF on a prepared clip (tiny budgets: behaviour only): reports, checkpoints, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minitalk.nerf import checkpoint, render, train
from minitalk.nerf.frames import Frames
from minitalk.nerf.model import DialogueNeRFConfig

TINY = dict(  # a few small steps: enough to exercise every path
    frames_per_batch=4,
    rays_per_frame=64,
    eval_frames=2,
    checkpoint_every=3,
    occupancy_warmup=2,
    occupancy_every=2,
    eval_every=10**6,
)


def test_training_writes_a_report_and_a_loadable_checkpoint_and_export(prepared_clip, tmp_path):
    report = train.train(prepared_clip, tmp_path / "run", DialogueNeRFConfig(head_samples=8, torso_samples=4),
                         progress=False, iters=4, held_out_s=2.0, **TINY)  # fmt: skip
    saved = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert saved["iterations"] == 4 == report["iterations"]
    assert len(saved["psnr"]) == 2 and all(np.isfinite(saved["psnr"]))
    assert 0 < saved["ssim"][0] <= 1 and saved["peak_mem_gb"] > 0 and saved["held_out_frames"] > 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4
    model, frames = checkpoint.load_model(tmp_path / "run", prepared_clip)
    image = render.render_frame(model, frames, 1, 5, torch.device("cpu"))
    assert image.shape == (frames.size, frames.size, 3) and 0 <= image.min() and image.max() <= 1
    # the export: float16 weights, and the data seen as the run saw it (its own held-out seconds)
    exported = checkpoint.export_model(tmp_path / "run", tmp_path / "model.pt")
    shipped, seen = checkpoint.load_exported(exported, prepared_clip)
    assert torch.equal(seen.held_out, frames.held_out)  # 2 s of every 10, not the default 1:
    assert seen.held_out.sum() > Frames(prepared_clip).held_out.sum()
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


@pytest.mark.parametrize("torso", ["3d", "2d"])
def test_the_variants_train_export_and_render_as_the_default_does(prepared_clip, tmp_path, torso):
    """ER-NeRF's hashed planes, adaptive pose encoding and 2D torso are options of the same model: a
    run with them trains, exports and renders through the same code, its key points saved with it."""
    config = DialogueNeRFConfig(head_samples=8, torso_samples=4, hash_log2=10, pose_encoding="keypoints",
                                torso=torso)  # fmt: skip
    train.train(prepared_clip, tmp_path / "run", config, progress=False, iters=3, **TINY)
    exported = checkpoint.export_model(tmp_path / "run", tmp_path / "model.pt")
    model, frames = checkpoint.load_exported(exported, prepared_clip)
    assert model.config.hash_log2 == 10 and model.keypoints is not None
    assert any(model.head_enc.hashed) and model.keypoints.shape == (3, 3)
    assert (model.torso_grid is None) == (torso == "2d")
    image = render.render_frame(model, frames, 0, 5, torch.device("cpu"))
    assert image.shape == (frames.size, frames.size, 3) and np.isfinite(image).all()


def test_disentangled_codes_train_export_and_render(prepared_clip, tmp_path):
    """codes="disentangled": the reference encoder trains first, Eq. 6 pulls the codes toward its
    references (nearer than a run without the loss), and the illumination code travels with the
    avatar file."""
    config = DialogueNeRFConfig(head_samples=8, torso_samples=4, codes="disentangled")
    distances = []
    for weight in (0.0, 5.0):
        run = tmp_path / f"run_{weight}"
        train.train(prepared_clip, run, config, progress=False, iters=3, reference_steps=4,
                    disentangle_weight=weight, **TINY)  # fmt: skip
        exported = checkpoint.export_model(run, tmp_path / "model.pt")
        model, frames = checkpoint.load_exported(exported, prepared_clip)
        settings = train.TrainConfig(reference_steps=4, **TINY)
        references = train.reference_codes_of(frames, config, settings, progress=False)
        distances.append(float(((model.z_light - references["illumination"]) ** 2).sum().detach()))
    assert distances[1] < distances[0]
    assert model.config.codes == "disentangled" and model.z_light.shape == (2, model.config.code_dim)
    image = render.render_frame(model, frames, 1, 5, torch.device("cpu"))
    assert image.shape == (frames.size, frames.size, 3) and np.isfinite(image).all()
