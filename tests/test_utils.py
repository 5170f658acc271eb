import platform
import sys

import numpy as np
import pytest
import torch

from minitalk.utils import (
    ArrayParts,
    atomic_path,
    compact_figures,
    get_device,
    keep_freed_memory,
    save_npz_atomic,
    set_seed,
)


def test_set_seed_is_repeatable():
    a = set_seed(3).random(4), np.random.rand(2), torch.rand(2)  # noqa: NPY002
    b = set_seed(3).random(4), np.random.rand(2), torch.rand(2)  # noqa: NPY002
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_get_device():
    assert get_device("cpu").type == "cpu"
    assert get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            get_device("cuda")


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "tracks.npz"
    save_npz_atomic(target, a=np.arange(3))
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    with np.load(target) as z:
        np.testing.assert_array_equal(z["a"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.npz"]


def test_an_array_streamed_in_parts_reads_back_as_numpy_wrote_it(tmp_path):
    rng = np.random.default_rng(0)
    labels, plates = rng.integers(0, 3, (2, 7, 5, 5), dtype=np.uint8), rng.random((2, 5, 5, 3))
    parts = ArrayParts(labels.shape, np.uint8, [labels[0].tobytes(), *labels[1]])  # bytes and arrays
    save_npz_atomic(tmp_path / "streamed.npz", labels=parts, background=plates)
    np.savez_compressed(tmp_path / "numpy.npz", labels=labels, background=plates)
    for name in ("streamed.npz", "numpy.npz"):
        with np.load(tmp_path / name) as z:
            np.testing.assert_array_equal(z["labels"], labels)
            np.testing.assert_array_equal(z["background"], plates)
    with pytest.raises(ValueError, match=r"short\.npz: labels got 175 bytes for shape \(2, 7, 5, 5\)"):
        save_npz_atomic(tmp_path / "short.npz", labels=ArrayParts(labels.shape, np.uint8, [labels[0]]))
    assert not (tmp_path / "short.npz").exists()


def test_keep_freed_memory_tunes_glibc_only():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc


def test_compact_figures_does_nothing_outside_a_notebook():
    assert compact_figures() is False  # no IPython shell: matplotlib's own formatters stay
