"""Small helpers every module shares: the device, the allocator, seeding, checked figures and
compact images for notebooks, atomic writes, a low-pass filter, and silencing what native
libraries print."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import queue
import random
import signal
import sys
import threading
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch


class MinitalkWarning(UserWarning):
    """The base of minitalk's own warnings: the command line prints each as one line."""


class SettingError(ValueError):
    """A setting outside its range; `name` is the config field, so a command line can name its flag."""

    def __init__(self, name: str, expected: str, got):
        super().__init__(f"{name} must be {expected}, got {got}")
        self.name, self.expected, self.got = name, expected, got


def get_device(prefer: str | None = None):
    """The torch device to run on: CUDA when available, else CPU.

    `prefer` ("cpu" or "cuda") overrides the choice; asking for CUDA on a machine
    without it is an error rather than a silent fallback.
    """
    if prefer == "cpu":
        return torch.device("cpu")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.cache
def keep_freed_memory(trim_bytes: int = 1 << 30, mmap_bytes: int = 32 << 20) -> bool:
    """Have glibc's allocator keep freed memory for the next tensor instead of returning it to the OS.

    Torch on a CPU allocates and frees tensors of megabytes in every layer. By default glibc
    hands freed memory at the top of its heap back to the OS and maps tensors over a
    threshold afresh, so the next tensor page-faults its memory in again, which doubled the
    time per sample (docs/results.md, "Keeping freed memory"). Up to `trim_bytes` of free heap
    is kept and blocks under `mmap_bytes` come from the heap; peak memory does not change.
    Called by training and rendering; once per process. Returns False where the C library
    is not glibc (macOS, Windows, musl), where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
        return bool(libc.mallopt(m_trim_threshold, trim_bytes) and libc.mallopt(m_mmap_threshold, mmap_bytes))
    except (OSError, AttributeError):
        return False


def set_seed(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for local use."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (the legacy global state, for code that still uses it)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def compact_figures(colours: int = 256, dpi: int = 100) -> bool:
    """Show a notebook's matplotlib figures as PNG at `dpi` with a palette of `colours`.

    A figure of photographs (faces, frames) saved as full-colour PNG takes hundreds of kilobytes;
    with a 256-colour palette (Floyd-Steinberg dithered) it keeps its look at about a third of the
    bytes, which keeps the saved notebooks small. Called in a notebook's first cell, after pyplot
    is imported; outside IPython it does nothing and returns False.
    """
    # lazy: only notebooks draw figures, and every module imports this one
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from PIL import Image

    try:  # IPython is there only inside a notebook or console
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    plt.close(plt.figure())  # pyplot picks its backend on first use, and the inline one then
    # registers its own PNG formatter: let it do so first, then replace it

    def png(fig: Figure) -> bytes:
        raw = BytesIO()
        fig.savefig(raw, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
        image = Image.open(raw).convert("RGB").quantize(colours, dither=Image.Dither.FLOYDSTEINBERG)
        out = BytesIO()
        image.save(out, format="png", optimize=True)
        return out.getvalue()

    shell.display_formatter.formatters["image/png"].for_type(Figure, png)
    return True


WORK_VARIABLE = "MINITALK_WORK"  # set: the notebooks chain through this folder (`minitalk.walkthrough`)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in 0..1 (any shape) as 8-bit grey levels, rounded to the nearest and clipped."""
    return (np.clip(images, 0, 1) * 255 + 0.5).astype(np.uint8)


def approx(value: float, expected: float, tol: float, fmt: str = ".2f") -> str:
    """`value` formatted with `fmt`, followed by what it is checked against: "27.4 (expected 26.9 ± 1)".

    Raises AssertionError when |value - expected| > tol. A figure computed from floating point can
    move in its last digits from one machine to another even with fixed seeds and step counts (the
    CPU's vector width changes the order of sums in BLAS, torch and MediaPipe; training then
    carries the difference forward), so a notebook states the figure it teaches and the tolerance
    the computation keeps to. The notebooks' nbval sanitizer (`notebooks/nbval_sanitize.cfg`)
    masks the measured digits before "(expected", so the saved output compares the statement, and
    this check fails the cell when a run leaves the tolerance. In a chained walk-through
    (`MINITALK_WORK` set) the notebooks read the user's data, so the figure is shown, not checked.
    """
    value = float(value)
    if os.environ.get(WORK_VARIABLE):  # a chained walk-through (`minitalk.walkthrough`): other data
        return f"{value:{fmt}} (on the sample: {expected:g})"  # shown beside the sample's figure, not checked
    if not abs(value - expected) <= tol:  # NaN fails too
        raise AssertionError(f"{value:{fmt}} is not within {tol:g} of {expected:g}")
    return f"{value:{fmt}} (expected {expected:g} ± {tol:g})"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only on success.

    Whatever was at `path` before stays intact if the block raises or the process
    dies, so a reader never sees a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_beside(path: Path) -> Path:
    """A unique hidden name in `path`'s folder (so the final rename is atomic), kept `path`'s suffix."""
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@dataclass(frozen=True)
class ArrayParts:
    """An array for `save_npz_atomic` given as its parts in C order (numpy arrays or bytes), so a
    long clip's labels go to disk without ever being held whole."""

    shape: tuple[int, ...]
    dtype: np.dtype
    parts: Iterable


