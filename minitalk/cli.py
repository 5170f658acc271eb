"""The `minitalk` command line: one sub-command per pipeline stage.

minitalk demo [--sample DIR] [--out DIR]
minitalk prepare VIDEO --out DIR [--size 128] [--fps 25]
minitalk prepare --left A.mp4 --right B.mp4 [--audio C.wav] --out DIR
minitalk train DIR [--run RUN] [--iters N] [--minutes M] [--encoding grid|frequency] [--export AVATAR]
minitalk render AVATAR AUDIO --out CLIP.mp4 [--roles SPEC] [--pose-from POSES] [--size S] [--device D]
minitalk evaluate CLIP.mp4 [--reference REAL.mp4 | --prepared DIR] [--avatar AVATAR]

Every option is checked before any work starts; errors name the file or option and exit 1
(2 for a bad option); Ctrl-C saves what can be resumed and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import minitalk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minitalk",
        description="Face-to-face conversation video generation with neural radiance fields.",
    )
    parser.add_argument("--version", action="version", version=f"minitalk {minitalk.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run every stage on the shipped sample dialogue",
        description="Run every pipeline stage on the sample dialogue (prepare, pose, the shipped "
        "avatar's DialogueNeRF, render new speech, evaluate the clip) and write what they produce to --out.",
    )
    demo.add_argument(
        "--sample",
        default=str(minitalk.SAMPLE_DIR),
        help="folder with dialogue.mp4 and dialogue_gt.npz (default: the shipped sample)",
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")

    prep = commands.add_parser(
        "prepare",
        help="turn a two-person video into a training-ready folder",
        description="Prepare a conversation for training: audio features, who speaks when, "
        "face crops, 478 landmarks, head pose, expression, blinks, head/torso masks and "
        "background, written to --out (tracks.npz, frames_p*.mp4, masks.npz, audio.wav, "
        "prepare_report.json). Finished stages are cached, so a re-run resumes.",
    )
    prep.add_argument("video", nargs="?", help="a video with both people side by side")
    prep.add_argument("--left", help="the left person's video (instead of VIDEO)")
    prep.add_argument("--right", help="the right person's video (instead of VIDEO)")
    prep.add_argument("--audio", help="the conversation's audio (default: the video's own track)")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--size", type=int, default=128, help="crop side in pixels (default: 128)")
    prep.add_argument("--fps", type=float, default=25.0, help="frame rate to resample to (default: 25)")
    prep.add_argument("--fov", type=float, default=26.0, help="assumed field of view, degrees (default: 26)")
    prep.add_argument(
        "--voice-print", default="auto", choices=("auto", "ge2e", "pitch+mfcc"),
        help="how voices are told apart: a learned speaker embedding (ge2e), pitch and MFCC, or "
        "auto: ge2e where its weights are installed (default: auto)",
    )  # fmt: skip
    prep.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = commands.add_parser(
        "train",
        help="train the two-person DialogueNeRF on a prepared folder",
        description="Train one conditional NeRF for both people of a prepared folder (minitalk "
        "prepare). Checkpoints go to --run (default DIR/run) and training resumes from the last one; "
        "at the end train_report.json holds held-out PSNR and SSIM per person.",
    )
    tr.add_argument("folder", metavar="DIR", help="a folder written by minitalk prepare")
    tr.add_argument("--run", help="run folder for checkpoints and the report (default: DIR/run)")
    tr.add_argument("--iters", type=int, default=4000, help="training steps (default: 4000)")
    tr.add_argument("--minutes", type=float, help="wall-clock budget; stops at whichever comes first")
    tr.add_argument("--encoding", choices=["grid", "frequency"], default="grid", help="position encoding")
    tr.add_argument("--no-region-attention", action="store_true", help="turn off ER-NeRF region attention")
    tr.add_argument("--no-deformation", action="store_true", help="turn off the torso deformation field")
    tr.add_argument("--no-expression-planes", action="store_true", help="no expression planes in the head")
    tr.add_argument("--torso-lag", type=float, metavar="SECONDS",
                    help="the torso also sees the head pose trailed over this time (default: 0.5); 0: the "
                    "current pose only")  # fmt: skip
    tr.add_argument("--upsample", type=int, metavar="U",
                    help="2D neural renderer: the fields render a feature map at 1/U of the prepared size "
                    "and a small CNN upsamples it to the full size (2, 4 or 8; 1: a colour per pixel; "
                    "default: 1)")  # fmt: skip
    tr.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    tr.add_argument("--export", metavar="AVATAR", help="also write the avatar file (model, plates, voice "
                    "prints, motion generators) that minitalk render takes")  # fmt: skip
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    ren = commands.add_parser(
        "render",
        help="render a new two-person conversation from new speech",
        description="Render a conversation with the avatars of AVATAR (minitalk train --export) speaking "
        "and listening to AUDIO (any audio file, or a video's audio track): who speaks when, head "
        "motion, expressions and blinks are generated. Writes OUT (H.264 + AAC), OUT with .json "
        "(frames, turns, seconds per stage) and OUT_tracks.png.",
    )
    ren.add_argument("avatar", metavar="AVATAR", help="an avatar file written by minitalk train --export")
    ren.add_argument("audio", metavar="AUDIO", help="the new speech")
    ren.add_argument("--out", required=True, help="the clip to write (.mp4)")
    ren.add_argument("--roles", help="who speaks when, instead of telling the voices apart: "
                     "'0-4.2:0,4.2-9:1' (seconds:person) or a file of such entries")  # fmt: skip
    ren.add_argument(
        "--pose-from", metavar="POSES", help="replay head poses: a .npy (2, T, 6) or a prepared folder"
    )
    ren.add_argument(
        "--size",
        type=int,
        help="pixels per person (default: the avatar's training size; a neural-renderer "
        "avatar renders smaller sizes at its own and resizes)",
    )
    ren.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available")
    ren.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ren.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = commands.add_parser(
        "evaluate",
        help="score a rendered clip: image, motion and sync metrics per person and role",
        description="Evaluate CLIP (one or two square panels side by side, as minitalk render writes): "
        "CPBD, blinks, head motion and the sync proxy (AVOffset, AVConf) always; PSNR, SSIM, LMD, "
        "ExpL1 and PoseL1 against real frames of the same moments; PoseFD and ExpFD against any real "
        "footage of the people. Writes CLIP.eval.json, CLIP.eval.md and CLIP.eval.png.",
    )
    ev.add_argument("clip", metavar="CLIP", help="the clip to score (.mp4)")
    real = ev.add_mutually_exclusive_group()
    real.add_argument("--reference", metavar="REAL", help="a clip of real frames in the same layout")
    real.add_argument("--prepared", metavar="DIR", help="a folder written by minitalk prepare")
    ev.add_argument(
        "--avatar", help="an avatar file: its voice prints say who speaks, when CLIP has no .json"
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    args = parser.parse_args(argv)
    sub = {"demo": demo, "prepare": prep, "train": tr, "render": ren, "evaluate": ev}[args.command]
    try:
        with _warnings_as_lines(args.command):
            if args.command == "demo":
                return _demo(args)
            if args.command == "prepare":
                return _prepare(args, sub)
            if args.command == "render":
                return _render(args, sub)
            if args.command == "evaluate":
                return _evaluate(args, sub)
            return _train(args, sub)
    except KeyboardInterrupt:
        print(f"minitalk {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        # missing or unreadable inputs, bad media, files minitalk did not write, diverged training
        text = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else exc
        print(f"minitalk {args.command}: error: {text}", file=sys.stderr)
        return 1


def _demo(args) -> int:
    from minitalk.demo import run_demo

    run_demo(args.sample, args.out)
    return 0


def _prepare(args, sub: argparse.ArgumentParser) -> int:
    import json

    from minitalk.prepare.data import PrepareConfig, prepare

    settings = {"size": args.size, "fps": args.fps, "fov": args.fov, "voice_print": args.voice_print}
    _check_settings(sub, lambda: PrepareConfig(**settings))
    _check_output(sub, "--out", args.out, folder=True)
    out = prepare(
        args.video, args.out, left=args.left, right=args.right, audio=args.audio,
        progress=not args.quiet, **settings,
    )  # fmt: skip
    report = json.loads((out / "prepare_report.json").read_text())
    print(
        f"prepared {report['frames']} frames ({report['seconds']:.1f} s) into {out} "
        f"in {report['total_seconds']:.0f} s; faces found {report['faces_found']}; "
        f"who speaks: {report['who_speaks']['method']} ({report['who_speaks']['voice_print']} voice prints)"
    )
    return 0


def _train(args, sub: argparse.ArgumentParser) -> int:
    from minitalk.dialogue.avatar import build_avatar
    from minitalk.nerf.model import DialogueNeRFConfig
    from minitalk.nerf.train import TrainConfig, TrainingInterrupted, train

    def model_config():
        return DialogueNeRFConfig(
            encoding=args.encoding,
            region_attention=not args.no_region_attention,
            deformation=not args.no_deformation,
            expression_planes=0 if args.no_expression_planes else DialogueNeRFConfig.expression_planes,
            torso_lag_s=DialogueNeRFConfig.torso_lag_s if args.torso_lag is None else args.torso_lag,
            upsample=DialogueNeRFConfig.upsample if args.upsample is None else args.upsample,
        )

    config = _check_settings(sub, model_config)
    _check_settings(sub, lambda: TrainConfig(iters=args.iters, minutes=args.minutes))
    folder = Path(args.folder)
    if not (folder / "prepare_report.json").is_file():
        what = "no such folder" if not folder.exists() else "not a finished minitalk prepare folder"
        sub.error(f"argument DIR: {folder}: {what} (run minitalk prepare first)")
    _check_output(sub, "--run", args.run or folder / "run", folder=True)
    if args.export:
        _check_output(sub, "--export", args.export, folder=False)
    try:
        report = train(
            args.folder, args.run, config, resume=not args.fresh, progress=not args.quiet,
            iters=args.iters, minutes=args.minutes,
        )  # fmt: skip
    except TrainingInterrupted as stop:
        print(
            f"minitalk train: interrupted at step {stop.step}; the checkpoint and train_report.json are in "
            f"{stop.checkpoint.parent}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    if args.export:
        checkpoint = Path(args.run or folder / "run") / "checkpoint.pt"
        print(f"wrote the avatar file {build_avatar(checkpoint, folder, args.export)}")
    print(
        f"trained {report['iterations']} steps in {report['minutes']:.1f} min; held-out PSNR "
        f"{report['psnr']} dB, SSIM {report['ssim']} (person 0, person 1) on "
        f"{report['held_out_frames']} held-out frames"
    )
    seen = "; ".join(
        f"person {p}: yaw {r['yaw'][0]:.0f} to {r['yaw'][1]:.0f}, "
        f"pitch {r['pitch'][0]:.0f} to {r['pitch'][1]:.0f}"
        for p, r in enumerate(report["pose_seen"])
    )
    print(f"head poses the training frames cover (degrees): {seen}")
    return 0


def _render(args, sub: argparse.ArgumentParser) -> int:
    from minitalk.dialogue.avatar import load_avatar
    from minitalk.dialogue.render import RenderInterrupted, render_dialogue

    if args.size is not None and not 16 <= args.size <= 2048:
        sub.error(f"argument --size: must be a whole number of pixels from 16 to 2048, got {args.size}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        sub.error(f"argument --out: {out} exists; pass --overwrite to replace it")
    _check_output(sub, "--out", out, folder=False)
    if not Path(args.audio).is_file():
        raise FileNotFoundError(f"{args.audio}: no such file")
    avatar = load_avatar(args.avatar)
    try:
        summary = render_dialogue(
            avatar, args.audio, out, size=args.size, device=args.device, roles=args.roles,
            pose_from=args.pose_from, overwrite=args.overwrite, progress=not args.quiet,
        )  # fmt: skip
    except RenderInterrupted as stop:
        print(f"minitalk render: {stop}; nothing was written to {out}", file=sys.stderr)
        return 130
    print(
        f"rendered {summary['frames']} frames ({summary['seconds']:.1f} s, {len(summary['turns'])} turns) "
        f"in {summary['total_seconds']:.0f} s into {out}"
    )
    return 0


def _evaluate(args, sub: argparse.ArgumentParser) -> int:
    from minitalk.evaluate.clip import evaluate_clip
    from minitalk.evaluate.report import report_paths, summary, write_report

    clip = Path(args.clip)
    if not clip.is_file():
        sub.error(f"argument CLIP: {clip}: no such file")
    for flag, path in (("--reference", args.reference), ("--avatar", args.avatar)):
        if path is not None and not Path(path).is_file():
            sub.error(f"argument {flag}: {path}: no such file")
    if args.prepared is not None and not (Path(args.prepared) / "prepare_report.json").is_file():
        sub.error(f"argument --prepared: {args.prepared}: not a finished minitalk prepare folder")
    for path in report_paths(clip):
        _check_output(sub, "CLIP", path, folder=False)
    report = evaluate_clip(clip, reference=args.reference, prepared=args.prepared, avatar=args.avatar,
                           progress=not args.quiet)  # fmt: skip
    paths = write_report(report)
    print(summary(report))
    print(
        f"evaluated {report['frames']} frames in {report['seconds']:.0f} s; wrote "
        + ", ".join(map(str, paths))
    )
    return 0


# --- checks made before any work ---------------------------------------------------------------

FLAGS = {"torso_lag_s": "--torso-lag", "n_expression": None, "max_gap_s": None, "crop_scale": None}


def _check_settings(sub: argparse.ArgumentParser, make):
    """Build a config; a setting out of range ends the command as argparse would, naming its flag."""
    from minitalk.utils import SettingError

    try:
        return make()
    except SettingError as err:
        flag = FLAGS.get(err.name, "--" + err.name.replace("_", "-"))
        sub.error(f"argument {flag}: must be {err.expected}, got {err.got}")


def _check_output(sub: argparse.ArgumentParser, flag: str, path, folder: bool) -> None:
    """An output path must be creatable: not an existing thing of the other kind, under a folder this
    user may write in. Nothing is created here; the command creates it once every check passed."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            sub.error(f"argument {flag}: {path} exists and is a file, not a folder")
        if not folder and path.is_dir():
            sub.error(f"argument {flag}: {path} is a folder; give a file name")
        target = path if folder else path.parent
    else:
        target = path.parent
    while not target.exists():  # the nearest existing folder above: the one the command writes in
        target = target.parent
    if not target.is_dir():
        sub.error(f"argument {flag}: cannot create {path}: {target} is a file, not a folder")
    if not os.access(target, os.W_OK | os.X_OK) or _is_virtual_fs(target):
        sub.error(f"argument {flag}: cannot create {path}: {target} is not writable")


def _is_virtual_fs(path: Path) -> bool:
    """/proc and /sys accept no new files, whatever their permission bits say to root."""
    parts = path.resolve().parts
    return len(parts) > 1 and parts[1] in ("proc", "sys")


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """minitalk's own warnings as one console line each (`minitalk prepare: warning: ...`), every
    time they are issued; other libraries' warnings keep Python's usual form. Restored on exit."""
    import warnings

    from minitalk.utils import MinitalkWarning

    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, MinitalkWarning):
                return default(message, category, filename, lineno, file, line)
            print(f"minitalk {command}: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        warnings.filterwarnings("always", category=MinitalkWarning)
        yield


def _resume_hint(args) -> str:
    if args.command == "prepare":
        return f"; finished stages are kept in {Path(args.out) / '.cache'} and a re-run resumes from them"
    if args.command == "train":
        return "; the last checkpoint is kept and the same command resumes from it"
    if args.command == "render":
        return f"; nothing was written to {args.out}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
