"""The avatar file: everything rendering a new conversation needs, in one small versioned file.

`minitalk train DIR --export avatars.pt` writes it: the DialogueNeRF weights (float16), each
person's background plate and camera intrinsics, the statistics that turn generated motion into
the model's inputs (expression scale, mean head position, the range of head poses training saw),
a voice print per person (whose voice is whose in new audio), and the generators of head pose,
listener expression and blinks, trained here in seconds on the prepared tracks. It loads with
`torch.load(weights_only=True)` through `minitalk.files`, so rendering needs neither the
prepared folder nor the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minitalk.files import FORMAT_VERSION, FileFormatError, load_torch
from minitalk.nerf.checkpoint import model_from_state, slim_weights
from minitalk.nerf.frames import frame_poses
from minitalk.nerf.model import DialogueNeRF
from minitalk.pose.face_state import BlinkModel, ListenerExpression
from minitalk.pose.generator import PoseGenerator
from minitalk.utils import atomic_path

KIND = "minitalk avatar"
AVATAR_KEYS = (
    "kind",
    "model",
    "model_config",
    "train_config",
    "scene",
    "pose",
    "listener",
    "blinks",
    "voices",
)


@dataclass
class Avatar:
    """A loaded avatar file: the model and what turns new speech into its inputs."""

    model: DialogueNeRF
    plates: np.ndarray  # (P, S, S, 3) uint8
    intrinsics: np.ndarray  # (P, 3, 3) at the plates' size
    fps: float
    expression_scale: np.ndarray  # (K,): the model sees expression / scale (`Frames.expression`)
    mean_translation: np.ndarray  # (P, 3): centres the torso's condition, as in training
    pose_range: np.ndarray  # (P, 2, 6): the lowest and highest head pose training saw
    pose: PoseGenerator
    listener: ListenerExpression
    blinks: BlinkModel
    voice_prints: np.ndarray  # (P, 13)
    voice_spread: np.ndarray  # (13,)
    mouth_readout: np.ndarray  # (K + 1,): mouth opening ~ expression @ w[:-1] + w[-1], fitted on the tracks

    @property
    def size(self) -> int:
        return int(self.plates.shape[1])


def build_avatar(model_path, prepared, path) -> Path:
    """Write the avatar file `path` from a trained model (a run's checkpoint.pt, or an export) and
    the prepared folder it was trained on; the generators are trained here on its tracks."""
    from minitalk.dialogue.roles import voice_prints
    from minitalk.io import read_audio
    from minitalk.prepare import audio as au
    from minitalk.prepare import data

    state = load_torch(model_path, "trained model", ("model", "model_config", "train_config"))
    tracks = data.load_tracks(prepared)
    _, plates = data.load_masks(prepared)
    fps = float(tracks["fps"])
    pose, speaking, zcr, rms = tracks["pose"], tracks["speaking"], tracks["zcr"], tracks["rms"]
    expression = tracks["expression"].astype(np.float32)
    camera_pose = frame_poses(tracks)
    wav = read_audio(Path(prepared) / "audio.wav")
    design = np.concatenate(
        [expression.reshape(-1, expression.shape[-1]), np.ones((expression[..., 0].size, 1))], 1
    )
    readout = np.linalg.lstsq(design, tracks["mouth"].reshape(-1), rcond=None)[0].astype(np.float32)
    prints, spread = voice_prints(wav, au.log_mel(wav), speaking, fps)
    avatar = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "model": slim_weights(state["model"]),
        "model_config": state["model_config"],
        "train_config": state["train_config"],
        "scene": {
            "plates": torch.from_numpy(plates),
            "intrinsics": torch.from_numpy(tracks["intrinsics"].astype(np.float32)),
            "fps": fps,
            "expression_scale": torch.from_numpy(expression.reshape(-1, expression.shape[-1]).std(0) + 1e-8),
            "mean_translation": torch.from_numpy(camera_pose[..., 3:].mean(axis=1).astype(np.float32)),
            "pose_range": torch.from_numpy(
                np.stack([camera_pose.min(axis=1), camera_pose.max(axis=1)], 1).astype(np.float32)
            ),
            "mouth_readout": torch.from_numpy(readout),
        },
        "pose": PoseGenerator().fit(pose, speaking, zcr, rms).state_dict(),
        "listener": ListenerExpression(expression.shape[-1])
        .fit(expression, pose, speaking, zcr, rms)
        .state_dict(),
        "blinks": BlinkModel.fit(tracks["blink"], speaking, fps).state_dict(),
        "voices": {"prints": torch.from_numpy(prints), "spread": torch.from_numpy(spread)},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(avatar, tmp)
    return path


def load_avatar(path) -> Avatar:
    """An avatar file, checked: its kind, format version and parts (`minitalk.files`)."""
    state = load_torch(path, "avatar file", AVATAR_KEYS)
    if state["kind"] != KIND:
        raise FileFormatError(f"{path}: not a minitalk avatar file (it is a {state['kind']!r})")
    try:
        scene, voices = state["scene"], state["voices"]
        return Avatar(
            model=model_from_state(state, path),
            plates=scene["plates"].numpy(),
            intrinsics=scene["intrinsics"].numpy(),
            fps=float(scene["fps"]),
            expression_scale=scene["expression_scale"].numpy(),
            mean_translation=scene["mean_translation"].numpy(),
            pose_range=scene["pose_range"].numpy(),
            pose=PoseGenerator.from_state_dict(state["pose"]),
            listener=ListenerExpression.from_state_dict(state["listener"]),
            blinks=BlinkModel.from_state_dict(state["blinks"]),
            voice_prints=voices["prints"].numpy(),
            voice_spread=voices["spread"].numpy(),
            mouth_readout=scene["mouth_readout"].numpy(),
        )
    except (KeyError, TypeError, RuntimeError) as err:
        raise FileFormatError(
            f"{path}: a damaged minitalk avatar file ({type(err).__name__}: {err})"
        ) from None
