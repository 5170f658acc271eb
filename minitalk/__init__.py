"""minitalk: face-to-face conversation video generation with neural radiance fields.

A small, readable reference implementation of DialogueNeRF (Yan et al.), with
ideas from ER-NeRF, the Disentangling Head NeRF and the Preference Score.
Modules are imported on first use, so `import minitalk as mt` is cheap and
`mt.io`, `mt.prepare`, `mt.nerf.rays`, ... work without importing each one.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

# OpenMP threads (torch's, MKL's: GNU OpenMP) that wait at a barrier spin on their core for some
# 300,000 rounds before they sleep; with another busy program on a 2-core laptop, the spinning
# thread takes the core the working one needs, and training runs several times slower. A short
# spin keeps the idle speed and gives the core back under load (docs/results.md, 2026-12-05).
# Set before torch is first imported, which is why it lives here; a user's own setting wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data_samples"

_SUBMODULES = (  # shared foundations, then one folder per stage, in the order of the notebooks
    "camera",
    "cli",
    "demo",
    "dialogue",
    "evaluate",
    "export",
    "files",
    "io",
    "metrics",
    "nerf",
    "pose",
    "prepare",
    "settings",
    "synthetic",
    "utils",
    "walkthrough",
)


def lazy_submodules(package: str, names: tuple[str, ...]):
    """A module `__getattr__` that imports `package.name` on first use (PEP 562)."""

    def __getattr__(name: str):
        if name in names:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_submodules(__name__, _SUBMODULES)
