"""Rendering a new conversation from new speech with the shipped avatar file; prints one JSON line.

Goals: a whole `minitalk render` faster than real time on 2 CPU cores at 128 px per person,
everything included (`whole_render_by_size["128"]["realtime_factor"]` >= 1.0: seconds of clip per
second of wall time); 512 px frame pairs at >= 5 per second on 2 CPU cores
(`whole_render_by_size["512"]["frame_pairs_per_second"]`) and >= 100 on a GPU, pure PyTorch
(`render_fps_gpu_512`, where CUDA is), with the shipped 256 px avatar and, with `--native-512`, with
an avatar trained at 512 px through a 64 px feature map (`native_512`); with `--paths`, per-pixel
rendering against the 2D neural renderer trained for the same minutes at each size: the neural
path's held-out PSNR within 1 dB of per-pixel's, its CPBD at least per-pixel's. Also: the rendered
speaker is the voice's owner on >= 95% of frames (`turn_accuracy`, against the exact turns of the
sample's new speech); audio and video lengths within one frame; the rendered speaker's mouth, read
from pixels, following the speech loudness at >= 0.6; the generated listener's pitch following the
speaker's loudness at a lag of 0.1-0.8 s, as the sample's listener does; each person's blinks, read
from the rendered pixels as the evaluator reads them (`rendered_blinks_per_second`), within 50% of
the footage's rate (`real_blinks_per_second`); `minitalk evaluate` of the clip against the sample's
footage: each talking row's |AVOffset| <= 1 frame with AVConf >= 0.5 (`talking_av_offset_conf`), and
every row of what a viewer checks passing (`viewer_checks`: clip, footage, verdict); peak memory for
10 minutes of audio <= 1.5 GB and flat in the audio's length.

    python benchmarks/bench_render.py [--size S] [--speed-sizes 128,256,512] [--paths MINUTES]
                                      [--native-512 MINUTES]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scored_run
import torch

import minitalk as mt
from minitalk import metrics
from minitalk.dialogue import render as dialogue
from minitalk.dialogue.avatar import load_avatar
from minitalk.evaluate import degrade, sync
from minitalk.evaluate.clip import evaluate_clip
from minitalk.nerf.render import rendered_size
from minitalk.prepare.expression import blink_from_ear
from minitalk.synthetic import motion, speech

NEURAL_FACTOR = 4  # the 2D neural renderer's upsampling in the path comparison (the shipped avatar's)


def lagged_corr(listener: np.ndarray, loud: np.ndarray, fps: float, max_lag_s: float = 1.0):
    """The lag (seconds) at which `listener` (T,) best follows `loud` (T,), and that correlation."""
    best = (0.0, -1.0)
    for lag in range(int(max_lag_s * fps) + 1):
        r = metrics.correlation(listener[lag:], loud[: len(loud) - lag])
        if np.isfinite(r) and r > best[1]:
            best = (lag / fps, r)
    return round(best[0], 3), round(float(best[1]), 4)


def listener_response(pose: np.ndarray, speaking: np.ndarray, rms: np.ndarray, fps: float):
    """Lag and correlation of whoever listens' pitch (generated or true) against the speaker's RMS."""
    who = np.where(speaking[1] & ~speaking[0], 1, 0)
    listener_pitch = pose[1 - who, np.arange(len(who)), 0]
    return lagged_corr(listener_pitch - listener_pitch.mean(), rms, fps)


def rendered_mouth_and_blink(readings) -> tuple[np.ndarray, np.ndarray]:
    """Each person's mouth opening and blink (2, T) from `minitalk evaluate`'s FaceMesh readings of
    the rendered panels: the dark share of the mouth box (`metrics.mouth_interior`) and the eye
    aspect ratio read as a blink, as the evaluator reads one (`blink_from_ear`); NaN where no face."""
    mouth = np.stack([np.where(r.found, r.interior, np.nan) for r in readings])
    blink = np.full(mouth.shape, np.nan)
    for p, r in enumerate(readings):
        blink[p, r.found] = blink_from_ear(r.ear[r.found])
    return mouth, blink


def listener_expression_scores(prepared: Path) -> dict:
    """The listener-expression TCN on the held-out last 20% of every turn of the prepared sample
    (fitted on the rest, fed the real speaker's pose), against replaying the training frames and
    against each person's mean expression: ExpFD and the correlation of the first coefficients."""
    from minitalk.pose.evaluate import held_out_mask, replay_poses
    from minitalk.pose.face_state import ListenerExpression
    from minitalk.pose.generator import speaker_track

    tracks = mt.prepare.data.load_tracks(prepared)
    exp, pose, speaking = tracks["expression"].astype(np.float32), tracks["pose"], tracks["speaking"]
    held = held_out_mask(speaking)
    model = ListenerExpression(exp.shape[-1]).fit(exp, pose, speaking, tracks["zcr"], tracks["rms"], ~held)
    speaker = speaker_track(speaking)
    t = np.arange(len(speaker))
    listener = 1 - speaker
    real = exp[listener, t][held]
    generated = (
        model.generate(tracks["zcr"], tracks["rms"], pose[speaker, t], speaking)
        + model.expression_mean[listener]
    )[held]
    replay = replay_poses(exp, ~held)[listener, t][held]  # each person's training frames, looped
    mean = model.expression_mean[listener][held]
    fd = {
        k: round(metrics.frechet_distance(v, real), 4)
        for k, v in (
            ("tcn", generated),
            ("replay", replay),
            ("mean", mean),
        )
    }
    corr = {
        k: round(metrics.correlation(v[:, 0], real[:, 0]), 4)
        for k, v in (("tcn", generated), ("replay", replay))
    }
    return {"expfd": fd, "first_coefficient_corr": corr, "held_out_frames": int(held.sum())}


def long_audio_peak_rss(minutes: float, size: int) -> float:
    """Peak resident memory (GB) of a separate process rendering `minutes` of speech (the new
    speech looped) at `size` pixels per person: frames stream to the file, so it stays flat. The
    process's own high-water mark (VmHWM; ru_maxrss can carry the parent's over a fork)."""
    code = (
        "import sys, numpy as np, minitalk as mt\n"
        "from minitalk.dialogue.avatar import load_avatar\n"
        "from minitalk.dialogue.render import render_dialogue\n"
        "wav = mt.io.read_audio(mt.SAMPLE_DIR / 'new_dialogue.wav')\n"
        f"n = int({minutes} * 60 * mt.io.SAMPLE_RATE)\n"
        "mt.io.write_audio(sys.argv[1] + '/long.wav', np.resize(wav, n))\n"
        "render_dialogue(load_avatar(mt.SAMPLE_DIR / 'avatars.pt'), sys.argv[1] + '/long.wav', "
        f"sys.argv[1] + '/long.mp4', size={size}, device='cpu', progress=False)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1e6)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", code, tmp], capture_output=True, text=True, check=True)
    return round(float(out.stdout.split()[-1]), 3)


