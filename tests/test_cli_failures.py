"""Bad and unusual input at the command line: each case a clear message naming the file or option, a
non-zero exit (2 for a bad option, 1 for a bad file, 130 for Ctrl-C), and nothing half-written.

Most cases call `cli.main` in this process; the ones about file descriptor 2 and signals run the
real command in a subprocess. Every clip is 3 s, cut from the sample in the test."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minitalk import cli, io
from minitalk.files import FileFormatError, load_npz, load_torch

FPS = 25
N = 3 * FPS


@pytest.fixture(scope="module")
def work(tmp_path_factory, clip, clip_audio):
    """A folder with a 3 s two-person clip, a mute copy, junk files and the clip prepared at 32 px."""
    import soundfile as sf

    from minitalk.prepare import data

    d = tmp_path_factory.mktemp("cli")
    audio = clip_audio[: N * io.SAMPLE_RATE // FPS]
    io.write_video(d / "clip.mp4", clip[:N], FPS, audio=audio)
    io.write_video(d / "mute.mp4", clip[:N], FPS)
    lost = clip[:N].copy()
    lost[25:60, :, 256:] = lost[:, :, 256:].reshape(-1, 3).min(0)  # the right face gone for 1.4 s
    io.write_video(d / "lost.mp4", lost, FPS, audio=audio)
    sf.write(d / "a8k.wav", audio[::2], 8000)
    (d / "empty.mp4").write_bytes(b"")
    (d / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = (d / "clip.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (d / "a_file").write_text("not a folder")
    data.prepare(d / "clip.mp4", d / "prep", size=32, progress=False)
    return d


def run(args, cwd) -> int:
    """`minitalk ARGS` in this process, from folder `cwd`; returns the exit code."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's own errors
        rc = exit_.code
    finally:
        os.chdir(old)
    return rc


