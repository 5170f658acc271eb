"""The `minitalk` command line: one sub-command per pipeline stage that exists.

minitalk demo [--sample DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys

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

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from minitalk.demo import run_demo

            run_demo(args.sample, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"minitalk {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
