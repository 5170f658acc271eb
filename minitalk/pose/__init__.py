"""Stage 2, head-motion generation (notebook 03): TCNs that give speaker and listener their poses
from the speaker's audio (DialogueNeRF IV-A).

    generator.py   the temporal convolutional network and `PoseGenerator` (training, generation)
    face_state.py  the listener's expression TCN and the blink model
    fit.py         every motion model fitted on a prepared clip's tracks (what the avatar file keeps)
    evaluate.py    held-out scoring against the tracked poses, with replay and mean-pose baselines
"""

from minitalk import lazy_submodules
from minitalk.pose.generator import (
    PAPER_CONFIG,
    PoseConfig,
    PoseGenerator,
    TemporalBlock,
    TemporalConvNet,
    audio_inputs,
    by_role,
    listener_tracks,
    moving_average,
    speaker_track,
    turn_segments,
)

__all__ = [
    "PAPER_CONFIG",
    "PoseConfig",
    "PoseGenerator",
    "TemporalBlock",
    "TemporalConvNet",
    "audio_inputs",
    "by_role",
    "listener_tracks",
    "moving_average",
    "speaker_track",
    "turn_segments",
]


__getattr__ = lazy_submodules(__name__, ("generator", "face_state", "fit", "evaluate"))
