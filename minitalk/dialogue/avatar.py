"""The avatar file: everything rendering a new conversation needs, in one small versioned file.

`minitalk train DIR --export avatars.pt` writes it (`minitalk.export` gathers the parts, this
module packs them): the DialogueNeRF weights (float16), each person's background plate and
camera intrinsics, the statistics that turn generated motion into the model's inputs
(`nerf.frames.scene_statistics`), a voice print per person (whose voice is whose in new
audio), and the motion models (`pose.fit`). It loads with `torch.load(weights_only=True)`
through `minitalk.files`, so rendering needs neither the prepared folder nor the training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minitalk.files import FORMAT_VERSION, FileFormatError, load_torch
from minitalk.nerf.checkpoint import model_from_state, slim_weights
from minitalk.nerf.model import DialogueNeRF
from minitalk.pose.face_state import BlinkModel, ListenerExpression
from minitalk.pose.fit import MotionModels
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


def save_avatar(
    path,
    trained: dict,
    plates: np.ndarray,
    intrinsics: np.ndarray,
    fps: float,
    statistics: dict,
    motion: MotionModels,
    voice_prints: np.ndarray,
    voice_spread: np.ndarray,
) -> Path:
    """Pack an avatar file at `path`, atomically: `trained` is a checkpoint's state (model weights
    and both configs), `statistics` is `nerf.frames.scene_statistics` of its tracks, `motion` the
    fitted motion models, `voice_prints` (P, 13) and `voice_spread` (13,) from
    `prepare.diarize.voice_prints`."""

    def tensor(x):
        return torch.from_numpy(np.asarray(x))

    avatar = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "model": slim_weights(trained["model"]),
        "model_config": trained["model_config"],
        "train_config": trained["train_config"],
        "scene": {
            "plates": tensor(plates),
            "intrinsics": tensor(intrinsics.astype(np.float32)),
            "fps": float(fps),
            **{name: tensor(value) for name, value in statistics.items()},
            "mouth_readout": tensor(motion.mouth_readout),
        },
        "pose": motion.pose.state_dict(),
        "listener": motion.listener.state_dict(),
        "blinks": motion.blinks.state_dict(),
        "voices": {"prints": tensor(voice_prints), "spread": tensor(voice_spread)},
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
