import os

import numpy as np
import pytest

import minitalk

os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def sample_dir():
    return minitalk.SAMPLE_DIR


@pytest.fixture(scope="session")
def gt(sample_dir):
    with np.load(sample_dir / "dialogue_gt.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def frames(sample_dir):
    video, _ = minitalk.io.read_video(sample_dir / "dialogue.mp4")
    return video
