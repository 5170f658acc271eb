"""`minitalk train --export`: the avatar file from a trained model and the folders it learned from.

Gathers what rendering needs, each part from the stage that owns it: the scene statistics from
the radiance field's frames (`nerf.frames.scene_statistics`), the motion models fitted on the
tracks (`pose.fit`), a voice print per person from the training clip's audio and who speaks
when (`prepare.diarize.voice_prints`), and packs them (`dialogue.avatar.save_avatar`). It sits
above the stages, beside the command line, so no stage reaches across into another to train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minitalk.dialogue.avatar import save_avatar
from minitalk.files import load_torch
from minitalk.io import read_audio
from minitalk.nerf.frames import scene_statistics
from minitalk.pose.fit import fit_motion_models
from minitalk.prepare import data
from minitalk.prepare.audio import log_mel
from minitalk.prepare.diarize import voice_prints


def export_avatar(model_path, prepared, path, names: list[str] | None = None) -> Path:
    """Write the avatar file `path` from a trained model (a run's checkpoint.pt, or an export) and
    the prepared folder it was trained on, or the list of folders, in the order it was trained on
    them; the motion models are fitted here on their tracks. `names`: one per person (default:
    `people_names`, from the files each folder was prepared from)."""
    trained = load_torch(model_path, "trained model", ("model", "model_config", "train_config"))
    folders = [prepared] if isinstance(prepared, (str, Path)) else list(prepared)
    clips = [data.load_tracks(f) for f in folders]
    plates = np.concatenate([data.load_masks(f)[1] for f in folders])
    names = check_names(names, folders, len(plates))
    n_people = trained["model_config"].get("n_people", 2)
    if n_people != len(plates):
        where = ", ".join(map(str, folders))
        raise ValueError(f"{model_path}: a model of {n_people} people, and {len(plates)} in {where}; "
                         "export it with the folders it was trained on")  # fmt: skip
    prints, spreads = [], []
    for folder, tracks in zip(folders, clips, strict=True):
        audio = read_audio(Path(folder) / "audio.wav")
        voice, spread = voice_prints(audio, log_mel(audio), tracks["speaking"], float(tracks["fps"]))
        prints.append(voice)
        spreads.append(spread)
    return save_avatar(
        path, trained, plates, np.concatenate([c["intrinsics"] for c in clips]), float(clips[0]["fps"]),
        scene_statistics(clips), fit_motion_models(clips), np.concatenate(prints),
        # the voices' units: each clip's spread of features, pooled
        spreads[0] if len(spreads) == 1 else np.sqrt(np.mean(np.square(spreads), axis=0)), names,
    )  # fmt: skip


def check_names(names: list[str] | None, folders: list, n_people: int) -> list[str]:
    """One distinct name per person: `names`, or those the folders' source files give; refuses a
    wrong count or a name given twice (the same person in two folders, or a typing slip)."""
    names = list(names) if names else [n for f in folders for n in data.people_names(f)]
    if len(names) != n_people:
        raise ValueError(
            f"--names: {len(names)} names for {n_people} people ({', '.join(map(str, folders))})"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(map(str, folders))}: {twice} named twice; one model holds each person "
                         "once (give every person a name of their own with --names)")  # fmt: skip
    return names
