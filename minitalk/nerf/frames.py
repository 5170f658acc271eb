"""A prepared folder as tensors: what training and rendering read (DialogueNeRF IV-B).

`Frames` holds each person's crops, head / torso labels (from which each batch's pixel
sampling weights are made), background plates, cameras (intrinsics and per-frame camera-to-head
transforms), the torso's pose condition, the audio windows, and the face state of every frame
(Eq. 1 expression coefficients and blink). `Frames.rays` casts the rays of any pixels of any
frames through `minitalk.nerf.rays_torch.pixel_directions_torch`, the one pixel-to-ray rule.

The held-out frames (`held_out_frames`) are never trained on; every score is taken on them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minitalk.camera import camera_to_head
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.nerf.rays import pixel_weights
from minitalk.nerf.rays_torch import pixel_directions_torch
from minitalk.prepare import data
from minitalk.prepare.face import mouth_boxes
from minitalk.prepare.masks import HEAD
from minitalk.utils import lowpass

MIN_HELD_OUT_FRAMES = 25  # fewer held-out frames than this make the scores noisy: say so


def held_out_frames(n_frames: int, fps: float, held_out_s: float = 1.0, every_s: float = 10.0,
                    short_share: float = 0.1, at_s=()):  # fmt: skip
    """(T,) bool: the frames never trained on, scored after training.

    The last `held_out_s` of every `every_s` seconds, so held-out frames fall in every part of
    the clip; a clip that has none of those (shorter than `every_s`) holds out its last
    `short_share` instead, so every run is scored on something it never saw. Blocks of
    consecutive frames, not scattered ones: a frame between two trained neighbours is nearly a
    copy of them and would flatter the scores. `at_s`: blocks of `held_out_s` starting at these
    seconds are held out as well (chosen moments, such as a pose seen nowhere else).
    """
    second = np.arange(n_frames) / fps
    held = (second % every_s) >= every_s - held_out_s
    if held_out_s > 0 and n_frames / fps < every_s and n_frames > 1:  # no whole period: the tail
        held[:] = False
        held[-max(1, int(round(short_share * n_frames))) :] = True
    for start in at_s:
        held |= (second >= start) & (second < start + held_out_s)
    return held


class Cameras:
    """Every person's camera in every frame, the torso's condition and the background plates: all
    that casting rays needs. The prepared frames are one such set (`Frames`); motion generated
    for new speech is another (`minitalk.dialogue`)."""

    def __init__(self, intrinsics: np.ndarray, pose: np.ndarray, plates: np.ndarray, fps: float,
                 torso_lag_s: float, mean_translation: np.ndarray | None = None, identity=None):  # fmt: skip
        """intrinsics (P, 3, 3) at the plates' size; pose (P, T, 6) placing each frame's camera; plates
        (P, S, S, 3) uint8; `mean_translation` (P, 3) centres the torso's condition (default: the
        poses' own mean, as training saw it); `identity` (P,) each person's index among the model's
        people (default 0 to P - 1: these are the model's people, in its order)."""
        self.n_people, self.size = plates.shape[0], plates.shape[1]
        self.identity = torch.arange(self.n_people) if identity is None else torch.as_tensor(identity).long()
        self.intrinsics = torch.from_numpy(np.asarray(intrinsics, np.float32))
        self.c2w = torch.from_numpy(camera_to_head(pose).astype(np.float32))  # (P, T, 4, 4)
        self.et = torch.from_numpy(pose_condition(pose, fps, torso_lag_s, mean_translation))  # (P, T, E)
        # the raw poses behind et, for ER-NeRF's adaptive pose encoding: (P, T, 6), or 12 with the trail
        trail = [trailed(pose, fps, torso_lag_s)] if torso_lag_s > 0 else []
        self.head_pose = torch.from_numpy(np.concatenate([pose, *trail], axis=-1).astype(np.float32))
        # (P, 3, 3): K with its two pixel rows divided by the side, so images read in shares of it
        self.projection = torch.diag(torch.tensor([1 / self.size, 1 / self.size, 1.0])) @ self.intrinsics
        self.background = torch.from_numpy(plates.astype(np.float32) / 255).reshape(self.n_people, -1, 3)
        self._plates = {self.size: self.background}

    def rays(self, person: torch.Tensor, frame: torch.Tensor, pixel: torch.Tensor,
             size: int | None = None) -> dict:  # fmt: skip
        """Rays through pixels (flat indices) of frames (person, frame), all (N,).

        `size` puts the pixels on a finer (or coarser) size x size grid over the same view, as a
        field renders at any resolution: the camera's pixel units scale by size / self.size, and
        the background plate is resampled (`plates`). "xy" is the pixel's centre in the image,
        (N, 2) in [-1, 1] whatever the size: where a 2D torso field reads it (`DialogueNeRF.torso_layer`).
        """
        size = size or self.size
        xy = torch.stack([pixel % size, pixel // size], -1).float()  # (N, 2)
        d_cam = pixel_directions_torch(self.intrinsics[person], xy, scale=self.size / size)
        c2w = self.c2w[person, frame]
        return {
            "o_head": c2w[:, :3, 3],
            "d_head": torch.einsum("nij,nj->ni", c2w[:, :3, :3], d_cam),
            "d_cam": d_cam,
            "xy": (xy + 0.5) * (2 / size) - 1,
            "person": self.identity[person],  # the model's codes, boxes and grids are indexed by it
            **self.torso_inputs(person, frame),
            "background": self.plates(size)[person, pixel],
        }

    def torso_inputs(self, person: torch.Tensor, frame: torch.Tensor) -> dict:
        """What `DialogueNeRF.torso_condition` reads of frames (person, frame) (N,): the pose
        condition et, the raw head poses (now, and trailed) and the normalised intrinsics."""
        return {"et": self.et[person, frame], "head_pose": self.head_pose[person, frame],
                "projection": self.projection[person]}  # fmt: skip

    def plates(self, size: int) -> torch.Tensor:
        """The background plates (P, size * size, 3), resampled bilinearly to size x size (cached)."""
        if size not in self._plates:
            square = self.background.reshape(self.n_people, self.size, self.size, 3).permute(0, 3, 1, 2)
            resized = F.interpolate(square, (size, size), mode="bilinear", antialias=True)
            self._plates[size] = resized.permute(0, 2, 3, 1).reshape(self.n_people, -1, 3).contiguous()
        return self._plates[size]


class Frames(Cameras):
    """One or several prepared folders as tensors: images, labels, cameras, face states, boxes.

    Several folders (several conversations) are one set of people, numbered in the order given
    (DialogueNeRF V-D: one network for every person). Each folder keeps its own clock and audio:
    the arrays are (P, T, ...) with T the longest clip's frames, a shorter clip's people padded
    with its last frame, and `present` (P, T) marks the real frames; `held_out` (P, T) is each
    clip's own held-out stretch, and a frame is trained on where it is present and not held out."""

    def __init__(self, folder, face_weight: float = 4.0, held_out_s: float = 1.0,
                 held_out_every_s: float = 10.0, smooth_frames: int = 8, mouth_weight: float = 4.0,
                 torso_lag_s: float = 0.5, held_out_at=()):  # fmt: skip
        folders = [Path(folder)] if isinstance(folder, (str, Path)) else [Path(f) for f in folder]
        clips = [data.load_tracks(f) for f in folders]
        masks = [data.load_masks(f) for f in folders]
        check_same_kind(folders, clips, [labels.shape[2] for labels, _ in masks])
        self.folders = folders
        self.fps = float(clips[0]["fps"])
        lengths = [int(labels.shape[1]) for labels, _ in masks]
        # (P,): the folder each person comes from, and their clip's length
        self.group = torch.tensor([g for g, (labels, _) in enumerate(masks) for _ in range(len(labels))])
        self.lengths = torch.tensor([lengths[g] for g in self.group.tolist()])
        n_people, n_frames, size = len(self.group), max(lengths), masks[0][0].shape[2]
        self.n_people, self.n_frames, self.size = n_people, n_frames, size
        self.images = torch.from_numpy(np.empty((n_people, n_frames, size, size, 3), np.uint8))
        first = 0
        for f, labels in zip(folders, (m[0] for m in masks), strict=True):
            people = slice(first, first + len(labels))
            data.read_people_frames(f, len(labels), labels.shape[1], size, out=self.images.numpy()[people])
            self.images[people, labels.shape[1] :] = self.images[
                people, labels.shape[1] - 1 : labels.shape[1]
            ]
            first += len(labels)

        def people(key, arrays=None):  # every clip's (P_f, T_f, ...) padded to T and stacked: (P, T, ...)
            arrays = [c[key] for c in clips] if arrays is None else arrays
            return np.concatenate([padded(a, n_frames) for a in arrays])

        self.landmarks = people("landmarks")  # (P, T, 478, 3) in crop pixels
        self.face_weight, self.mouth_weight = face_weight, mouth_weight
        labels = people(None, [m[0] for m in masks])
        self.labels = torch.from_numpy(labels.reshape(n_people, n_frames, -1))  # 0, 1 torso, 2 head
        pose = people(None, [frame_poses(c) for c in clips])
        # the torso's condition is centred on each person's mean position over their real frames
        mean_translation = np.concatenate([frame_poses(c)[..., 3:].mean(axis=1) for c in clips])
        plates = np.concatenate([m[1] for m in masks])
        intrinsics = np.concatenate([c["intrinsics"] for c in clips])
        super().__init__(intrinsics, pose, plates, self.fps, torso_lag_s, mean_translation)
        self.pose = torch.from_numpy(pose.astype(np.float32))  # (P, T, 6)
        # (G, T, 16, 80): each folder's own audio; padding repeats the last window, as clipping would
        self.mel = torch.from_numpy(
            np.stack([padded(c["mel"][None], n_frames)[0] for c in clips]).astype(np.float32)
        )
        offsets = np.arange(smooth_frames) - smooth_frames // 2
        self.mel_index = torch.from_numpy(
            np.clip(np.arange(self.n_frames)[:, None] + offsets, 0, self.n_frames - 1)
        )
        expression = [c["expression"].astype(np.float32) for c in clips]
        scale = expression_scale(np.concatenate([e.reshape(-1, e.shape[-1]) for e in expression])[None])
        self.expression = torch.from_numpy(people(None, expression) / scale)  # (P, T, K), unit spread
        self.blink = torch.from_numpy(people("blink").astype(np.float32))
        self.present = torch.arange(n_frames)[None] < self.lengths[:, None]  # (P, T)
        self.speaking = torch.from_numpy(people("speaking")) & self.present
        self.mouth = people("mouth")
        held = [held_out_frames(n, self.fps, held_out_s, held_out_every_s, at_s=held_out_at) for n in lengths]
        self.held_out = torch.from_numpy(np.stack([padded(held[g][None], n_frames)[0] for g in self.group]))
        self.held_out &= self.present  # (P, T)
        self.head_box = head_box(np.concatenate([c["face3d"] for c in clips]))
        self.torso_boxes = np.concatenate([torso_boxes(frame_poses(c)) for c in clips])

    @property
    def trainable(self) -> torch.Tensor:
        """(P, T) bool: the frames training may draw, present and not held out."""
        return self.present & ~self.held_out

    @classmethod
    def for_run(cls, folder, train_settings: dict, mcfg: DialogueNeRFConfig) -> Frames:
        """The frames as a training run saw them; `train_settings` is its `TrainConfig` as a dict
        (as checkpoints store it), so rendering needs no training code to rebuild them."""
        keys = ("face_weight", "held_out_s", "held_out_every_s", "mouth_weight", "held_out_at")
        settings = {k: train_settings[k] for k in keys if k in train_settings}
        return cls(folder, smooth_frames=mcfg.smooth_frames, torso_lag_s=mcfg.torso_lag_s, **settings)

    def pixel_weights(self, person: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """(B, S * S) float32: how often training draws each pixel of frames (person, frame) (B,),
        `nerf.rays.pixel_weights` of the head label and the mouth box. Made for each batch, not
        kept for every frame: kept, (P, T, S^2) float32 would outweigh the crops themselves."""
        p, t = person.numpy(), frame.numpy()
        head = self.labels[person, frame].numpy() == HEAD
        mouth = mouth_boxes(self.landmarks[p, t], self.size).reshape(len(p), -1)
        return torch.from_numpy(pixel_weights(head, mouth, self.face_weight, self.mouth_weight))

    def audio_windows(self, person: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """(B, W, 16, 80): the log-mel windows around frames (person, frame) (B,), of the audio of
        the person's own clip."""
        return self.mel[self.group[person][:, None], self.mel_index[frame]]

    def face_state_inputs(self, person: torch.Tensor, frame: torch.Tensor) -> tuple:
        """What `DialogueNeRF.face_state` takes for frames (person, frame) (B,)."""
        return (
            self.audio_windows(person, frame),
            self.expression[person, frame],
            self.blink[person, frame],
            self.speaking[person, frame],
        )

    def rays(self, person: torch.Tensor, frame: torch.Tensor, pixel: torch.Tensor,
             size: int | None = None) -> dict:  # fmt: skip
        """`Cameras.rays`, with the tracked pose and face state from which
        `DialogueNeRF.corrected_rays` corrects each frame's camera."""
        tracked = torch.cat([self.expression[person, frame], self.blink[person, frame, None]], -1)
        return {**super().rays(person, frame, pixel, size), "pose": self.pose[person, frame],
                "tracked_state": tracked}  # fmt: skip

    def target(self, person, frame, pixel) -> torch.Tensor:
        """True colours (N, 3) in 0..1 of pixels (flat indices) of frames (person, frame)."""
        flat = (person * self.n_frames + frame) * self.size * self.size + pixel
        return self.images.reshape(-1, 3)[flat].float() / 255


def padded(x: np.ndarray, n_frames: int) -> np.ndarray:
    """(P, T_f, ...) -> (P, n_frames, ...), the last frame repeated: a shorter clip beside a longer one."""
    extra = n_frames - x.shape[1]
    return x if extra == 0 else np.concatenate([x, np.repeat(x[:, -1:], extra, axis=1)], axis=1)


def check_same_kind(folders: list[Path], clips: list[dict], sizes: list[int]) -> None:
    """Several folders train one model only when their crops share a size and their clips a frame
    rate, and no folder is given twice; refuses otherwise, naming the folders and both numbers."""
    seen = {}
    for folder in folders:
        key = folder.resolve()
        if key in seen:
            raise ValueError(f"{folder}: given twice (as {seen[key]} too); each folder's people train once")
        seen[key] = folder
    for folder, clip, size in zip(folders[1:], clips[1:], sizes[1:], strict=True):
        if size != sizes[0]:
            raise ValueError(f"{folder}: prepared at {size} px, {folders[0]} at {sizes[0]} px; one model "
                             "needs one size (prepare both with the same --size)")  # fmt: skip
        if float(clip["fps"]) != float(clips[0]["fps"]):
            fps, first = float(clip["fps"]), float(clips[0]["fps"])
            raise ValueError(f"{folder}: {fps:g} fps, {folders[0]} {first:g} fps; one model needs one "
                             "frame rate (prepare both with the same --fps)")  # fmt: skip


def frame_poses(tracks: dict) -> np.ndarray:
    """The head pose (P, T, 6) that places each frame's camera: the frame's own PnP solution
    (`pose_raw`), not the smoothed `pose` (which is finite exactly where `pose_raw` is).

    Smoothing trades each frame's fit to its own landmarks for a steady track, which is what a
    pose model should learn from; the field instead learns sharp outlines only from cameras that
    match their images (docs/results.md, "Cameras from each frame's own PnP pose").
    """
    return tracks["pose_raw"].astype(np.float64)


def expression_scale(expression: np.ndarray) -> np.ndarray:
    """The spread (K,) of each expression coefficient over every person and frame of (P, T, K):
    the model sees expression / scale, so no coefficient outweighs the others in its condition."""
    return expression.reshape(-1, expression.shape[-1]).std(0) + 1e-8


def scene_statistics(tracks) -> dict[str, np.ndarray]:
    """What turns generated motion into the model's inputs as training saw them, from the tracks
    (or a list of them, one per folder, people numbered in order, as `Frames` numbers them):
    `expression_scale` (K,), each person's `mean_translation` (P, 3) (centres the torso's
    condition, `pose_condition`), and `pose_range` (P, 2, 6), the lowest and highest head pose
    of the training cameras (`frame_poses`)."""
    clips = tracks if isinstance(tracks, (list, tuple)) else [tracks]
    pose = [frame_poses(c) for c in clips]
    expression = np.concatenate([c["expression"].astype(np.float32).reshape(-1, c["expression"].shape[-1])
                                 for c in clips])  # fmt: skip
    return {
        "expression_scale": expression_scale(expression[None]),
        "mean_translation": np.concatenate([p[..., 3:].mean(axis=1) for p in pose]).astype(np.float32),
        "pose_range": np.concatenate([np.stack([p.min(axis=1), p.max(axis=1)], 1) for p in pose]).astype(
            np.float32
        ),
    }


def pose_condition(pose: np.ndarray, fps: float, lag_s: float = 0.5, mean_translation=None) -> np.ndarray:
    """The torso's condition et from head poses (P, T, 6): (P, T, 6), or (P, T, 12) with lag_s > 0.

    Euler angles in units of 30 degrees and translations in decimetres from the person's mean
    position; with a lag, the same pose smoothed causally (a first-order low-pass of time
    constant lag_s) follows: a body trails its head, so where the shoulders are depends on
    where the head has been, not only where it is now.
    """
    mean_t = (
        pose[..., 3:].mean(axis=1, keepdims=True) if mean_translation is None else mean_translation[:, None]
    )
    et = np.concatenate([pose[..., :3] / 30.0, (pose[..., 3:] - mean_t) * 10.0], axis=-1)
    if lag_s > 0:
        et = np.concatenate([et, trailed(et, fps, lag_s)], axis=-1)
    return et.astype(np.float32)


def trailed(x: np.ndarray, fps: float, lag_s: float) -> np.ndarray:
    """(P, T, D) per-frame values low-passed along time (`minitalk.utils.lowpass`): where a body
    that trails its head by lag_s would be."""
    return np.moveaxis(lowpass(np.moveaxis(x, 1, -1), fps, lag_s), -1, 1)


def head_box(face3d: np.ndarray) -> np.ndarray:
    """(2, 3) box in the head frame around both canonical faces: hair above, skull behind, no neck."""
    lo, hi = face3d.min(axis=(0, 1)), face3d.max(axis=(0, 1))
    height = hi[1] - lo[1]
    return np.array(
        [
            [lo[0] - 0.03, lo[1] - 0.35 * height, lo[2] - 0.02],
            [hi[0] + 0.03, hi[1] + 0.05 * height, lo[2] + 0.2],
        ],
        np.float32,
    )


def torso_boxes(pose: np.ndarray) -> np.ndarray:
    """(P, 2, 3) camera-frame boxes below each person's mean head position, shoulders wide."""
    t = pose[..., 3:].mean(axis=1)  # (P, 3)
    lo = t + np.array([-0.32, -0.02, -0.15])
    hi = t + np.array([0.32, 0.5, 0.3])
    return np.stack([lo, hi], axis=1).astype(np.float32)
