"""Fixtures shared by the tests, and the environment of the whole run, the notebooks' kernels
included (nbval starts them with this process's environment):

- OpenMP threads spin only briefly before they sleep, as `import minitalk` arranges for a program;
  set here for the kernels, which import torch before minitalk.
- The notebooks' saved outputs are written with the native kernels of a CPU that has AVX-512; their
  kernels here run torch's AVX2 kernels instead (where the CPU has wider ones and nobody chose
  otherwise), as most laptops would. A printed figure that depends on the CPU's vector width then
  fails in this suite, on the machine that wrote it, before it fails on a user's. The tests' own
  process keeps the native kernels.
"""

import os
import warnings

os.environ.setdefault("GOMP_SPINCOUNT", "10000")
os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's native logging

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import minitalk  # noqa: E402

if "ATEN_CPU_CAPABILITY" not in os.environ and torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
    os.environ["ATEN_CPU_CAPABILITY"] = "avx2"  # read after this process fixed its own capability


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


@pytest.fixture(scope="session")
def second_clip(tmp_path_factory, frames, sample_dir):
    """A second conversation for the several-folder tests: 8 s of the sample after `clip`, its two
    halves swapped, prepared at 64x64 from `swapped.mp4` (so its people are named apart)."""
    folder = tmp_path_factory.mktemp("prep_second")
    part = frames[CLIP_FRAMES : CLIP_FRAMES + 200]
    half = part.shape[2] // 2
    audio = minitalk.io.read_audio(sample_dir / "dialogue.mp4")
    start, end = (n * minitalk.io.SAMPLE_RATE // FPS for n in (CLIP_FRAMES, CLIP_FRAMES + 200))
    swapped = np.concatenate([part[:, :, half:], part[:, :, :half]], 2)
    minitalk.io.write_video(folder / "swapped.mp4", swapped, FPS, audio=audio[start:end])
    minitalk.prepare.data.prepare(folder / "swapped.mp4", folder / "out", size=CLIP_SIZE, progress=False)
    return folder / "out"


@pytest.fixture(scope="session")
def three_and_one(tmp_path_factory, frames, sample_dir):
    """Two folders prepared at 64x64 from 8 s of the sample (frames 150-350, both voices): `row.mp4`,
    three people in a row (the sample's two and, on the right, its right person 16 s later and
    mirrored: a mouth out of time with both voices), and `alone.mp4`, the left person on their own
    (`prepare --single`). Returns (row folder, single folder, the true speaking (2, 200))."""
    folder = tmp_path_factory.mktemp("prep_three")
    a, n = 150, 200
    part, half = frames[a : a + n], frames.shape[2] // 2
    later = frames[a + 400 : a + 400 + n, :, half:][:, :, ::-1]
    audio = minitalk.io.read_audio(sample_dir / "dialogue.mp4")[
        a * 640 : (a + n) * 640
    ]  # 640 samples a frame
    minitalk.io.write_video(folder / "row.mp4", np.concatenate([part, later], 2), FPS, audio=audio)
    minitalk.io.write_video(folder / "alone.mp4", part[:, :, :half], FPS, audio=audio)
    prepare = minitalk.prepare.data.prepare
    row = prepare(folder / "row.mp4", folder / "row", size=CLIP_SIZE, progress=False)
    alone = prepare(single=folder / "alone.mp4", out=folder / "alone", size=CLIP_SIZE, progress=False)
    speaking = np.load(sample_dir / "dialogue_gt.npz")["speaking"][:, a : a + n]
    return row, alone, speaking


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
