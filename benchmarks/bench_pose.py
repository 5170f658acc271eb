"""TCN pose generation: quality on held-out frames against baselines and ablations, and speed.

Prints one JSON line. Not a test: it never fails on a number.

    python benchmarks/bench_pose.py                # the default (fast) config
    python benchmarks/bench_pose.py --paper        # also the paper's settings (Adam 5e-5, 200 epochs)
    python benchmarks/bench_pose.py --tracks DIR/tracks.npz --video VIDEO

Goals (DialogueNeRF IV-A; the ViCo listener metric): the full model beats every
baseline and ablation on listener PoseFD, listener pitch correlation >= 0.5,
training under 60 s on 2 CPU cores, one minute of poses generated in under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import minitalk as mt
from minitalk.pose import PAPER_CONFIG, PoseConfig
from minitalk.pose.evaluate import compare


def load(tracks_path, video_path):
    with np.load(tracks_path) as z:
        pose, speaking, fps = z["pose"], z["speaking"], float(z["fps"])
    audio = mt.io.read_audio(video_path)
    zcr, rms = mt.prepare.audio.zcr_rms(audio, mt.io.SAMPLE_RATE, fps, pose.shape[1])
    return pose, speaking, zcr, rms, fps


def generation_ms_per_minute(model, fps: float) -> float:
    """Median time to generate both people's poses for 60 s of new speech in 10 s turns."""
    audio = mt.io.read_audio(mt.SAMPLE_DIR / "new_dialogue.wav")
    n = int(60 * fps)
    zcr, rms = mt.prepare.audio.zcr_rms(np.tile(audio, 3), mt.io.SAMPLE_RATE, fps, n)
    speaking = np.zeros((2, n), bool)
    for i in range(6):
        speaking[i % 2, int(i * 10 * fps) : int((i + 1) * 10 * fps)] = True
    times = []
    for _ in range(12):
        start = time.perf_counter()
        model.generate(zcr, rms, speaking, fps)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[2:]))


def rounded(d, digits=5):
    return {k: float(f"{v:.{digits}g}") for k, v in d.items()}


def run(config: PoseConfig, pose, speaking, zcr, rms, ablations=True) -> tuple[dict, object]:
    start = time.time()
    result = compare(pose, speaking, zcr, rms, config, ablations=ablations)
    s = result["scores"]
    out = {
        "listener_pitch_corr": round(s["listener_pitch_corr"]["tcn"], 4),
        "listener_posefd": rounded(s["listener_posefd"]),
        "listener_posel1": rounded(s["listener_posel1"]),
        "listener_pitch_corr_all": rounded(s["listener_pitch_corr"], 4),
        "speaker_posefd": rounded(s["speaker_posefd"]),
        "speaker_posel1": rounded(s["speaker_posel1"]),
        "train_seconds": round(result["model"].train_seconds, 1),
        "compare_seconds": round(time.time() - start, 1),
    }
    return out, result["model"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracks", default=str(mt.SAMPLE_DIR / "dialogue_gt.npz"))
    parser.add_argument("--video", default=str(mt.SAMPLE_DIR / "dialogue.mp4"))
    parser.add_argument("--paper", action="store_true", help="also train with the paper's settings")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    pose, speaking, zcr, rms, fps = load(args.tracks, args.video)
    config = PoseConfig()
    result, model = run(config, pose, speaking, zcr, rms)
    result = {"bench": "pose", **result}
    result["gen_ms_per_minute"] = round(generation_ms_per_minute(model, fps), 2)
    result["receptive_field_frames"] = model.receptive_field
    result["config"] = {k: v for k, v in vars(config).items()}
    fd = result["listener_posefd"]
    result["tcn_beats_all_on_listener_posefd"] = all(
        fd["tcn"] < v for k, v in fd.items() if k not in ("tcn", "tcn_from_audio")
    )
    if args.paper:
        paper, _ = run(PAPER_CONFIG, pose, speaking, zcr, rms, ablations=False)
        result["paper_config"] = {k: paper[k] for k in ("listener_pitch_corr", "train_seconds")}
        result["paper_config"]["listener_posefd_tcn"] = paper["listener_posefd"]["tcn"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
