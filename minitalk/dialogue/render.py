"""New speech in, a conversation out (DialogueNeRF Fig. 1 and 9; V-D for more than two): `minitalk render`.

1. audio: any file (a video's audio track too), resampled to 16 kHz mono; per frame ZCR, RMS
   and log-mel windows, as preparation computes them;
2. roles: who speaks when, each voice matched to a person by the avatar's voice prints
   (`minitalk.dialogue.roles`), or given with `--roles`; of the people `--people` chose;
3. head poses: the TCNs per turn (the speaker's from the audio, the listener's from the audio
   and the speaker's pose), cross-faded at turn changes and held inside the range of poses
   training saw, since a field cannot draw a side of a face it never saw; or replayed from a
   `.npy` of poses or a prepared folder's tracks;
4. face states: the speaker's expression from the audio (the NeRF's own audio encoder), the
   listener's from `ListenerExpression`, everyone's blinks from `BlinkModel`;
5. frames: every person rendered by the one DialogueNeRF, two side by side, three to nine in a
   grid (`grid`), the speaker framed with `--highlight`, streamed into an H.264 + AAC mp4 that
   is written atomically, with `CLIP.json` and `CLIP_tracks.png` beside it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from minitalk import io
from minitalk.dialogue.avatar import Avatar
from minitalk.dialogue.roles import Roles, assign_roles, parse_roles
from minitalk.nerf.frames import Cameras
from minitalk.nerf.render import render_images, rendered_size
from minitalk.pose.generator import speaker_track, staggered
from minitalk.prepare import audio as au
from minitalk.prepare import data
from minitalk.settings import as_record, check_side, option
from minitalk.utils import (
    MinitalkWarning,
    SettingError,
    atomic_path,
    get_device,
    in_background,
    stop_on_interrupt,
)

MAX_SECONDS = 600.0  # longer audio renders too, with a warning: hours of rendering on a CPU


class RenderWarning(MinitalkWarning):
    """Rendering goes on, but the clip may not be what was asked for."""


class RenderInterrupted(Exception):
    """Ctrl-C stopped rendering; nothing was written under the clip's name."""


@dataclass(frozen=True)
class RenderConfig:
    """The settings of `minitalk render` (`minitalk.settings`), saved in CLIP.json."""

    size: int | None = option(
        None, "pixels per person (default: the avatar's training size; a neural-renderer avatar "
        "renders smaller sizes at its own and resizes)", type=int,
    )  # fmt: skip
    device: str | None = option(None, "default: CUDA when available", choices=("cpu", "cuda"))
    roles: str | None = option(
        None, "who speaks when, instead of telling the voices apart: '0-4.2:0,4.2-9:1' (seconds:person) "
        "or a file of such entries",
    )  # fmt: skip
    pose_from: str | None = option(
        None, "replay head poses: a .npy (2, T, 6) or a prepared folder", metavar="POSES"
    )
    seed: int = option(0, "seed of the generated head motion, listener expressions and blinks")
    people: str | None = option(
        None, "which of the avatar's people take part, 2 to 9 by index: '0,2,3' (default: the first "
        "two; an avatar trained on several folders numbers their people in order)",
    )  # fmt: skip
    highlight: bool = option(False, "a thin frame around whoever speaks", const=True)

    def __post_init__(self):
        if self.size is not None:
            check_side(self.size)
        if self.device is not None and str(self.device).split(":")[0] not in ("cpu", "cuda"):
            raise SettingError("device", "cpu or cuda", self.device)


@dataclass
class Plan:
    """Everything but the pixels: per frame, who speaks, where each head is, each face's state."""

    fps: float
    audio: np.ndarray  # (n,) 16 kHz mono, exactly n_frames / fps seconds
    roles: Roles
    pose: np.ndarray  # (P, T, 6)
    expression: np.ndarray  # (P, T, K): the listeners' generated coefficients (a speaker's come from audio)
    blink: np.ndarray  # (P, T)
    mel: np.ndarray  # (T, 16, 80) log-mel window per frame
    rms: np.ndarray  # (T,)
    seconds: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return self.pose.shape[1]


