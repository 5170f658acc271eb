"""The sample dialogue: two synthetic people talking, with exact ground truth.

`generate(out_dir)` writes, deterministically from a seed:

* `dialogue.mp4`: both people side by side (H.264 + AAC), 25 fps;
* `dialogue_gt.npz`: per-frame ground truth (`pose`, `torso_pose`, `speaking`,
  `mouth`, `blink`, `fps`, the camera `intrinsics`, and the turns);
* `new_dialogue.wav`: a different conversation in the same voices, to drive rendering.

Command line: `python -m minitalk.synthetic --out data_samples`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from minitalk import io
from minitalk.prepare import face
from minitalk.synthetic import avatar, motion, speech
from minitalk.utils import save_npz_atomic, set_seed

FPS = 25
SAMPLE_RATE = 16_000
SEED = 7


def render_video(gt, frames_range=None):
    """Yield frames rendered from a ground-truth dict (the arrays of dialogue_gt.npz)."""
    n = gt["pose"].shape[1]
    for t in frames_range if frames_range is not None else range(n):
        yield avatar.render_frame(
            gt["pose"][:, t], gt["torso_pose"][:, t], gt["mouth"][:, t], gt["blink"][:, t]
        )


def face_detection_rate(frames: np.ndarray) -> list[float]:
    """Fraction of frames in which FaceMesh (detector on every frame) finds each person's face."""
    tile = frames.shape[2] // 2
    return [
        float(np.mean(~np.isnan(face.detect_landmarks(frames[:, :, p * tile : (p + 1) * tile])[:, 0, 0])))
        for p in range(2)
    ]


def generate(out_dir: str | Path = "data_samples", seed: int = SEED) -> dict:
    """Write the sample dialogue to `out_dir`; return a summary."""
    out_dir = Path(out_dir)
    start = time.time()
    rng = set_seed(seed)
    audio, utterances = speech.synthesize_dialogue(speech.TRAIN_SCRIPT, SAMPLE_RATE, rng)
    n_frames = int(len(audio) / SAMPLE_RATE * FPS)
    audio = audio[: int(n_frames * SAMPLE_RATE / FPS)]
    tracks = speech.person_tracks(utterances, len(audio), SAMPLE_RATE)
    m = motion.generate_motion(tracks, utterances, SAMPLE_RATE, FPS, n_frames, rng)
    turns = np.array([(u.person, u.start, u.end) for u in utterances], np.float32)
    gt = dict(
        pose=m.pose,
        torso_pose=m.torso_pose,
        speaking=m.speaking,
        mouth=m.mouth,
        blink=m.blink,
        fps=np.float32(FPS),
        intrinsics=avatar.camera_matrix().astype(np.float32),
        tile=np.int32(avatar.TILE),
        turns=turns,
    )

    frames = np.stack(list(tqdm(render_video(gt), total=n_frames, desc="render", unit="frame")))
    io.write_video(out_dir / "dialogue.mp4", frames, FPS, audio, SAMPLE_RATE)
    save_npz_atomic(out_dir / "dialogue_gt.npz", **gt)
    new_audio, _ = speech.synthesize_dialogue(speech.NEW_SCRIPT, SAMPLE_RATE, rng)
    io.write_audio(out_dir / "new_dialogue.wav", new_audio, SAMPLE_RATE)

    summary = {
        "frames": n_frames,
        "seconds": round(n_frames / FPS, 2),
        "size": [int(frames.shape[1]), int(frames.shape[2])],
        "turns": len(utterances),
        "face_found": face_detection_rate(frames),
        "bytes": {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()},
        "new_dialogue_seconds": round(len(new_audio) / SAMPLE_RATE, 2),
        "generation_seconds": round(time.time() - start, 1),
    }
    print(json.dumps(summary))
    return summary
