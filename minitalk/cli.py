"""The `minitalk` command line: one sub-command per pipeline stage that exists.

minitalk demo [--sample DIR] [--out DIR]
minitalk prepare VIDEO --out DIR [--size 128] [--fps 25]
minitalk prepare --left A.mp4 --right B.mp4 [--audio C.wav] --out DIR
minitalk train DIR [--run RUN] [--iters N] [--minutes M] [--encoding grid|frequency]
"""

from __future__ import annotations

import argparse
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
        help="run every stage that exists on the shipped sample dialogue",
        description="Run every pipeline stage that exists so far on the sample dialogue, "
        "write what they produce to --out, and list the stages still to come.",
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
    tr.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    tr.add_argument("--export", metavar="PATH", help="also write the trained model, slimmed, to PATH")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from minitalk.demo import run_demo

            run_demo(args.sample, args.out)
        elif args.command == "prepare":
            import json
            import warnings

            from minitalk.data import prepare

            warnings.simplefilter("always")
            warnings.formatwarning = lambda msg, *a, **k: f"minitalk prepare: warning: {msg}\n"
            out = prepare(
                args.video, args.out, left=args.left, right=args.right, audio=args.audio,
                size=args.size, fps=args.fps, fov=args.fov, progress=not args.quiet,
            )  # fmt: skip
            report = json.loads((out / "prepare_report.json").read_text())
            print(
                f"prepared {report['frames']} frames ({report['seconds']:.1f} s) into {out} "
                f"in {report['total_seconds']:.0f} s; faces found {report['faces_found']}"
            )
        elif args.command == "train":
            from minitalk.dialogue_nerf import DialogueNeRFConfig
            from minitalk.train import TrainingError, train

            config = DialogueNeRFConfig(
                encoding=args.encoding,
                region_attention=not args.no_region_attention,
                deformation=not args.no_deformation,
                expression_planes=0 if args.no_expression_planes else DialogueNeRFConfig.expression_planes,
                torso_lag_s=DialogueNeRFConfig.torso_lag_s if args.torso_lag is None else args.torso_lag,
            )
            try:
                report = train(
                    args.folder, args.run, config, resume=not args.fresh, progress=not args.quiet,
                    iters=args.iters, minutes=args.minutes,
                )  # fmt: skip
            except TrainingError as exc:
                print(f"minitalk train: error: {exc}", file=sys.stderr)
                return 1
            if args.export:
                from minitalk.train import export_model

                run = args.run or str(Path(args.folder) / "run")
                print(f"exported the model to {export_model(run, args.export)}")
            print(
                f"trained {report['iterations']} steps in {report['minutes']:.1f} min; held-out PSNR "
                f"{report['psnr']} dB, SSIM {report['ssim']} (person 0, person 1)"
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"minitalk {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
