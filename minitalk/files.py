"""Reading back the files minitalk writes, checked: one loader per container, one error type.

Every file the project writes and reads again (a prepared folder's `tracks.npz` and
`masks.npz`, a training checkpoint, an exported model) is opened here, so each failure
reads the same way: the file's path, what kind of file was expected, and what is wrong
(missing, truncated or corrupt, not a minitalk file, another format version). Torch
files are always opened with `weights_only=True`; a file that holds pickled Python
objects is refused as not one of ours, and the error never suggests the unsafe load.

Files carry `format_version`; files written before it existed count as version 1.
"""

from __future__ import annotations

import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1


class FileFormatError(ValueError):
    """A file minitalk should have written cannot be used; the message names it and says why."""


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _check_zip(path: Path, kind: str) -> None:
    """Both containers are zip archives: tell a foreign file from a truncated one by their ends."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected {_a(kind)})")
    if not path.is_file():
        raise FileFormatError(f"{path}: not a file (expected {_a(kind)})")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise FileFormatError(f"{path}: empty file (expected {_a(kind)})")
    if head != b"PK\x03\x04":  # a zip archive's first local header
        raise FileFormatError(f"{path}: not a minitalk {kind} (not a file minitalk writes)")
    if not zipfile.is_zipfile(path):  # starts like one, but the central directory at the end is gone
        raise FileFormatError(f"{path}: truncated or corrupt {kind} (the archive's end is missing)")


def _check_keys(path: Path, kind: str, found, required) -> None:
    missing = [k for k in required if k not in found]
    if missing:
        raise FileFormatError(f"{path}: not a minitalk {kind} (missing {', '.join(missing[:4])})")


def _check_version(path: Path, kind: str, version) -> None:
    version = 1 if version is None else int(version)
    if version != FORMAT_VERSION:
        raise FileFormatError(
            f"{path}: {_a(kind)} of format version {version}; this minitalk reads version {FORMAT_VERSION} "
            "(write it again with this version)"
        )


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.split(". ")[0].splitlines()[0] if text else type(err).__name__


def load_npz(path, kind: str, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, read eagerly (so a corrupt member fails here, named)."""
    path = Path(path)
    _check_zip(path, kind)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as err:
        raise FileFormatError(f"{path}: truncated or corrupt {kind} ({_first_line(err)})") from None
    _check_keys(path, kind, arrays, required)
    _check_version(path, kind, arrays.pop("format_version", None))
    return arrays


def load_torch(path, kind: str, required: tuple[str, ...] = ()) -> dict:
    """A dict saved with `torch.save`, loaded safely (`weights_only=True`) onto the CPU."""
    path = Path(path)
    _check_zip(path, kind)
    with zipfile.ZipFile(path) as archive:
        if not any(name.endswith("/data.pkl") for name in archive.namelist()):  # torch.save's layout
            raise FileFormatError(
                f"{path}: not a minitalk {kind} (a zip archive, but not one torch.save wrote)"
            )
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        # weights_only refuses arbitrary Python objects: a file minitalk wrote never holds any
        raise FileFormatError(
            f"{path}: not a minitalk {kind} (it holds Python objects beyond tensors, which are not loaded)"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise FileFormatError(f"{path}: truncated or corrupt {kind} ({_first_line(err)})") from None
    if not isinstance(state, dict):
        raise FileFormatError(f"{path}: not a minitalk {kind} (holds a {type(state).__name__}, not a dict)")
    _check_keys(path, kind, state, required)
    _check_version(path, kind, state.get("format_version"))
    return state
