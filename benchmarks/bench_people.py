"""Several people in one model (DialogueNeRF V-D: "rendering different speakers and listeners
separately in the same network"); prints one JSON line.

Figures: parameters and the avatar's float16 weights against the number of identities (1 to 8);
peak training memory with 2, 4, 6 and 8 identities (1 to 4 prepared folders, each process its
own); held-out PSNR of the sample's two people trained alone against trained beside two more, at
the same steps per person (goal: within 0.5 dB); frame sets per second of a whole render of two
people from the 2-person and from the 4-person avatar, and of calls of 2, 3 and 4 people from the
4-person one.

The two more people are the sample's conversation made into another: halves swapped, each person
mirrored and their colours turned (hue by a third of the circle), so that skin, hair, clothes and
background differ, prepared like any video. The copies used for the memory figure are the same
folders again under other paths: memory depends on the frames held, not on who is in them.

    python benchmarks/bench_people.py [--size 128] [--steps 1000]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import minitalk as mt
from minitalk.dialogue import render as dialogue
from minitalk.dialogue.avatar import load_avatar
from minitalk.export import export_avatar
from minitalk.nerf.checkpoint import slim_weights
from minitalk.nerf.model import DialogueNeRF, DialogueNeRFConfig
from minitalk.nerf.train import train

RENDER_SECONDS = 10.0  # of the sample's new speech, rendered from each avatar
PER_PERSON = ("z_shape", "z_app", "z_light", "camera_fix")  # a row per person each (`DialogueNeRF`)


def model_sizes(max_people: int = 8) -> dict:
    """Per number of identities: the model's parameters, those that belong to people (their codes
    and camera corrections), and the bytes of its float16 weights as an avatar file holds them
    (with each person's occupancy grids, which are buffers, not parameters)."""
    out = {}
    for n in range(1, max_people + 1):
        torch.manual_seed(0)
        model = DialogueNeRF(DialogueNeRFConfig(n_people=n), torch.zeros(2, 3), torch.zeros(n, 2, 3))
        buffer = io.BytesIO()
        torch.save(slim_weights(model.state_dict()), buffer)
        per_person = sum(p.numel() for name, p in model.named_parameters() if name in PER_PERSON)
        out[str(n)] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "per_person_parameters": per_person,
            "weights_mb": round(buffer.tell() / 1e6, 3),
        }
    return out


def other_conversation(work: Path, size: int) -> Path:
    """The sample turned into another conversation (module docstring), prepared at `size`."""
    video, fps = mt.io.read_video(mt.SAMPLE_DIR / "dialogue.mp4")
    half = video.shape[2] // 2
    people = [video[:, :, half:, :][:, :, ::-1], video[:, :, :half][:, :, ::-1]]  # swapped, mirrored
    turned = []
    for frames in people:
        hsv = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV) for f in frames])
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 60) % 180  # OpenCV's hue runs 0..179
        turned.append(np.stack([cv2.cvtColor(f, cv2.COLOR_HSV2RGB) for f in hsv]))
    source = work / "other.mp4"
    audio = mt.io.read_audio(mt.SAMPLE_DIR / "dialogue.mp4")
    mt.io.write_video(source, np.concatenate(turned, axis=2), fps, audio=audio)
    return mt.prepare.prepare(source, work / "other", size=size, progress=False)


PEAK_SCRIPT = """
import json, sys
from minitalk.nerf.train import train
report = train(json.loads(sys.argv[1]), sys.argv[2], progress=False, iters=20, eval_frames=2)
print(json.dumps({"peak_mem_gb": report["peak_mem_gb"], "people": len(report["psnr"])}))
"""


def training_memory(folders: list[Path], work: Path) -> dict:
    """Peak resident memory of 20 training steps on 1, 2, 3 and 4 of `folders` (2 to 8 identities),
    each in a process of its own, data loading included."""
    out = {}
    for n in range(1, len(folders) + 1):
        run = work / f"memory_{n}"
        chosen = [str(f) for f in folders[:n]]
        line = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, json.dumps(chosen), str(run)], check=True,
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        result = json.loads(line.splitlines()[-1])
        out[str(result["people"])] = result["peak_mem_gb"]
    return out


def hard_link(source, target) -> None:
    Path(target).hardlink_to(source)


def render_speed(avatar_path: Path, speech: Path, n_people: int = 2) -> dict:
    """A whole `minitalk render` of the first `n_people` of `avatar_path` (a call of three or four
    is a 2 x 2 grid): frame sets (every person's frame of one moment) per second."""
    avatar = load_avatar(avatar_path)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = dialogue.render_dialogue(
            avatar, speech, Path(tmp) / "clip.mp4", device="cpu", progress=False,
            people=",".join(map(str, range(n_people))),
        )  # fmt: skip
        wall = time.perf_counter() - start
    return {
        "frame_sets_per_second": summary["frames_per_second"],
        "realtime_factor": round(summary["seconds"] / wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="pixels per person")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of the 2-person model (the "
                        "4-person one trains twice as many: the same frames per person)")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    result: dict = {"bench": "people", "size": args.size, "by_identities": model_sizes()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sample = mt.prepare.prepare(mt.SAMPLE_DIR / "dialogue.mp4", work / "sample", size=args.size,
                                    progress=False)  # fmt: skip
        other = other_conversation(work, args.size)
        copies = [
            shutil.copytree(f, work / f"{f.name}_copy", copy_function=hard_link) for f in (sample, other)
        ]
        result["peak_train_gb_by_identities"] = training_memory([sample, other, *copies], work)
        runs = {}
        for n_people, folders, steps in ((2, sample, args.steps), (4, [sample, other], 2 * args.steps)):
            run = work / f"run_{n_people}"
            clock = time.perf_counter()
            report = train(folders, run, progress=False, iters=steps)
            avatar = work / f"avatar_{n_people}.pt"
            names = ["sample left", "sample right", "other left", "other right"][:n_people]
            export_avatar(run / "checkpoint.pt", folders, avatar, names)
            runs[n_people] = {"steps": steps, "minutes": round((time.perf_counter() - clock) / 60, 2),
                              "psnr": report["psnr"], "ssim": report["ssim"], "avatar": avatar}  # fmt: skip
        speech = work / "speech.wav"
        wav = mt.io.read_audio(mt.SAMPLE_DIR / "new_dialogue.wav")
        mt.io.write_audio(speech, wav[: int(RENDER_SECONDS * mt.io.SAMPLE_RATE)])
        for n_people, run in runs.items():
            run["render"] = render_speed(run["avatar"], speech)
            result[f"with_{n_people}_identities"] = run
        result["render_by_people"] = {  # calls of 2, 3 and 4 people from the 4-person avatar
            str(n): render_speed(runs[4]["avatar"], speech, n) for n in (2, 3, 4)
        }
        for run in runs.values():
            run.pop("avatar")
    two, four = result["with_2_identities"]["psnr"], result["with_4_identities"]["psnr"]
    result["psnr_change_db"] = [round(b - a, 3) for a, b in zip(two, four[:2], strict=True)]  # goal: >= -0.5
    result["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