def plan_dialogue(avatar: Avatar, audio: np.ndarray, given_roles: str | None = None, pose_from=None,
                  seed: int = 0) -> Plan:  # fmt: skip
    """Roles, head poses, listener expressions and blinks for 16 kHz `audio` (steps 1-4)."""
    fps = avatar.fps
    n_frames = int(np.floor(len(audio) / io.SAMPLE_RATE * fps + 1e-6))
    if n_frames < 1:
        raise ValueError(f"the audio lasts {len(audio) / io.SAMPLE_RATE:.3f} s: too short for one frame")
    audio = audio[: int(round(n_frames / fps * io.SAMPLE_RATE))]
    clock, seconds = time.perf_counter(), {}
    zcr, rms = au.zcr_rms(audio, io.SAMPLE_RATE, fps, n_frames)
    log_mel = au.log_mel(audio)
    mel = au.mel_windows(log_mel, fps, n_frames)
    seconds["audio"], clock = time.perf_counter() - clock, time.perf_counter()

    if given_roles is not None:
        roles = parse_roles(given_roles, n_frames, fps, avatar.n_people)
    else:
        roles = assign_roles(audio, log_mel, n_frames, fps, avatar.voice_prints, avatar.voice_spread)
    seconds["roles"], clock = time.perf_counter() - clock, time.perf_counter()

    notes = list(roles.warnings)
    if pose_from is not None:
        pose = replayed_poses(pose_from, n_frames, avatar)
        outside = (pose < avatar.pose_range[:, None, 0] - 1e-6) | (
            pose > avatar.pose_range[:, None, 1] + 1e-6
        )
        if outside[..., :3].any():
            share = outside[..., :3].any(-1).mean()
            notes.append(
                f"{pose_from}: {100 * share:.0f}% of the frames turn a head beyond what training saw"
            )
    else:
        pose = avatar.pose.generate(zcr, rms, roles.speaking, fps)
        pose = np.clip(pose, avatar.pose_range[:, None, 0], avatar.pose_range[:, None, 1])
    speaker = speaker_track(roles.speaking)
    speaker_pose = pose[speaker, np.arange(n_frames)]
    listening = avatar.listener.generate(zcr, rms, speaker_pose, roles.speaking)  # (T, K), relative
    # (P, T, K): each person's coefficients where they listen, later for a second listener (`staggered`)
    expression = (
        staggered(listening, speaker, avatar.n_people, fps) + avatar.listener.expression_mean[:, None]
    )
    expression = expression.astype(np.float32)
    blink = avatar.blinks.generate(roles.speaking, fps, seed)
    seconds["motion"] = time.perf_counter() - clock
    return Plan(fps, audio, roles, pose.astype(np.float32), expression, blink, mel, rms, seconds, notes)


def replayed_poses(source, n_frames: int, avatar: Avatar) -> np.ndarray:
    """Head poses (P, T, 6) from a `.npy` of (P, T, 6) or (T, 6) poses, or from a prepared folder of
    P people, moved onto each avatar person's mean pose and looped or cut to `n_frames`."""
    source = Path(source)
    if source.is_dir() or source.suffix == ".npz":
        pose = data.load_tracks(source if source.is_dir() else source.parent)["pose"]
    elif source.suffix == ".npy":
        pose = np.load(source, allow_pickle=False)
    else:
        raise ValueError(f"{source}: --pose-from takes a .npy of poses or a prepared folder")
    pose = np.asarray(pose, np.float64)
    n = avatar.n_people
    if pose.ndim == 2:
        pose = np.stack([pose] * n)
    if pose.ndim != 3 or pose.shape[0] != n or pose.shape[2] != 6 or not np.isfinite(pose).all():
        raise ValueError(f"{source}: poses must be finite, ({n}, T, 6) or (T, 6); got {pose.shape}")
    pose = pose[:, np.arange(n_frames) % pose.shape[1]]
    return pose - pose.mean(axis=1, keepdims=True) + avatar.pose.pose_mean[:, None]


@torch.no_grad()
def face_states(avatar: Avatar, plan: Plan, device, chunk: int = 256) -> torch.Tensor:
    """(P, T, K + 1) face states: a speaker's coefficients predicted from the audio by the model's
    audio encoder, a listener's generated; blinks generated for everyone."""
    model = avatar.model
    windows = model.config.smooth_frames
    offsets = np.arange(windows) - windows // 2
    scale = torch.from_numpy(avatar.expression_scale)
    out = []
    for p in range(avatar.n_people):
        rows = []
        for a in range(0, plan.n_frames, chunk):  # mel windows of W frames: bounded memory at any length
            t = np.arange(a, min(a + chunk, plan.n_frames))
            idx = np.clip(t[:, None] + offsets, 0, plan.n_frames - 1)
            mel = torch.from_numpy(plan.mel[idx].astype(np.float32))
            expression = torch.from_numpy(plan.expression[p, t]) / scale
            inputs = (
                mel,
                expression,
                torch.from_numpy(plan.blink[p, t]),
                torch.from_numpy(plan.roles.speaking[p, t]),
            )
            rows.append(model.face_state(*(x.to(device) for x in inputs)).cpu())
        out.append(torch.cat(rows))
    return torch.stack(out)


