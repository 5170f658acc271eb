"""`minitalk train --export`: the avatar file from a trained model and the folder it learned from.

Gathers what rendering needs, each part from the stage that owns it: the scene statistics from
the radiance field's frames (`nerf.frames.scene_statistics`), the motion models fitted on the
tracks (`pose.fit`), a voice print per person from the training clip's audio and who speaks
when (`prepare.diarize.voice_prints`), and packs them (`dialogue.avatar.save_avatar`). It sits
above the stages, beside the command line, so no stage reaches across into another to train.
"""

from __future__ import annotations

from pathlib import Path

from minitalk.dialogue.avatar import save_avatar
from minitalk.files import load_torch
from minitalk.io import read_audio
from minitalk.nerf.frames import scene_statistics
from minitalk.pose.fit import fit_motion_models
from minitalk.prepare import data
from minitalk.prepare.audio import log_mel
from minitalk.prepare.diarize import voice_prints


def export_avatar(model_path, prepared, path) -> Path:
    """Write the avatar file `path` from a trained model (a run's checkpoint.pt, or an export) and
    the prepared folder it was trained on; the motion models are fitted here on its tracks."""
    trained = load_torch(model_path, "trained model", ("model", "model_config", "train_config"))
    tracks = data.load_tracks(prepared)
    _, plates = data.load_masks(prepared)
    fps = float(tracks["fps"])
    audio = read_audio(Path(prepared) / "audio.wav")
    prints, spread = voice_prints(audio, log_mel(audio), tracks["speaking"], fps)
    return save_avatar(
        path, trained, plates, tracks["intrinsics"], fps, scene_statistics(tracks),
        fit_motion_models(tracks), prints, spread,
    )  # fmt: skip
