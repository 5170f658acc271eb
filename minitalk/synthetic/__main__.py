"""`python -m minitalk.synthetic --out data_samples`: regenerate the sample dialogue."""

import argparse

from minitalk.synthetic import SEED, generate


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minitalk.synthetic", description=__doc__)
    parser.add_argument("--out", default="data_samples", help="output folder (default: data_samples)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    args = parser.parse_args(argv)
    generate(args.out, args.seed)


if __name__ == "__main__":
    main()