def corrupt_copy(work, name: str, how: str):
    """A copy of the prepared folder with `name` damaged: cut to a third, replaced by random bytes, or
    (a video) cut to its first 10 frames."""
    import shutil

    d = work / f"prep_{how}_{name.replace('/', '_')}"
    if not d.exists():
        shutil.copytree(work / "prep", d)
        if name.startswith("run/"):  # a real checkpoint to damage: one training step
            from minitalk.nerf.train import TrainingWarning, train

            with pytest.warns(TrainingWarning, match="held-out frames"):
                train(d, iters=1, progress=False)
        path = d / name
        raw = path.read_bytes()
        if how == "truncated":
            path.write_bytes(raw[: len(raw) // 3])
        elif how == "short":  # a frames video of fewer frames than the tracks
            import minitalk

            frames, fps = minitalk.io.read_video(path)
            path.unlink()
            minitalk.io.write_video(path, frames[:10], fps)
        elif how == "random":
            path.write_bytes(np.random.default_rng(1).bytes(4000))
        elif how == "pickled":
            import datetime

            import torch

            torch.save({"model": {}, "payload": datetime.date(2026, 1, 1)}, path)  # a pickled object
    return d


# case -> (command line, exit code, fragments that must appear in what is printed)
CASES = {
    # --- prepare: files ---
    "missing video": (["prepare", "nope.mp4", "--out", "o"], 1, ["nope.mp4", "no such file"]),
    "empty video": (["prepare", "empty.mp4", "--out", "o"], 1, ["empty.mp4"]),
    "random bytes": (["prepare", "random.mp4", "--out", "o"], 1, ["random.mp4"]),
    "truncated video": (["prepare", "truncated.mp4", "--out", "o"], 1, ["truncated.mp4"]),
    "no audio track": (["prepare", "mute.mp4", "--out", "o"], 1, ["mute.mp4", "no audio track"]),
    "only --left": (["prepare", "--left", "clip.mp4", "--out", "o"], 1, ["--left and --right"]),
    "VIDEO and --single": (
        ["prepare", "clip.mp4", "--single", "clip.mp4", "--out", "o"],
        1,
        ["--single", "not several"],
    ),
    "missing --single": (["prepare", "--single", "nope.mp4", "--out", "o"], 1, ["nope.mp4", "no such file"]),
    # --- prepare: options ---
    "--size 0": (["prepare", "clip.mp4", "--out", "o", "--size", "0"], 2, ["--size", "got 0"]),
    "--size -5": (["prepare", "clip.mp4", "--out", "o", "--size", "-5"], 2, ["--size", "got -5"]),
    "--fov 0": (["prepare", "clip.mp4", "--out", "o", "--fov", "0"], 2, ["--fov", "got 0"]),
    "--fps 0": (["prepare", "clip.mp4", "--out", "o", "--fps", "0"], 2, ["--fps", "got 0"]),
    "--out is a file": (["prepare", "clip.mp4", "--out", "a_file"], 2, ["--out", "a_file", "not a folder"]),
    "--out under /proc": (["prepare", "clip.mp4", "--out", "/proc/x"], 2, ["--out", "not writable"]),
    # --- train: options ---
    "--iters 0": (["train", "prep", "--iters", "0"], 2, ["--iters", "at least 1"]),
    "--iters -1": (["train", "prep", "--iters", "-1"], 2, ["--iters", "got -1"]),
    "--minutes 0": (["train", "prep", "--minutes", "0"], 2, ["--minutes", "positive"]),
    "--torso-lag -1": (["train", "prep", "--torso-lag", "-1"], 2, ["--torso-lag", "0 or more"]),
    "mistyped folder": (["train", "prepp", "--iters", "1"], 2, ["prepp", "no such folder"]),
    "not a prepared folder": (["train", ".", "--iters", "1"], 2, ["not a finished minitalk prepare"]),
    "--run is a file": (["train", "prep", "--run", "a_file"], 2, ["--run", "a_file", "not a folder"]),
    "--export is a folder": (["train", "prep", "--export", "prep"], 2, ["--export", "is a folder"]),
    "--export under a file": (["train", "prep", "--export", "a_file/m.pt"], 2, ["--export", "is a file"]),
    # --- train: damaged files of a prepared folder or run ---
    "truncated tracks.npz": ("tracks.npz:truncated", 1, ["tracks.npz", "truncated or corrupt tracks file"]),
    "random tracks.npz": ("tracks.npz:random", 1, ["tracks.npz", "not a minitalk tracks file"]),
    "truncated masks.npz": ("masks.npz:truncated", 1, ["masks.npz", "truncated or corrupt masks file"]),
    "short frames_p1.mp4": ("frames_p1.mp4:short", 1, ["frames_p1.mp4", "10 frames, where tracks.npz has"]),
    "truncated checkpoint": ("run/checkpoint.pt:truncated", 1, ["checkpoint.pt", "truncated or corrupt"]),
    "random checkpoint": ("run/checkpoint.pt:random", 1, ["checkpoint.pt", "not a minitalk checkpoint"]),
    "pickled checkpoint": ("run/checkpoint.pt:pickled", 1, ["checkpoint.pt", "Python objects"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_nothing_is_written(case, work, capsys):
    args, code, fragments = CASES[case]
    if isinstance(args, str):  # a damaged copy of the prepared folder
        name, how = args.split(":")
        args = ["train", corrupt_copy(work, name, how), "--iters", "2", "--quiet"]
    before = set(os.listdir(work))
    rc = run(args, work)
    err = capsys.readouterr().err
    assert rc == code, err
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err and "weights_only=False" not in err
    assert set(os.listdir(work)) - before <= {p.name for p in work.glob("prep_*")}  # no "o", no "prepp"


def test_a_short_clip_trains_with_held_out_frames_and_says_it(work, capsys):
    rc = run(["train", "prep", "--iters", "3", "--run", "short_run", "--quiet"], work)
    out = capsys.readouterr()
    assert rc == 0
    assert "minitalk train: warning:" in out.err and "held-out frames" in out.err
    report = json.loads((work / "short_run" / "train_report.json").read_text())
    assert 0 < report["held_out_frames"] < 25 and None not in report["psnr"]


def test_an_interrupted_prepare_says_how_to_resume(work, capsys, monkeypatch):
    from minitalk.prepare import masks

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(masks, "frame_labels", interrupt)
    rc = run(["prepare", "clip.mp4", "--out", "interrupted", "--size", "32", "--quiet"], work)
    err = capsys.readouterr().err
    assert rc == 130 and "interrupted" in err and "re-run resumes" in err and "Traceback" not in err
    assert not (work / "interrupted" / "prepare_report.json").exists()  # clearly unfinished
    assert list((work / "interrupted" / ".cache").glob("landmarks-*.npz"))  # finished stages kept


def command(*args) -> list[str]:
    return [sys.executable, "-m", "minitalk", *map(str, args)]


def test_warnings_and_errors_after_face_tracking_reach_stderr(work):
    """FaceMesh's log silencing must give descriptor 2 back: a warning (8 kHz audio, read after the
    landmarks) and an error (a face lost, checked after them) are both printed by the real command."""
    warn = subprocess.run(
        command("prepare", "clip.mp4", "--audio", "a8k.wav", "--out", "w", "--size", "32", "--quiet"),
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert warn.returncode == 0, warn.stderr
    assert "minitalk prepare: warning: a8k.wav: 8000 Hz audio upsampled" in warn.stderr
    fail = subprocess.run(
        command("prepare", "lost.mp4", "--out", "l", "--size", "32", "--quiet"),
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert fail.returncode == 1
    assert "minitalk prepare: error: lost.mp4: the right person's face is lost in frames" in fail.stderr


def test_ctrl_c_in_training_saves_the_step_and_the_report(work):
    run_dir = work / "ctrl_c"
    proc = subprocess.Popen(
        command("train", "prep", "--run", run_dir, "--iters", "100000", "--quiet"),
        cwd=work, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and not run_dir.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(4)  # a few steps in
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    report = json.loads((run_dir / "train_report.json").read_text())
    state = load_torch(run_dir / "checkpoint.pt", "checkpoint")
    assert report["interrupted"] and report["iterations"] == state["step"] > 0
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]  # nothing half-written left


def test_loaders_name_the_file_and_the_problem(tmp_path):
    import torch

    np.savez(tmp_path / "t.npz", pose=np.zeros(3), format_version=np.int64(7))
    with pytest.raises(FileFormatError, match=r"t\.npz: a tracks file of format version 7"):
        load_npz(tmp_path / "t.npz", "tracks file", ("pose",))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(FileFormatError, match=r"single\.npy: not a minitalk tracks file"):
        load_npz(tmp_path / "single.npy", "tracks file")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(FileFormatError, match=r"list\.pt: not a minitalk checkpoint \(holds a list"):
        load_torch(tmp_path / "list.pt", "checkpoint")
    torch.save({"step": 1}, tmp_path / "c.pt")
    with pytest.raises(FileFormatError, match=r"c\.pt: not a minitalk checkpoint \(missing model"):
        load_torch(tmp_path / "c.pt", "checkpoint", ("model", "step"))
    with pytest.raises(FileNotFoundError, match=r"gone\.pt: no such file"):
        load_torch(tmp_path / "gone.pt", "checkpoint")


def test_log_silencing_restores_stderr_in_any_order():
    """Two silencers entered A, B and left A, B (two trackers) leave descriptor 2 as it was."""
    probe = (
        "import os\n"
        "from minitalk.utils import quiet_native_stderr\n"
        "a, b = quiet_native_stderr(), quiet_native_stderr()\n"
        "a.__enter__(); b.__enter__(); os.write(2, b'hidden\\n')\n"
        "a.__exit__(None, None, None); os.write(2, b'still hidden\\n'); b.__exit__(None, None, None)\n"
        "os.write(2, b'visible\\n')\n"
    )
    err = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stderr
    assert err == "visible\n"