def dialogue_frames(avatar: Avatar, plan: Plan, states: torch.Tensor, size: int, device, stop=None,
                    batch: int = 4, highlight: bool = False):  # fmt: skip
    """The clip's frames, uint8 each, the people laid out by `grid` (two: (size, 2 * size, 3),
    person 0 on the left), the speaker framed with `highlight`. Every person of `batch` frames goes
    through the model as one batch of rays (`render_images`): fewer, larger tensor calls, so less
    of the time goes to Python and to starting each call."""
    n = avatar.n_people
    cameras = Cameras(avatar.intrinsics, plan.pose, avatar.plates, plan.fps, avatar.model.config.torso_lag_s,
                      avatar.mean_translation, avatar.identity)  # fmt: skip
    for start in range(0, plan.n_frames, batch):
        if stop is not None and stop.requested:
            raise RenderInterrupted(f"interrupted at frame {start} of {plan.n_frames}")
        t = torch.arange(start, min(start + batch, plan.n_frames)).repeat_interleave(n)  # (P b,)
        person = torch.arange(n).repeat(len(t) // n)
        images = render_images(avatar.model, cameras, person, t, device, states[person, t], size)
        for frame, people in zip(t[::n].tolist(), images.reshape(-1, n, *images.shape[1:]), strict=True):
            speaking = plan.roles.speaking[:, frame] if highlight else None
            yield grid((people * 255 + 0.5).astype(np.uint8), speaking)  # people (P, S, S, 3)


GRIDS = {
    1: (1, 1),  # (evaluate reads a clip of one person)
    2: (1, 2),
    3: (2, 2),
    4: (2, 2),
    5: (2, 3),
    6: (2, 3),
    7: (3, 3),
    8: (3, 3),
    9: (3, 3),
}  # rows, columns


def grid(people: np.ndarray, speaking: np.ndarray | None = None) -> np.ndarray:
    """One frame of a call: people (P, S, S, 3) uint8 in rows of `GRIDS[P]`, in order, left to right
    and top to bottom, empty cells black; with `speaking` (P,) bool a frame S / 64 wide (at least
    2 px) in white around each who speaks."""
    n, s = people.shape[:2]
    rows, cols = GRIDS[n]
    out = np.zeros((rows * s, cols * s, 3), np.uint8)
    width = max(2, s // 64)
    for p, image in enumerate(people):
        y, x = (p // cols) * s, (p % cols) * s
        out[y : y + s, x : x + s] = image
        if speaking is not None and speaking[p]:
            cell = out[y : y + s, x : x + s]
            cell[:width], cell[-width:], cell[:, :width], cell[:, -width:] = 255, 255, 255, 255
    return out


def chosen_people(spec: str | None, n_people: int) -> list[int]:
    """The people of `--people` ('0,2,3') among the avatar's `n_people`, or the first two."""
    if spec is None:
        return [0, 1]
    try:
        people = [int(p) for p in str(spec).split(",")]
    except ValueError:
        raise ValueError(f"--people {spec}: write person numbers, e.g. 0,2,3") from None
    if not 2 <= len(people) <= max(GRIDS):
        raise ValueError(f"--people {spec}: {len(people)} people; a call here is 2 to {max(GRIDS)} "
                         f"(this avatar holds {n_people})")  # fmt: skip
    return people


def check_size(avatar: Avatar, size: int) -> None:
    """Refuses a size the neural renderer cannot make (not a multiple of its factor u) with both
    numbers; warns where the clip's size is not the one the avatar was trained at."""
    u = avatar.model.config.upsample
    native = rendered_size(avatar.model, avatar.size, size)
    if native % u:
        raise ValueError(
            f"--size {size}: this avatar's neural renderer upsamples {u}x, so a size above the "
            f"{avatar.size} px it was trained at must be a multiple of {u}"
        )
    if u > 1 and size != avatar.size:
        how = (
            f"rendering {native} px and resizing to {size} px, at the speed of a {native} px render"
            if native != size
            else f"rendering {size} px from a {size // u} px feature map: no detail beyond {avatar.size} px"
        )
        warnings.warn(f"the avatar was trained at {avatar.size} px; {how}", RenderWarning, stacklevel=3)


def render_dialogue(avatar: Avatar, audio_path, out, *, overwrite: bool = False, progress: bool = True,
                    **settings) -> dict:  # fmt: skip
    """Render a new conversation from the speech in `audio_path` to the mp4 `out`; `settings` are
    the fields of `RenderConfig`. Returns the summary also written to `out` with the suffix .json
    (frames, seconds, turns, time per stage, the settings)."""
    cfg = RenderConfig(**settings)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists; pass --overwrite to replace it")
    device = cfg.device if isinstance(cfg.device, torch.device) else get_device(cfg.device)
    avatar = avatar.select(chosen_people(cfg.people, avatar.n_people))
    size = cfg.size or avatar.size
    check_size(avatar, size)
    start = time.perf_counter()
    wav = io.read_audio(audio_path)
    read_seconds = time.perf_counter() - start
    if len(wav) / io.SAMPLE_RATE > MAX_SECONDS:
        warnings.warn(
            f"{audio_path}: {len(wav) / io.SAMPLE_RATE / 60:.1f} minutes of audio; rendering takes a while",
            RenderWarning,
            stacklevel=2,
        )
    plan = plan_dialogue(avatar, wav, cfg.roles, cfg.pose_from, cfg.seed)
    plan.seconds = {"read": read_seconds, **plan.seconds}
    for note in plan.warnings:
        warnings.warn(f"{audio_path}: {note}", RenderWarning, stacklevel=2)
    clock = time.perf_counter()
    avatar.model.to(device)
    states = face_states(avatar, plan, device)
    plan.seconds["face_states"] = time.perf_counter() - clock
    clock = time.perf_counter()
    with stop_on_interrupt() as stop:
        frames = dialogue_frames(avatar, plan, states, size, device, stop, highlight=cfg.highlight)
        if device.type == "cuda":  # the GPU renders while the CPU encodes; on a CPU the two would
            frames = in_background(frames)  # only contend for the same cores (docs/results.md)
        bar = tqdm(frames, total=plan.n_frames, desc="render", unit="frame", disable=not progress)
        io.write_video(out, bar, plan.fps, audio=plan.audio)
    plan.seconds["frames"] = time.perf_counter() - clock
    summary = {
        "clip": out.name,
        "frames": plan.n_frames,
        "seconds": round(plan.n_frames / plan.fps, 3),
        "fps": plan.fps,
        "size": size,
        "device": str(device),
        "people": avatar.names,
        "roles": plan.roles.method,
        "voice_distance": plan.roles.voice_distance,
        "turns": plan.roles.turns(plan.fps),
        "warnings": plan.warnings,
        "stage_seconds": {k: round(v, 2) for k, v in plan.seconds.items()},
        "total_seconds": round(time.perf_counter() - start, 2),
        "settings": as_record(cfg),
    }
    summary["frames_per_second"] = round(plan.n_frames / max(plan.seconds["frames"], 1e-9), 2)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    plot_tracks(plan, states, avatar, out.with_name(out.stem + "_tracks.png"))
    return summary


def plot_tracks(plan: Plan, states: torch.Tensor, avatar: Avatar, path: Path) -> None:
    """Who speaks, each head's pitch and each mouth's opening (the avatar's read-out of the face
    state) over the clip, written atomically as a PNG."""
    t = np.arange(plan.n_frames) / plan.fps
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(3, 1, sharex=True)
    for p, name in enumerate(avatar.names):
        colour = f"C{p}"
        axes[0].fill_between(t, p, p + 0.8 * plan.roles.speaking[p], color=colour, lw=0, label=name)
        axes[1].plot(t, plan.pose[p, :, 0], color=colour, lw=1)
        axes[2].plot(t, mouth_opening(avatar, states[p]), color=colour, lw=1)
    axes[0].set_yticks([]), axes[0].set_ylabel("speaks"), axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel("pitch (deg)")
    axes[2].set_ylabel("mouth"), axes[2].set_xlabel("seconds")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=72, bbox_inches="tight")


def mouth_opening(avatar: Avatar, states: torch.Tensor) -> np.ndarray:
    """(T,) mouth opening read linearly from face states (T, K + 1), as fitted on the training
    clip's tracks (`Avatar.mouth_readout`)."""
    expression = states[:, :-1].numpy() * avatar.expression_scale
    return expression @ avatar.mouth_readout[:-1] + avatar.mouth_readout[-1]
