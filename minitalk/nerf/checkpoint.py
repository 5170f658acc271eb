"""Checkpoints of a training run, the slimmed export, and loading either to render.

A checkpoint holds everything a run needs to resume exactly (model, optimiser, settings,
step, the torch generator's state); an export keeps only what rendering needs, in float16.
Both are written atomically and read through `minitalk.files.load_torch` (`weights_only=True`),
so a damaged or foreign file is refused by name. Nothing here imports the training loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from minitalk.files import FORMAT_VERSION, FileFormatError, load_torch
from minitalk.nerf.frames import Frames
from minitalk.nerf.model import DialogueNeRF, DialogueNeRFConfig
from minitalk.utils import atomic_path

CHECKPOINT_KEYS = ("model", "optim", "model_config", "train_config", "step", "elapsed", "history",
                   "torch_rng")  # fmt: skip


def save_checkpoint(path: Path, model, optim, mcfg, train_settings: dict, step: int, elapsed: float,
                    history) -> None:  # fmt: skip
    """A resumable run, atomically: model, optimiser, settings, step, time, the torch generator."""
    state = {
        "model": model.state_dict(),
        "optim": optim.state_dict(),
        "model_config": mcfg.to_dict(),
        "train_config": train_settings,
        "step": step,
        "elapsed": elapsed,
        "history": history,
        "torch_rng": torch.get_rng_state(),
        "format_version": FORMAT_VERSION,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path) -> dict:
    """A checkpoint's contents, checked (`minitalk.files.load_torch`)."""
    return load_torch(path, "checkpoint", CHECKPOINT_KEYS)


def load_model(run_dir, folder) -> tuple[DialogueNeRF, Frames]:
    """A trained model from `run_dir/checkpoint.pt` with the prepared data it was trained on."""
    state = read_checkpoint(Path(run_dir) / "checkpoint.pt")
    mcfg = DialogueNeRFConfig(**state["model_config"])
    frames = Frames.for_run(folder, state["train_config"], mcfg)
    model = DialogueNeRF(mcfg, frames.head_box, frames.torso_boxes)
    model.load_state_dict(state["model"])
    return model.eval(), frames


def export_model(run_dir, path) -> Path:
    """A trained model, slimmed for shipping: the weights and the occupancy grids in float16,
    without the optimiser or the grids' running densities (which only training needs)."""
    state = read_checkpoint(Path(run_dir) / "checkpoint.pt")
    out = {
        "model": slim_weights(state["model"]),
        "model_config": state["model_config"],
        "train_config": state["train_config"],
        "step": state["step"],
        "format_version": FORMAT_VERSION,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path


def slim_weights(weights: dict) -> dict:
    """Model weights for shipping: floats in float16, without the occupancy grids' running
    densities (which only training needs)."""
    return {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in weights.items()
        if not k.endswith(".density")
    }


def model_from_state(state: dict, path) -> DialogueNeRF:
    """A DialogueNeRF in float32, ready to render, from an export's or avatar file's `state`."""
    try:
        mcfg = DialogueNeRFConfig(**state["model_config"])
    except (TypeError, ValueError) as err:
        raise FileFormatError(f"{path}: not a minitalk model ({err})") from None
    model = DialogueNeRF(
        mcfg, torch.zeros(2, 3), torch.zeros(mcfg.n_people, 2, 3)
    )  # boxes: loaded with the weights
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    missing = {k for k in set(model.state_dict()) - set(weights) if not k.endswith(".density")}
    if missing:
        raise FileFormatError(f"{path}: not a minitalk model (missing {sorted(missing)[:3]} ...)")
    model.load_state_dict(weights, strict=False)
    return model.eval()


def load_exported(path, folder) -> tuple[DialogueNeRF, Frames]:
    """A model written by `export_model` (or an avatar file), ready to render, with the prepared
    data of `folder` as its training run saw it (held-out frames, condition windows)."""
    state = load_torch(path, "model export", ("model", "model_config", "train_config"))
    model = model_from_state(state, path)
    return model, Frames.for_run(folder, state["train_config"], model.config)
