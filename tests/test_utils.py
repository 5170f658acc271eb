import platform
import sys

import numpy as np
import pytest
import torch

from minitalk.utils import atomic_path, get_device, keep_freed_memory, save_npz_atomic, set_seed


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


def test_keep_freed_memory_tunes_glibc_only():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
