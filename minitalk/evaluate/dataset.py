"""Preference data from the sample: rendered segments, their degradations, and the Preference
Score paper's augmentations (section 4.3), each clip measured against the real frames.

1. Segments: stretches of `length` frames inside turns of the prepared sample, so one person
   talks and the other listens throughout. Both people are rendered by the avatar's DialogueNeRF
   from the tracked poses and face states (the speaker from the audio): the clean clips, score 10.
2. Degradations (`minitalk.evaluate.degrade`): level s of a family scores -s.
3. Intra-track stitching: k = 2..4 clips of one segment cut into k consecutive pieces and joined;
   10 - k when the clean clip is among them, else -k (section 4.3).
4. Inter-track fakes: the same person's clean render from a segment of the other role (a
   listening clip in the talking track and vice versa), score 10 - 100.

Every clip of a track is one metric vector (`minitalk.evaluate.preference.TALKING` / `LISTENING`),
computed from FaceMesh readings of its frames against the segment's real frames. Stitched clips
reuse their pieces' per-frame readings, as reading the stitched video would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import minitalk
from minitalk import io, metrics
from minitalk.evaluate import degrade, sync
from minitalk.evaluate.faces import FaceModel, FaceReadings, read_panels
from minitalk.evaluate.preference import (
    LISTENING,
    TALKING,
    PreferenceData,
    save_data,
    save_scores,
    train_score,
    vector,
)
from minitalk.evaluate.scores import PREFERENCE_FILE, Derived, role_metrics
from minitalk.nerf import checkpoint
from minitalk.nerf.render import render_frame
from minitalk.pose.generator import speaker_track, turn_segments
from minitalk.prepare import data


@dataclass
class Clip:
    """One person's clip of one segment, as measured: what a metric vector is computed from."""

    family: str
    level: int
    score: float
    readings: FaceReadings
    psnr: np.ndarray  # (T,) against the segment's real frames
    ssim: np.ndarray  # (T,)
    envelope: np.ndarray  # (T,) the speech it plays with


def choose_segments(
    speaking: np.ndarray, n_segments: int, length: int, margin: int = 3
) -> list[tuple[int, int]]:
    """`n_segments` windows (start, speaker) of `length` frames inside turns, spread over the clip."""
    speaker = speaker_track(speaking)
    windows = []
    for a, b in turn_segments(speaker):
        if speaker[a] < 0:
            continue
        for start in range(a + margin, b - margin - length + 1, length):
            windows.append((start, int(speaker[a])))
    if not windows:
        raise ValueError(f"no turn holds {length + 2 * margin} frames")
    pick = np.linspace(0, len(windows) - 1, min(n_segments, len(windows))).round().astype(int)
    return [windows[i] for i in pick]


