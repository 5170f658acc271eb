"""Speed of the building blocks under the sample: decoding, encoding, rendering, face tracking.

Prints one JSON line. Not a test: it never fails on a time.

    python benchmarks/bench_sample.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

import minitalk as mt


def timed(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> dict:
    sample = mt.SAMPLE_DIR
    video = sample / "dialogue.mp4"
    with np.load(sample / "dialogue_gt.npz") as z:
        gt = {k: z[k] for k in z.files}
    n = gt["pose"].shape[1]

    decode_s, (frames, fps) = timed(lambda: mt.io.read_video(video), repeats=1)
    audio_s, audio = timed(lambda: mt.io.read_audio(video))
    with tempfile.TemporaryDirectory() as tmp:
        clip = frames[:250]
        encode_s, _ = timed(
            lambda: mt.io.write_video(Path(tmp) / "c.mp4", clip, fps, audio[: 10 * 16000]), repeats=1
        )
    next(mt.synthetic.render_video(gt, [0]))  # build both people once
    render_s, _ = timed(lambda: list(mt.synthetic.render_video(gt, range(10))), repeats=1)
    tiles = frames[:200, :, :256]
    track_s, _ = timed(lambda: mt.prepare.face.detect_landmarks(tiles, static=False), repeats=1)
    detect_s, _ = timed(lambda: mt.prepare.face.detect_landmarks(tiles[:50], static=True), repeats=1)

    result = {
        "bench": "sample",
        "frames": n,
        "decode_fps": round(n / decode_s, 1),
        "audio_decode_x_realtime": round(len(audio) / 16000 / audio_s, 1),
        "encode_fps": round(len(clip) / encode_s, 1),
        "avatar_render_fps": round(10 / render_s, 2),
        "facemesh_track_fps": round(200 / track_s, 1),
        "facemesh_detect_fps": round(50 / detect_s, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