def save_npz_atomic(path: str | os.PathLike, **arrays) -> None:
    """What `np.savez_compressed` writes (a zip of deflated .npy files), written atomically; any
    value may be `ArrayParts`, streamed into its entry."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                if not isinstance(value, ArrayParts):
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
                    continue
                dtype = np.dtype(value.dtype)
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                          "shape": tuple(int(n) for n in value.shape)}  # fmt: skip
                np.lib.format.write_array_header_2_0(f, header)
                written, expected = 0, int(np.prod(value.shape)) * dtype.itemsize
                for part in value.parts:
                    data = part if isinstance(part, bytes) else np.ascontiguousarray(part, dtype).tobytes()
                    f.write(data)
                    written += len(data)
                if written != expected:
                    raise ValueError(f"{path}: {name} got {written} bytes for shape {value.shape}, "
                                     f"expected {expected}")  # fmt: skip


def lowpass(x: np.ndarray, fps: float, tau: float) -> np.ndarray:
    """Causal first-order low-pass of time constant `tau` seconds along the last axis (frames at
    `fps`): how a body trails its head, in the sample's motion and in the torso's condition."""
    a = np.exp(-1.0 / (fps * tau))
    y = np.empty_like(x)
    y[..., 0] = x[..., 0]
    for i in range(1, x.shape[-1]):
        y[..., i] = a * y[..., i - 1] + (1 - a) * x[..., i]
    return y


# One silencer for the whole process, counted: MediaPipe graphs are opened in nested and
# interleaved orders (two trackers entered A, B and left A, B), and restoring a saved
# descriptor per context would leave descriptor 2 on /dev/null whenever the order is not
# strictly nested. Counting makes the first entry save it and the last exit restore it.
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved_fd: int | None = None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what C++ libraries write straight to file descriptor 2 to /dev/null for the block.

    MediaPipe's start-up notices (TensorFlow Lite delegates, feedback tensors) carry
    timestamps and thread ids that clutter notebooks and logs. Descriptor 2 is restored
    exactly when the last open block ends, in whatever order blocks end and whatever they
    raise. Python's own warnings and errors go through `sys.stderr` as usual once it is.
    """
    global _quiet_depth, _quiet_saved_fd
    with _quiet_lock:
        if _quiet_depth == 0:
            sys.stderr.flush()
            _quiet_saved_fd = os.dup(2)  # 2: the descriptor C++ writes to (not sys.stderr)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                os.dup2(_quiet_saved_fd, 2)
                os.close(_quiet_saved_fd)
                _quiet_saved_fd = None


class StopRequest:
    """Set by the first Ctrl-C inside `stop_on_interrupt`; the loop checks it between steps."""

    requested = False


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[StopRequest]:
    """Turn the first Ctrl-C (SIGINT) into a request the loop polls, so it can end its step, save,
    and leave cleanly; a second Ctrl-C interrupts at once (KeyboardInterrupt).

    Why: an interrupt raised mid-step lands between an optimiser's parameter updates, so the
    state saved after it would be half a step. Outside the main thread (where Python delivers
    no signals) the block runs unchanged.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_sigint(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def in_background(items: Iterable, depth: int = 4) -> Iterator:
    """Yield the items of `items`, produced by a worker thread up to `depth` ahead: the producer
    (rendering) and the consumer (the video encoder) then run at the same time, as both spend
    their time in native code that releases the GIL. Whatever the producer raises (Ctrl-C
    included) is raised here; if the consumer stops early, the producer stops at its next item."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    done, finished = object(), threading.Event()

    def produce():
        try:
            for item in items:
                while not finished.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if finished.is_set():
                    return
            box.put((done, None))
        except BaseException as err:  # noqa: BLE001  (handed to the consumer, Ctrl-C included)
            box.put((done, err))

    worker = threading.Thread(target=produce, name="minitalk-producer", daemon=True)
    worker.start()
    try:
        while True:
            item, err = box.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        finished.set()
        while worker.is_alive():  # let a producer blocked on a full queue see `finished`
            try:
                box.get(timeout=0.1)
            except queue.Empty:
                pass