def _image_scores(frames: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = frames.astype(np.float64) / 255, real.astype(np.float64) / 255
    return (np.array([metrics.psnr(x, y) for x, y in zip(a, b, strict=True)]),
            np.array([metrics.ssim(x, y) for x, y in zip(a, b, strict=True)]))  # fmt: skip


def metric_vector(track: str, clip: Clip, real: Derived, model: FaceModel, fps: float) -> np.ndarray:
    """The clip's metrics in the order of `TALKING` or `LISTENING`, computed as `minitalk evaluate`
    computes a role's (`minitalk.evaluate.scores.role_metrics`), against the segment's real frames."""
    every = np.ones(len(clip.psnr), bool)
    envelope = clip.envelope if track == "talking" else None
    values = role_metrics(Derived.of(clip.readings, model), every, fps, envelope,
                          list(zip(clip.psnr, clip.ssim, strict=True)), real, None, aligned=True)  # fmt: skip
    return vector(values, TALKING if track == "talking" else LISTENING)


def build(prepared, avatar, n_segments: int = 12, length: int = 40, n_stitched: int = 6, seed: int = 0,
          progress: bool = True) -> dict:  # fmt: skip
    """The preference data of both tracks, {"talking": PreferenceData, "listening": ...}, plus
    "segments" and "examples" (per family, the frame of its first segment where the mouth is
    widest, clean and at each level, for figures)."""
    rng = np.random.default_rng(seed)
    tracks = data.load_tracks(prepared)
    fps = float(tracks["fps"])
    net, frames = checkpoint.load_exported(avatar, prepared)
    size = frames.size
    audio = io.read_audio(f"{prepared}/audio.wav")
    segments = choose_segments(tracks["speaking"], n_segments, length)
    models = [FaceModel.from_tracks(tracks, p, size) for p in range(2)]

    renders, reals = render_segments(net, frames, segments, length, progress)
    # the real frames' readings, pose and expression: computed once, compared with every clip
    real_derived = {(s, p): Derived.of(read_panels(img), models[p]) for (s, p), img in reals.items()}

    def segment_audio(start: int) -> np.ndarray:
        a, b = int(round(start / fps * io.SAMPLE_RATE)), int(round((start + length) / fps * io.SAMPLE_RATE))
        return audio[a:b]

    def measure(family, level, score, imgs, snd, real_key, readings=None) -> Clip:
        psnr, ssim = _image_scores(imgs, reals[real_key])
        readings = readings if readings is not None else read_panels(imgs)
        return Clip(family, level, score, readings, psnr, ssim, sync.speech_envelope(snd, fps, length))

    clips = {}  # (segment, track) -> [Clip]
    examples = {}  # family -> one frame at each level, from the first talking segment
    bar = tqdm(total=len(segments) * 2, desc="degrade and measure", unit="clip set", disable=not progress)
    for s, (start, speaker) in enumerate(segments):
        snd = segment_audio(start)
        for track, p in (("talking", speaker), ("listening", 1 - speaker)):
            clean_imgs = renders[s, p]
            clean = measure("clean", 0, 10.0, clean_imgs, snd, (s, p))
            group = [clean]
            lm, blink = (
                tracks["landmarks"][p, start : start + length],
                tracks["blink"][p, start : start + length],
            )
            widest = int(
                np.argmax(tracks["mouth"][p, start : start + length])
            )  # the frame shown as an example
            same_role = [
                o for o, (_, sp) in enumerate(segments) if o != s and (sp == p) == (track == "talking")
            ]
            for fam in degrade.FAMILIES:
                if track not in fam.tracks:
                    continue
                if fam.name == "replay" and not same_role:
                    continue
                if fam.name == "no_blinks" and not (blink > 0.5).any():
                    continue
                other = renders[same_role[s % len(same_role)], p] if same_role else None
                for i, value in enumerate(fam.levels):
                    level = fam.first_level + i
                    imgs, sound = degrade.apply(fam.name, value, clean_imgs, snd, fps, lm, blink, other)
                    reuse = clean.readings if imgs is clean_imgs else None
                    group.append(measure(fam.name, level, -float(level), imgs, sound, (s, p), reuse))
                    shown = examples.setdefault(fam.name, {"from": (s, track), 0: clean_imgs[widest]})
                    if shown["from"] == (s, track):
                        shown[level] = imgs[widest]
            group += stitched(group, n_stitched, rng)
            clips[s, track] = group
            bar.update()
    bar.close()
    add_fakes(clips, segments, renders, reals)
    out = {"segments": segments, "examples": examples, "clips": clips, "fps": fps}
    for track, names in (("talking", TALKING), ("listening", LISTENING)):
        rows = []
        for s, (_, speaker) in enumerate(segments):
            p = speaker if track == "talking" else 1 - speaker
            for c in clips[s, track]:
                row = metric_vector(track, c, real_derived[s, p], models[p], fps)
                rows.append((row, c.score, s, c.family, c.level))
        X, score, seg, fam, lev = zip(*rows, strict=True)
        out[track] = PreferenceData(track, names, np.stack(X), np.array(score), np.array(seg), np.array(seg),
                                    np.array(fam), np.array(lev))  # fmt: skip
    return out


def render_segments(net, frames, segments, length: int, progress: bool = True) -> tuple[dict, dict]:
    """Each segment's frames of both people rendered on the CPU and their real frames, keyed
    (segment, person): (length, S, S, 3) uint8."""
    renders, reals = {}, {}
    bar = tqdm(total=len(segments) * 2 * length, desc="render segments", unit="frame", disable=not progress)
    for s, (start, _) in enumerate(segments):
        for p in range(2):
            out = []
            for t in range(start, start + length):
                out.append(
                    (render_frame(net, frames, p, t, torch.device("cpu")) * 255).round().astype(np.uint8)
                )
                bar.update()
            renders[s, p] = np.stack(out)
            reals[s, p] = frames.images[p, start : start + length].numpy()
    bar.close()
    return renders, reals


def add_fakes(clips: dict, segments, renders: dict, reals: dict) -> None:
    """Append to each (segment, track) group a fake: the person's render from a segment of the
    other role, score 10 - 100 (item 4 above)."""
    for s, (_, speaker) in enumerate(segments):
        for track, p in (("talking", speaker), ("listening", 1 - speaker)):
            other = [o for o, (_, sp) in enumerate(segments) if (sp == p) != (track == "talking")]
            if not other:
                continue
            o = other[s % len(other)]
            src = clips[o, "talking" if track == "listening" else "listening"][0]
            psnr, ssim = _image_scores(renders[o, p], reals[s, p])
            clips[s, track].append(
                Clip("fake", 0, 10.0 - 100, src.readings, psnr, ssim, clips[s, track][0].envelope)
            )


def stitched(group: list[Clip], n: int, rng: np.random.Generator) -> list[Clip]:
    """Section 4.3's intra-track stitching: `n` clips of k = 2..4 pieces from distinct clips of the
    group; 10 - k if the clean clip (the group's first) is among them, else -k."""
    out = []
    length = len(group[0].psnr)
    for _ in range(n):
        k = int(rng.integers(2, 5))
        chosen = rng.choice(len(group), size=k, replace=False)
        cuts = np.linspace(0, length, k + 1).round().astype(int)
        parts = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        pieces = [group[c] for c in chosen]
        out.append(Clip(
            "stitched", 0, float(10 - k if 0 in chosen else -k),
            FaceReadings.concatenate([c.readings.take(sl) for c, sl in zip(pieces, parts, strict=True)]),
            np.concatenate([c.psnr[sl] for c, sl in zip(pieces, parts, strict=True)]),
            np.concatenate([c.ssim[sl] for c, sl in zip(pieces, parts, strict=True)]),
            np.concatenate([c.envelope[sl] for c, sl in zip(pieces, parts, strict=True)]),
        ))  # fmt: skip
    return out


BUILT_FROM = (
    "known orderings of degraded renders of minitalk's synthetic sample (not human rankings): "
    "{segments} segments of {length} frames, the shipped avatar, seed {seed}"
)
SHIPPED_DATA = minitalk.SAMPLE_DIR / "preference_data.npz"  # what the shipped score learned from


def train_shipped(prepared, avatar, out_dir, n_segments: int = 24, length: int = 40, seed: int = 0) -> Path:
    """The files `minitalk evaluate` and notebook 07 use: the preference data of the sample
    (`preference_data.npz`: up to `n_segments` segments, every 40-frame window inside the sample's
    turns when there are fewer) and the Preference Score of both tracks trained on all of it
    (`preference.pt`)."""
    built = build(prepared, avatar, n_segments, length, seed=seed, progress=True)
    about = BUILT_FROM.format(segments=len(built["segments"]), length=length, seed=seed)
    out_dir = Path(out_dir)
    save_data(out_dir / SHIPPED_DATA.name, built, about)
    scores = {track: train_score(built[track], seed) for track in ("talking", "listening")}
    save_scores(out_dir / PREFERENCE_FILE.name, scores, about)
    return out_dir


if __name__ == "__main__":
    import argparse

    from minitalk.dialogue.avatar import load_avatar
    from minitalk.prepare.data import prepare_sample

    ap = argparse.ArgumentParser(
        description="Build the sample's preference data and train the shipped score."
    )
    ap.add_argument("--out-dir", default=str(minitalk.SAMPLE_DIR))
    args = ap.parse_args()
    avatar = minitalk.SAMPLE_DIR / "avatars.pt"
    folder = prepare_sample(load_avatar(avatar).size)  # the crops the avatar was trained on
    out = train_shipped(folder, avatar, args.out_dir)
    print(f"wrote {out / SHIPPED_DATA.name} and {out / PREFERENCE_FILE.name}")
