"""The notebooks' walk-through: one video followed from data preparation (01) to the clip (06-07).

By default each notebook teaches on the shipped sample and its shipped artifacts (the avatar
file, the sample prepared in a shared temporary folder), which is fast and lets nbval check every
figure. Set `MINITALK_WORK` to a folder and the notebooks chain instead: 01 prepares the video
into `WORK/prepared`, 02-03 read those tracks, 05 trains a DialogueNeRF on them for
`MINITALK_MINUTES` and exports `WORK/avatars.pt` as `minitalk train --export` does, 06 renders
new speech with that file and 07 evaluates it. `MINITALK_VIDEO` and `MINITALK_SPEECH` choose the
video and the new speech (the sample's by default). A chained run reads other data than the
notebooks were written with, so their checked figures (`utils.approx`) are printed beside the
written ones, not asserted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import minitalk
from minitalk.export import export_avatar
from minitalk.nerf.train import train
from minitalk.prepare import data
from minitalk.utils import WORK_VARIABLE

VIDEO_VARIABLE, SPEECH_VARIABLE, MINUTES_VARIABLE = "MINITALK_VIDEO", "MINITALK_SPEECH", "MINITALK_MINUTES"
DEFAULT_MINUTES = 10.0  # enough for faces that hold together at 128 px on 2 cores (docs/results.md)


@dataclass(frozen=True)
class Walkthrough:
    """Where notebooks 01-07 read and write: the shipped sample (`work` None) or one work folder."""

    work: Path | None  # None: the shipped sample and its artifacts
    video: Path  # the two-person conversation notebook 01 prepares
    speech: Path  # the new speech notebook 06 renders
    minutes: float  # how long notebook 05 trains the avatar of a chained run

    @property
    def chained(self) -> bool:
        return self.work is not None

    def prepared(self, size: int | None = None) -> Path:
        """The prepared folder, prepared now if it is not there yet (a second call reads the cache).
        Unchained: the sample at `size` (the default size when None), shared with tests and benchmarks."""
        if not self.chained:
            return data.prepare_sample() if size is None else data.prepare_sample(size)
        return data.prepare(self.video, self.work / "prepared", progress=False)

    @property
    def avatar(self) -> Path:
        """The avatar file notebooks 05-07 render with: the shipped one, or the one 05 exported."""
        return self.work / "avatars.pt" if self.chained else minitalk.SAMPLE_DIR / "avatars.pt"

    def truth(self) -> dict[str, np.ndarray] | None:
        """The ground truth that came with the video (`NAME_gt.npz` beside `NAME.mp4`, as the sample
        has), or None for a real recording."""
        path = self.video.with_name(self.video.stem + "_gt.npz")
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def train_avatar(self, **settings) -> dict:
        """Chained runs only: train a DialogueNeRF on the prepared folder for `minutes` (settings: the
        fields of `TrainConfig`) and export the avatar file; returns the training report."""
        if not self.chained:
            raise RuntimeError(f"not a chained walk-through: set {WORK_VARIABLE} to a work folder")
        prepared = self.prepared()
        report = train(prepared, self.work / "run", progress=False, minutes=self.minutes, **settings)
        export_avatar(self.work / "run" / "checkpoint.pt", prepared, self.avatar)
        return report

    def __str__(self) -> str:
        if not self.chained:
            return (f"the shipped sample ({self.video.name}) and its shipped artifacts; "
                    f"set {WORK_VARIABLE} to chain")  # fmt: skip
        return (f"a chained run in {self.work}: {self.video.name} prepared, "
                f"{self.minutes:g} minutes of training, then {self.speech.name} rendered")  # fmt: skip


def walkthrough() -> Walkthrough:
    """The walk-through the environment asks for (`MINITALK_WORK`, `MINITALK_VIDEO`,
    `MINITALK_SPEECH`, `MINITALK_MINUTES`); each file named is checked here, before any work."""
    env = os.environ
    work = Path(env[WORK_VARIABLE]).expanduser() if env.get(WORK_VARIABLE) else None
    video = Path(env.get(VIDEO_VARIABLE) or minitalk.SAMPLE_DIR / "dialogue.mp4").expanduser()
    speech = Path(env.get(SPEECH_VARIABLE) or minitalk.SAMPLE_DIR / "new_dialogue.wav").expanduser()
    if work is None and (env.get(VIDEO_VARIABLE) or env.get(SPEECH_VARIABLE)):
        raise ValueError(f"{VIDEO_VARIABLE} and {SPEECH_VARIABLE} need {WORK_VARIABLE}, the folder the "
                         "notebooks write to")  # fmt: skip
    for variable, path in ((VIDEO_VARIABLE, video), (SPEECH_VARIABLE, speech)):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file ({variable})")
    try:
        minutes = float(env.get(MINUTES_VARIABLE) or DEFAULT_MINUTES)
    except ValueError:
        raise ValueError(f"{MINUTES_VARIABLE}={env[MINUTES_VARIABLE]!r}: not a number of minutes") from None
    if not minutes > 0:
        raise ValueError(f"{MINUTES_VARIABLE}={minutes:g}: must be more than 0 minutes")
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    return Walkthrough(work, video, speech, minutes)
