"""The notebooks' walk-through: one video followed from data preparation (01) to the clip (06-07).

By default each notebook teaches on the shipped sample and its shipped artifacts (the avatar
file, the sample prepared in a shared temporary folder), which is fast and lets nbval check every
figure. Set `MINITALK_WORK` to a folder and the notebooks chain instead: 01 prepares the video
into `WORK/prepared`, 02-03 read those tracks, 05 trains a DialogueNeRF on them for
`MINITALK_MINUTES` and exports `WORK/avatars.pt`, as the README's recipe for your own video does
(`prepare --size 256`, `train --upsample 4 --export`: the shipped avatar's settings), 06 renders
`MINITALK_SPEECH` with that file and 07 evaluates the clip. Without `MINITALK_VIDEO` the video is
the sample; without `MINITALK_SPEECH` the speech is the sample's new speech, or another video's own
sound track (new speech must be in the trained people's voices: render tells them apart by their
voice prints). A chained run reads other data than the notebooks were written with, so their
checked figures (`utils.approx`) are printed beside the sample's, not asserted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import minitalk
from minitalk.export import export_avatar
from minitalk.nerf.model import DialogueNeRFConfig
from minitalk.nerf.train import train
from minitalk.prepare import data
from minitalk.utils import WORK_VARIABLE

VIDEO_VARIABLE, SPEECH_VARIABLE, MINUTES_VARIABLE = "MINITALK_VIDEO", "MINITALK_SPEECH", "MINITALK_MINUTES"
# a chained run as the README's recipe for your own video: crops of 256 px per person, the 2D neural
# renderer at 1/4 of that, 10 minutes of training by default
SIZE, UPSAMPLE, DEFAULT_MINUTES = 256, 4, 10.0


@dataclass(frozen=True)
class Walkthrough:
    """Where notebooks 01-07 read and write: the shipped sample (`work` None) or one work folder."""

    work: Path | None  # None: the shipped sample and its artifacts
    video: Path  # the two-person conversation notebook 01 prepares
    speech: Path  # the speech notebook 06 renders (a sound file, or a video's sound track)
    minutes: float  # how long notebook 05 trains the avatar of a chained run

    @property
    def chained(self) -> bool:
        return self.work is not None

    def prepared(self, size: int | None = None) -> Path:
        """The prepared folder, prepared now if it is not there yet (a second call reads the cache).
        Unchained: the sample at `size` (the default size when None), shared with tests and benchmarks.
        Chained: the video at the recipe's `SIZE`, one folder whatever `size` asks."""
        if not self.chained:
            return data.prepare_sample() if size is None else data.prepare_sample(size)
        return data.prepare(self.video, self.work / "prepared", size=SIZE, progress=False)

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
        model = DialogueNeRFConfig(upsample=UPSAMPLE)
        report = train(prepared, self.work / "run", model, progress=False, minutes=self.minutes, **settings)
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
    sample = video.resolve() == (minitalk.SAMPLE_DIR / "dialogue.mp4").resolve()
    own_speech = minitalk.SAMPLE_DIR / "new_dialogue.wav" if sample else video  # in the trained voices
    speech = Path(env.get(SPEECH_VARIABLE) or own_speech).expanduser()
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
