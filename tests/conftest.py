import os
import warnings

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


FPS = 25
CLIP_FRAMES = 300  # 12 s: the first speaker's turn and the start of the second's
CLIP_SIZE = 64


@pytest.fixture(scope="session")
def clip(frames):
    return frames[:CLIP_FRAMES]


@pytest.fixture(scope="session")
def clip_audio(sample_dir):
    return minitalk.io.read_audio(sample_dir / "dialogue.mp4")[: CLIP_FRAMES * minitalk.io.SAMPLE_RATE // FPS]


@pytest.fixture(scope="session")
def prepared_clip(tmp_path_factory, clip, clip_audio):
    """The first 12 s of the sample, prepared at 64x64 (shared by the preparation and training tests)."""
    from minitalk.prepare.sources import PrepareWarning

    folder = tmp_path_factory.mktemp("prep")
    minitalk.io.write_video(folder / "clip.mp4", clip, FPS, audio=clip_audio)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrepareWarning)  # a clean input raises no warning
        minitalk.prepare.data.prepare(folder / "clip.mp4", folder / "out", size=CLIP_SIZE, progress=False)
    return folder / "out"


@pytest.fixture(scope="module")
def tensors(prepared_clip):
    """The prepared clip as the training and rendering tests see it."""
    from minitalk.nerf.frames import Frames

    return Frames(prepared_clip)


@pytest.fixture
def tiny_model():
    """A factory of small seeded DialogueNeRFs for `tensors` (few samples, a coarse grid)."""
    import torch

    from minitalk.nerf.model import DialogueNeRF, DialogueNeRFConfig

    def make(frames, **overrides):
        torch.manual_seed(0)
        config = DialogueNeRFConfig(head_samples=8, torso_samples=4, grid_res=16, **overrides)
        return DialogueNeRF(config, frames.head_box, frames.torso_boxes)

    return make
