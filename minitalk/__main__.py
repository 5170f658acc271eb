"""`python -m minitalk ...` is the same as the `minitalk` command."""

import sys

from minitalk.cli import main

if __name__ == "__main__":
    sys.exit(main())
