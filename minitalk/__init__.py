"""minitalk: face-to-face conversation video generation with neural radiance fields.

A small, readable reference implementation of DialogueNeRF (Yan et al.), with
ideas from ER-NeRF, the Disentangling Head NeRF and the Preference Score.
Modules are imported on first use, so `import minitalk as mt` is cheap and
`mt.io`, `mt.rays`, `mt.pose`, ... work without importing each one.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data_samples"

_SUBMODULES = (
    "audio",
    "camera",
    "cli",
    "data",
    "demo",
    "dialogue_nerf",
    "diarize",
    "encoding",
    "expression",
    "face",
    "files",
    "headpose",
    "io",
    "masks",
    "metrics",
    "nerf",
    "pose",
    "pose_eval",
    "prepare_eval",
    "rays",
    "rays_torch",
    "render",
    "sources",
    "synthetic",
    "train",
    "utils",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"minitalk.{name}")
    raise AttributeError(f"module 'minitalk' has no attribute {name!r}")