def whole_render_speed(avatar, wav_path: Path, size: int) -> dict:
    """`render_dialogue` of the whole speech at `size`: the realtime factor (seconds of clip per
    second of wall time, every stage and the video written), frame pairs per second, and the size
    the model rendered (a neural-renderer avatar renders its own size and resizes)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = dialogue.render_dialogue(avatar, wav_path, Path(tmp) / "clip.mp4", size=size, device="cpu",
                                           progress=False)  # fmt: skip
        wall = time.perf_counter() - start
    return {
        "realtime_factor": round(summary["seconds"] / wall, 3),
        "frame_pairs_per_second": summary["frames_per_second"],
        "rendered_at": rendered_size(avatar.model, avatar.size, size),
    }


def compare_paths(sizes: list[int], minutes: float, work: Path) -> dict:
    """Per-pixel rendering against the 2D neural renderer (factor `NEURAL_FACTOR`) at each size: the
    sample prepared at that size, each path trained for `minutes` from scratch in its own process
    (`scored_run.py`) and scored on the same held-out frames."""
    out: dict = {}
    for size in sizes:
        prepared = mt.prepare.prepare(mt.SAMPLE_DIR / "dialogue.mp4", work / f"prepared_{size}", size=size,
                                      progress=False)  # fmt: skip
        for name, factor in (("per_pixel", 1), ("neural", NEURAL_FACTOR)):
            run = work / f"run_{size}_{factor}"
            scores = scored_run.run_apart(prepared, run, {"upsample": factor}, {"minutes": minutes})
            out.setdefault(str(size), {})[name] = scores
    return out


def native_avatar(size: int, factor: int, minutes: float, work: Path) -> dict:
    """An avatar trained at `size` itself, as a user would make one: the sample prepared at `size`,
    `minitalk train --upsample factor --minutes M --export` (a process of its own, so its peak memory
    is its own), then a whole render of the new speech at `size`. The shipped avatar renders 512 px
    from a 128 px feature map; a 512 px avatar with u = 8 from a 64 px one, a quarter of the rays."""
    start = time.perf_counter()
    prepared = mt.prepare.prepare(mt.SAMPLE_DIR / "dialogue.mp4", work / f"prepared_{size}", size=size,
                                  progress=False)  # fmt: skip
    prepare_seconds = time.perf_counter() - start
    avatar_path = work / f"avatar_{size}.pt"
    run = work / f"run_{size}"
    subprocess.run([sys.executable, "-m", "minitalk", "train", str(prepared), "--upsample", str(factor),
                    "--minutes", str(minutes), "--run", str(run), "--export", str(avatar_path), "--quiet"],
                   check=True, capture_output=True)  # fmt: skip
    report = json.loads((run / "train_report.json").read_text())
    avatar = load_avatar(avatar_path)
    return {
        "size": size,
        "upsample": factor,
        "minutes": minutes,
        "prepare_seconds": round(prepare_seconds, 1),
        "steps": report["iterations"],
        "psnr_by_role": report["psnr_by_role"],
        "ssim_by_role": report["ssim_by_role"],
        "psnr": report["psnr"],
        "ssim": report["ssim"],
        "peak_train_gb": report["peak_mem_gb"],
        "avatar_mb": round(avatar_path.stat().st_size / 1e6, 2),
        "whole_render": whole_render_speed(avatar, mt.SAMPLE_DIR / "new_dialogue.wav", size),
    }


KNOWN_SHIFTS = (-6, -3, 3, 6)  # frames the speech is moved later


def known_shifts(readings, audio: np.ndarray, speaking: np.ndarray, fps: float) -> dict:
    """The sync measure on the rendered faces (person 0 smiles with her teeth showing) with the
    speech moved by known frames: per person, the AVOffset found for each shift (it should be the
    shift plus the offset found without one) and the largest miss in frames."""
    n = speaking.shape[1]
    out = {}
    for shift in (0, *KNOWN_SHIFTS):
        envelope = sync.speech_envelope(degrade.shift_audio(audio, shift, fps), fps, n)
        out[shift] = [sync.lip_sync(r.opening[:n], r.interior[:n], envelope, speaking[p])["av_offset"]
                      for p, r in enumerate(readings)]  # fmt: skip
    miss = [max(abs(out[s][p] - out[0][p] - s) for s in KNOWN_SHIFTS) for p in range(len(readings))]
    return {"found": {str(s): v for s, v in out.items()}, "largest_miss_frames": miss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=mt.SAMPLE_DIR / "avatars.pt",
                        help="avatar file (default: the shipped one, trained on the sample)")  # fmt: skip
    parser.add_argument("--size", type=int, help="pixels per person (default: the avatar's)")
    parser.add_argument("--speed-sizes", default="128,256,512",
                        help="sizes at which the whole render is also timed")  # fmt: skip
    parser.add_argument("--paths", type=float, metavar="MINUTES",
                        help="also train per-pixel and neural-renderer models for MINUTES each at every "
                        "--path-sizes size and compare them")  # fmt: skip
    parser.add_argument("--path-sizes", default="128,256,512")
    parser.add_argument("--native-512", type=float, metavar="MINUTES",
                        help="also prepare the sample at 512 px, train it with --upsample 8 for MINUTES and "
                        "time its whole render at 512 px (`native_512`)")  # fmt: skip
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--long-size", type=int, default=16, help="pixels per person for the memory run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    avatar = load_avatar(args.avatar)
    args.size = args.size or avatar.size
    result: dict = {
        "bench": "render",
        "avatar": args.avatar.name,
        "size": args.size,
        "upsample": avatar.model.config.upsample,
    }
    wav_path = mt.SAMPLE_DIR / "new_dialogue.wav"
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        start = time.perf_counter()
        avatar = load_avatar(args.avatar)  # loading counts
        summary = dialogue.render_dialogue(
            avatar, wav_path, clip, size=args.size, device="cpu", progress=False
        )
        wall = time.perf_counter() - start
        result["clip_seconds"] = summary["seconds"]
        result["realtime_factor"] = round(summary["seconds"] / wall, 3)
        result["frames_per_second"] = summary["frames_per_second"]
        result["stage_seconds"] = summary["stage_seconds"]
        info = mt.io.probe(clip)
        n_video = sum(1 for _ in mt.io.iter_frames(clip))
        n_audio = len(mt.io.read_audio(clip)) / mt.io.SAMPLE_RATE * info.fps
        result["av_duration_diff_frames"] = round(abs(n_video - n_audio), 2)

        audio = mt.io.read_audio(wav_path)
        plan = dialogue.plan_dialogue(avatar, audio)  # the same plan the clip was rendered from
        truth = motion.speech_truth(
            audio, speech.script_turns(audio, speech.NEW_SCRIPT, 16_000), 16_000, plan.fps
        )
        n = min(plan.n_frames, truth["speaking"].shape[1])
        result["turn_accuracy"] = round(
            float((plan.roles.speaking[:, :n] == truth["speaking"][:, :n]).all(0).mean()), 4
        )

        report = evaluate_clip(clip, prepared=mt.prepare.data.prepare_sample(avatar.size), progress=False)
        # the rendered faces are read once, by the evaluation
        mouth, rendered_blink = rendered_mouth_and_blink(report["_readings"]["clip"])
        mouth = mouth[:, :n]
        loud, speaking = plan.rms[:n], truth["speaking"][:, :n]
        per_person, per_person_truth, pooled = [], [], ([], [], [])
        for p in range(2):
            sel = speaking[p] & np.isfinite(mouth[p])
            per_person.append(round(metrics.correlation(mouth[p, sel], loud[sel]), 4))
            per_person_truth.append(round(metrics.correlation(mouth[p, sel], truth["mouth"][p, :n][sel]), 4))
            for store, values in zip(
                pooled, (mouth[p, sel], loud[sel], truth["mouth"][p, :n][sel]), strict=True
            ):
                store.append(values)
        m, l_, g = (np.concatenate(x) for x in pooled)
        result["speaker_mouth_audio_corr"] = round(metrics.correlation(m, l_), 4)
        result["speaker_mouth_audio_corr_per_person"] = per_person
        result["speaker_mouth_truth_corr"] = round(metrics.correlation(m, g), 4)
        result["speaker_mouth_truth_corr_per_person"] = per_person_truth
        result["mouth_frames_read"] = int(sum(len(x) for x in pooled[0]))
        result["talking_av_offset_conf"] = [
            [person["talking"].get("av_offset"), round(person["talking"].get("av_conf", float("nan")), 3)]
            for person in report["per_person"]
        ]
        result["talking_known_shifts"] = known_shifts(report["_readings"]["clip"], audio, speaking, plan.fps)
        result["viewer_checks"] = {
            f"{c['check']}, person {c['person']}": [round(c["clip"], 4), round(c["footage"], 4), c["verdict"]]
            for c in report["viewer_checks"]
        }

    result["listener_lag_s_corr"] = listener_response(plan.pose, plan.roles.speaking, plan.rms, plan.fps)
    with np.load(mt.SAMPLE_DIR / "dialogue_gt.npz") as z:
        gt = {k: z[k] for k in z.files}
    _, sample_rms = mt.prepare.audio.zcr_rms(
        mt.io.read_audio(mt.SAMPLE_DIR / "dialogue.mp4"), 16_000, float(gt["fps"]), gt["pose"].shape[1]
    )
    result["sample_listener_lag_s_corr"] = listener_response(
        gt["pose"], gt["speaking"], sample_rms, float(gt["fps"])
    )

    def rates(blinks, fps):  # blinks per second of each person's blink signal (T,), NaN frames dropped
        return [round(metrics.blink_statistics(b[np.isfinite(b)], fps)["blink_rate"], 3) for b in blinks]

    result["blinks_per_second"] = rates(plan.blink, plan.fps)  # planned
    result["rendered_blinks_per_second"] = rates(rendered_blink, plan.fps)  # read from the pixels
    result["real_blinks_per_second"] = rates(gt["blink"], float(gt["fps"]))  # the sample's footage
    result["avatar_blink_rates"] = np.round(avatar.blinks.rate.astype(float), 3).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = mt.prepare.prepare(mt.SAMPLE_DIR / "dialogue.mp4", Path(tmp) / "prepared", progress=False)
        result["listener_expression"] = listener_expression_scores(prepared)

    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        avatar.model.to(cuda)
        states = dialogue.face_states(avatar, plan, cuda)
        frames = dialogue.dialogue_frames(avatar, plan, states, 512, cuda)
        next(frames)  # warm-up
        torch.cuda.synchronize()
        t0, count = time.perf_counter(), 0
        for _ in zip(range(50), frames, strict=False):
            count += 1
        torch.cuda.synchronize()
        result["render_fps_gpu_512"] = round(count / (time.perf_counter() - t0), 2)
        avatar.model.to("cpu")
    else:
        result["render_fps_gpu_512"] = None
        result["gpu"] = "no CUDA device here: not measured"

    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    result["whole_render_by_size"] = {
        size: whole_render_speed(avatar, wav_path, int(size)) for size in args.speed_sizes.split(",")
    }
    result["long_audio"] = {
        f"{m:g}_min_peak_rss_gb": long_audio_peak_rss(m, args.long_size)
        for m in sorted({min(1.0, args.long_minutes), args.long_minutes})
    }
    result["long_audio_size"] = args.long_size
    if args.paths:
        with tempfile.TemporaryDirectory() as tmp:
            sizes = [int(x) for x in args.path_sizes.split(",")]
            result["paths"] = compare_paths(sizes, args.paths, Path(tmp))
            result["paths_minutes"] = args.paths
    if args.native_512:
        with tempfile.TemporaryDirectory() as tmp:
            result["native_512"] = native_avatar(512, 8, args.native_512, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
