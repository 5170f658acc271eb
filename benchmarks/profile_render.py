"""Where the seconds of `minitalk render` go: a profile of rendering the first seconds of the
sample's new speech with an avatar file; prints one JSON line.

Stages are timed as `render_dialogue` runs them (reading, audio features, roles, motion, face
states), then the frames are rendered without the encoder thread under cProfile, and the time
inside the renderer's parts is summed: casting rays, drawing samples (box and occupancy tests),
the head and torso fields, compositing, the 2D neural renderer, and encoding the video alone.
Then what each speed step buys, without the profiler: frame pairs per second with 1, 2, 4 and 8
frames per model call, and the whole frames-and-encoding loop with the encoder in the same thread
as rendering against the encoder in its own thread (`utils.in_background`, as `render` runs it on a GPU).

    python benchmarks/profile_render.py [--avatar data_samples/avatars.pt] [--seconds 4] [--size S]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

import torch

import minitalk as mt
from minitalk.dialogue import render as dialogue
from minitalk.dialogue.avatar import load_avatar
from minitalk.utils import in_background

PARTS = {  # (file suffix, function name) -> the part it belongs to
    ("frames.py", "rays"): "cast rays",
    ("render.py", "sample_fields"): "draw samples",
    ("model.py", "head"): "head field",
    ("model.py", "torso"): "torso field",
    ("model.py", "corrected_rays"): "cast rays",
    ("render.py", "composite"): "composite",
    ("upsampler.py", "forward"): "neural renderer",
}


def pairs_per_second(avatar, plan, states, size: int, batch: int) -> float:
    """Frame pairs per second of `dialogue_frames` with `batch` frames per model call."""
    clock = time.perf_counter()
    for _ in dialogue.dialogue_frames(avatar, plan, states, size, torch.device("cpu"), batch=batch):
        pass
    return round(plan.n_frames / (time.perf_counter() - clock), 2)


def frames_and_encoding_seconds(avatar, plan, states, size: int, background: bool) -> float:
    """Seconds to render every frame and write the clip, the encoder beside rendering or after it."""
    frames = dialogue.dialogue_frames(avatar, plan, states, size, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        clock = time.perf_counter()
        mt.io.write_video(Path(tmp) / "clip.mp4", in_background(frames) if background else frames, plan.fps,
                          audio=plan.audio)  # fmt: skip
        return round(time.perf_counter() - clock, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=mt.SAMPLE_DIR / "avatars.pt")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int)
    args = parser.parse_args()
    torch.set_num_threads(2)
    avatar = load_avatar(args.avatar)
    size = args.size or avatar.size
    audio = mt.io.read_audio(mt.SAMPLE_DIR / "new_dialogue.wav")[: int(args.seconds * mt.io.SAMPLE_RATE)]
    start = time.perf_counter()
    plan = dialogue.plan_dialogue(avatar, audio)
    clock = time.perf_counter()
    states = dialogue.face_states(avatar, plan, torch.device("cpu"))
    seconds = {**plan.seconds, "face_states": time.perf_counter() - clock}
    profile = cProfile.Profile()
    clock = time.perf_counter()
    profile.enable()
    frames = list(dialogue.dialogue_frames(avatar, plan, states, size, torch.device("cpu")))
    profile.disable()
    seconds["frames"] = time.perf_counter() - clock
    with tempfile.TemporaryDirectory() as tmp:
        clock = time.perf_counter()
        mt.io.write_video(Path(tmp) / "clip.mp4", frames, plan.fps, audio=plan.audio)
        seconds["encode"] = time.perf_counter() - clock
    stats = pstats.Stats(profile).stats
    parts = dict.fromkeys(sorted(set(PARTS.values())), 0.0)
    for (path, _, name), (_, _, _, cumulative, _) in stats.items():
        for (suffix, function), part in PARTS.items():
            if path.endswith(suffix) and name == function:
                parts[part] += cumulative
    line = {
        "bench": "profile_render",
        "avatar": args.avatar.name,
        "size": size,
        "upsample": avatar.model.config.upsample,
        "frames": plan.n_frames,
        "clip_seconds": round(plan.n_frames / plan.fps, 2),
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "frames_seconds_by_part": {k: round(v, 3) for k, v in parts.items()},
        "frame_pairs_per_second": round(plan.n_frames / seconds["frames"], 2),
        "total_seconds": round(time.perf_counter() - start, 2),
        "pairs_per_second_by_batch": {
            b: pairs_per_second(avatar, plan, states, size, b) for b in (1, 2, 4, 8)
        },
        "frames_and_encoding_seconds": {
            name: frames_and_encoding_seconds(avatar, plan, states, size, background)
            for name, background in (("encoder_in_same_thread", False), ("encoder_in_own_thread", True))
        },
        "note": "under cProfile, which slows the Python-heavy parts; the rest of `frames` is the "
        "front-to-back loop's own bookkeeping and the tensors' way back to images",
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
