"""Stage 1, data preparation (notebooks 01 and 02): a two-person video -> a training-ready folder.

audio.py       16 kHz mono; per-frame ZCR, RMS and log-mel windows
voices.py      a learned voice print (the GE2E speaker encoder), offline
diarize.py     voice activity split between the two people: who speaks when
sources.py     the input videos and audio, each person's region of the frame
face.py        478 FaceMesh landmarks per frame
headpose.py    canonical face, PnP, smoothing: head pose (DialogueNeRF III-B)
expression.py  the Eq. 1 morphable model's coefficients, mouth opening, blinks
masks.py       head / torso labels and the background plate
data.py        `prepare()`, which runs them all, and the readers of its folder
evaluate.py    a prepared folder scored against the sample's ground truth
"""

from minitalk import lazy_submodules
from minitalk.prepare.data import PrepareConfig, load_masks, load_tracks, prepare, read_person_frames

__all__ = ["PrepareConfig", "load_masks", "load_tracks", "prepare", "read_person_frames"]


__getattr__ = lazy_submodules(
    __name__,
    ("audio", "voices", "diarize", "sources", "face", "headpose", "expression", "masks", "data", "evaluate"),
)
