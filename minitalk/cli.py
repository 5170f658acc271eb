"""The `minitalk` command line: one sub-command per pipeline stage.

minitalk demo [--sample DIR] [--out DIR]
minitalk prepare VIDEO --out DIR [--size 128] [--fps 25]
minitalk prepare --left A.mp4 --right B.mp4 [--audio C.wav] --out DIR
minitalk prepare --single ONE.mp4 --out DIR
minitalk train DIR [DIR ...] [--run RUN] [--iters N] [--minutes M] [--export AVATAR] [--names A,B,...]
minitalk render AVATAR AUDIO --out CLIP.mp4 [--people 0,2,3] [--highlight] [--roles SPEC] [--size S]
minitalk evaluate CLIP.mp4 [--reference REAL.mp4 | --prepared DIR] [--avatar AVATAR]

Every option is checked before any work starts; errors name the file or option and exit 1
(2 for a bad option); Ctrl-C saves what can be resumed and exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import minitalk
from minitalk.demo import run_demo
from minitalk.dialogue.avatar import load_avatar
from minitalk.dialogue.render import RenderConfig, RenderInterrupted, render_dialogue
from minitalk.evaluate.clip import EvaluateConfig, evaluate_clip
from minitalk.evaluate.report import report_paths, summary, write_report
from minitalk.export import check_names, export_avatar
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.nerf.train import TrainConfig, TrainingInterrupted, train
from minitalk.prepare.data import PrepareConfig, people_names, prepare
from minitalk.settings import add_options, from_options
from minitalk.utils import MinitalkWarning


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minitalk",
        description="Face-to-face conversation video generation with neural radiance fields.",
    )
    parser.add_argument("--version", action="version", version=f"minitalk {minitalk.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {
        "demo": _demo_parser(commands),
        "prepare": _prepare_parser(commands),
        "train": _train_parser(commands),
        "render": _render_parser(commands),
        "evaluate": _evaluate_parser(commands),
    }
    args = parser.parse_args(argv)
    run = {"demo": _demo, "prepare": _prepare, "train": _train, "render": _render, "evaluate": _evaluate}
    try:
        with _warnings_as_lines(args.command):
            return run[args.command](args, subs[args.command])
    except KeyboardInterrupt:
        print(f"minitalk {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as exc:
        # missing or unreadable inputs, bad media, files minitalk did not write, diverged training
        text = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else exc
        print(f"minitalk {args.command}: error: {text}", file=sys.stderr)
        return 1


# --- the sub-commands' options: inputs here, settings from each stage's config (minitalk.settings) ---


def _demo_parser(commands) -> argparse.ArgumentParser:
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
    return demo


def _prepare_parser(commands) -> argparse.ArgumentParser:
    prep = commands.add_parser(
        "prepare",
        help="turn a video of a conversation (or of one person) into a training-ready folder",
        description="Prepare a conversation for training: audio features, who speaks when, "
        "face crops, 478 landmarks, head pose, expression, blinks, head/torso masks and "
        "background, written to --out (tracks.npz, frames_p*.mp4, masks.npz, audio.wav, "
        "prepare_report.json). Finished stages are cached, so a re-run resumes.",
    )
    prep.add_argument("video", nargs="?", help="a video of two or three people side by side (or in a grid)")
    prep.add_argument("--left", help="the left person's video (instead of VIDEO)")
    prep.add_argument("--right", help="the right person's video (instead of VIDEO)")
    prep.add_argument("--single", metavar="VIDEO", help="one person's video, to train beside others' folders")
    prep.add_argument("--audio", help="the conversation's audio (default: the video's own track)")
    prep.add_argument("--out", required=True, help="output folder")
    add_options(prep, PrepareConfig)
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    return prep


def _train_parser(commands) -> argparse.ArgumentParser:
    tr = commands.add_parser(
        "train",
        help="train the DialogueNeRF on one or more prepared folders",
        description="Train one conditional NeRF for both people of a prepared folder (minitalk "
        "prepare), or for every person of several, numbered in the order given. Checkpoints go to "
        "--run (default DIR/run; several folders need one named) and training resumes from the last "
        "one; at the end train_report.json holds held-out PSNR and SSIM per person.",
    )
    tr.add_argument("folder", metavar="DIR", nargs="+", help="folders written by minitalk prepare")
    tr.add_argument("--run", help="run folder for checkpoints and the report (default: DIR/run)")
    tr.add_argument("--names", help="one name per person, comma-separated, in order (default: from the "
                    "files each folder was prepared from)")  # fmt: skip
    add_options(tr, TrainConfig)
    add_options(tr, DialogueNeRFConfig)
    tr.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    tr.add_argument("--export", metavar="AVATAR", help="also write the avatar file (model, plates, voice "
                    "prints, motion models) that minitalk render takes")  # fmt: skip
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    return tr


def _render_parser(commands) -> argparse.ArgumentParser:
    ren = commands.add_parser(
        "render",
        help="render a new conversation from new speech",
        description="Render a conversation with the avatars of AVATAR (minitalk train --export) speaking "
        "and listening to AUDIO (any audio file, or a video's audio track), two side by side or up to "
        "nine in a grid (--people): who speaks when, head "
        "motion, expressions and blinks are generated. Writes OUT (H.264 + AAC), OUT with .json "
        "(frames, turns, seconds per stage, settings) and OUT_tracks.png.",
    )
    ren.add_argument("avatar", metavar="AVATAR", help="an avatar file written by minitalk train --export")
    ren.add_argument("audio", metavar="AUDIO", help="the new speech")
    ren.add_argument("--out", required=True, help="the clip to write (.mp4)")
    add_options(ren, RenderConfig)
    ren.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ren.add_argument("--quiet", action="store_true", help="no progress bar")
    return ren


def _evaluate_parser(commands) -> argparse.ArgumentParser:
    ev = commands.add_parser(
        "evaluate",
        help="score a rendered clip: image, motion and sync metrics per person and role",
        description="Evaluate CLIP (a square panel per person, side by side or in a grid, as minitalk "
        "render writes; its CLIP.json says how many people a grid holds): "
        "CPBD, blinks, head motion and the sync proxy (AVOffset, AVConf) always; PSNR, SSIM, LMD, "
        "ExpL1 and PoseL1 against real frames of the same moments; PoseFD and ExpFD against any real "
        "footage of the people. Writes CLIP.eval.json, CLIP.eval.md and CLIP.eval.png.",
    )
    ev.add_argument("clip", metavar="CLIP", help="the clip to score (.mp4)")
    add_options(ev, EvaluateConfig, exclusive=("reference", "prepared"))
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    return ev


# --- the sub-commands -------------------------------------------------------------------------


def _demo(args, sub: argparse.ArgumentParser) -> int:
    run_demo(args.sample, args.out)
    return 0


def _prepare(args, sub: argparse.ArgumentParser) -> int:
    cfg = from_options(PrepareConfig, args, sub.error)
    _check_output(sub, "--out", args.out, folder=True)
    started = time.time()
    out = prepare(
        args.video, args.out, left=args.left, right=args.right, single=args.single, audio=args.audio,
        progress=not args.quiet, **asdict(cfg),
    )  # fmt: skip
    report = json.loads((out / "prepare_report.json").read_text())
    if (out / "prepare_report.json").stat().st_mtime < started:  # a finished preparation, returned as it was
        print(f"{out} is already prepared from the same inputs and settings: {report['frames']} frames "
              f"({report['seconds']:.1f} s)")  # fmt: skip
        return 0
    print(
        f"prepared {report['frames']} frames ({report['seconds']:.1f} s) into {out} "
        f"in {report['total_seconds']:.0f} s; faces found {report['faces_found']}; "
        f"who speaks: {report['who_speaks']['method']} ({report['who_speaks']['voice_print']} voice prints)"
    )
    return 0


def _train(args, sub: argparse.ArgumentParser) -> int:
    model_cfg = from_options(DialogueNeRFConfig, args, sub.error)
    train_cfg = from_options(TrainConfig, args, sub.error)
    folders = [Path(f) for f in args.folder]
    for folder in folders:
        if not (folder / "prepare_report.json").is_file():
            what = "no such folder" if not folder.exists() else "not a finished minitalk prepare folder"
            sub.error(f"argument DIR: {folder}: {what} (run minitalk prepare first)")
    if len(folders) > 1 and args.run is None:
        sub.error(f"argument --run: {len(folders)} folders train one model; name its run folder")
    run = Path(args.run) if args.run else folders[0] / "run"
    _check_output(sub, "--run", run, folder=True)
    people = [len(people_names(f)) for f in folders]
    names = check_names(args.names.split(",") if args.names else None, folders, sum(people))
    if args.export:
        _check_output(sub, "--export", args.export, folder=False)
        if max(people) < 2:  # the avatar's motion models learn listening from a conversation
            sub.error(f"argument --export: {', '.join(map(str, folders))}: one person each; an avatar "
                      "file needs a conversation too (a folder of two or more people)")  # fmt: skip
    try:
        report = train(
            folders, run, model_cfg, resume=not args.fresh,
            progress=not args.quiet, **asdict(train_cfg),
        )  # fmt: skip
    except TrainingInterrupted as stop:
        print(
            f"minitalk train: interrupted at step {stop.step}; the checkpoint and train_report.json are in "
            f"{stop.checkpoint.parent}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    if args.export:
        avatar = export_avatar(run / "checkpoint.pt", folders, args.export, names)
        print(f"wrote the avatar file {avatar} ({', '.join(names)})")
    print(
        f"trained {report['iterations']} steps in {report['minutes']:.1f} min; held-out PSNR "
        f"{report['psnr']} dB, SSIM {report['ssim']} ({', '.join(names)}) on "
        f"{report['held_out_frames']} held-out frames"
    )
    seen = "; ".join(
        f"{name}: yaw {r['yaw'][0]:.0f} to {r['yaw'][1]:.0f}, "
        f"pitch {r['pitch'][0]:.0f} to {r['pitch'][1]:.0f}"
        for name, r in zip(names, report["pose_seen"], strict=True)
    )
    print(f"head poses the training frames cover (degrees): {seen}")
    return 0


def _render(args, sub: argparse.ArgumentParser) -> int:
    cfg = from_options(RenderConfig, args, sub.error)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        sub.error(f"argument --out: {out} exists; pass --overwrite to replace it")
    _check_output(sub, "--out", out, folder=False)
    if not Path(args.audio).is_file():
        raise FileNotFoundError(f"{args.audio}: no such file")
    avatar = load_avatar(args.avatar)
    try:
        summary = render_dialogue(
            avatar, args.audio, out, overwrite=args.overwrite, progress=not args.quiet, **asdict(cfg)
        )
    except RenderInterrupted as stop:
        print(f"minitalk render: {stop}; nothing was written to {out}", file=sys.stderr)
        return 130
    print(
        f"rendered {summary['frames']} frames ({summary['seconds']:.1f} s, {len(summary['turns'])} turns) "
        f"in {summary['total_seconds']:.0f} s into {out}"
    )
    return 0


def _evaluate(args, sub: argparse.ArgumentParser) -> int:
    cfg = from_options(EvaluateConfig, args, sub.error)
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
    report = evaluate_clip(clip, progress=not args.quiet, **asdict(cfg))
    paths = write_report(report)
    print(summary(report))
    print(
        f"evaluated {report['frames']} frames in {report['seconds']:.0f} s; wrote "
        + ", ".join(map(str, paths))
    )
    return 0


# --- checks made before any work ---------------------------------------------------------------


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
