"""The avatar file: everything rendering a new conversation needs, in one small versioned file.

`minitalk train DIR --export avatars.pt` writes it (`minitalk.export` gathers the parts, this
module packs them): the DialogueNeRF weights (float16), each person's background plate and
camera intrinsics, the statistics that turn generated motion into the model's inputs
(`nerf.frames.scene_statistics`), a voice print per person (whose voice is whose in new
audio), and the motion models (`pose.fit`). It loads with `torch.load(weights_only=True)`
through `minitalk.files`, so rendering needs neither the prepared folder nor the training code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
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
    names: list[str] = field(default_factory=list)  # (P,): one per person, from the files prepared
    identity: np.ndarray | None = None  # (P,): each person's index among the model's codes

    def __post_init__(self):
        self.names = list(self.names) or [f"person {p}" for p in range(len(self.plates))]
        if self.identity is None:
            self.identity = np.arange(len(self.plates))

    @property
    def size(self) -> int:
        return int(self.plates.shape[1])

    @property
    def n_people(self) -> int:
        return len(self.plates)

    def select(self, people) -> Avatar:
        """The avatar of `people` (indices among this avatar's, in the order given): every per-person
        part cut to them, the one model shared, which still draws each by their own codes
        (`identity`). A model of many people renders a conversation of any two of them."""
        people = [int(p) for p in people]
        bad = [p for p in people if not 0 <= p < self.n_people]
        if bad:
            raise ValueError(f"--people: no person {bad[0]} in this avatar; it holds {self.n_people} "
                             f"(0 to {self.n_people - 1}: {', '.join(self.names)})")  # fmt: skip
        if len(set(people)) != len(people):
            raise ValueError(f"--people {','.join(map(str, people))}: a person given twice")
        pose, listener, blinks = (copy.copy(m) for m in (self.pose, self.listener, self.blinks))
        pose.pose_mean = self.pose.pose_mean[people]
        listener.pose_mean, listener.expression_mean = (
            self.listener.pose_mean[people],
            self.listener.expression_mean[people],
        )
        blinks.rate, blinks.profile = self.blinks.rate[people], self.blinks.profile[people]
        return replace(
            self, plates=self.plates[people], intrinsics=self.intrinsics[people],
            mean_translation=self.mean_translation[people], pose_range=self.pose_range[people],
            pose=pose, listener=listener, blinks=blinks, voice_prints=self.voice_prints[people],
            names=[self.names[p] for p in people], identity=self.identity[people],
        )  # fmt: skip


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
    names: list[str] | None = None,
) -> Path:
    """Pack an avatar file at `path`, atomically: `trained` is a checkpoint's state (model weights
    and both configs), `statistics` is `nerf.frames.scene_statistics` of its tracks, `motion` the
    fitted motion models, `voice_prints` (P, 13) and `voice_spread` (13,) from
    `prepare.diarize.voice_prints`, `names` one per person."""

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
        "names": list(names or []),
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
            names=list(state.get("names", [])),  # files written before names: "person 0", ...
        )
    except (KeyError, TypeError, RuntimeError) as err:
        raise FileFormatError(
            f"{path}: a damaged minitalk avatar file ({type(err).__name__}: {err})"
        ) from None
