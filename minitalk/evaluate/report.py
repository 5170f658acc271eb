"""What `minitalk evaluate` writes: CLIP.eval.json (every figure), CLIP.eval.md (a table per person,
a row per role), CLIP.eval.png (each mouth against the speech, and the sync curve), and the lines
it prints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from minitalk.evaluate import sync, viewer
from minitalk.utils import atomic_path

ROLES = ("talking", "listening")

COLUMNS = (  # (key, header, format)
    ("frames", "frames", "{:d}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("cpbd", "CPBD", "{:.3f}"),
    ("lmd", "LMD", "{:.4f}"),
    ("lip_lmd", "Lip LMD", "{:.4f}"),
    ("exp_l1", "ExpL1", "{:.5f}"),
    ("pose_l1", "PoseL1", "{:.4f}"),
    ("exp_fd", "ExpFD", "{:.2e}"),
    ("pose_fd", "PoseFD", "{:.2e}"),
    ("av_offset", "AVOffset", "{:+.0f}"),
    ("av_conf", "AVConf", "{:.3f}"),
    ("blink_rate", "blinks/s", "{:.2f}"),
    ("blink_interval", "blink gap s", "{:.2f}"),
    ("head_motion_var", "head var deg²", "{:.2f}"),
    ("preference_score", "PS", "{:.2f}"),
)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return fmt.format(int(value) if fmt == "{:d}" else value)


def markdown(report: dict) -> str:
    """The report as a table per person (a row per role)."""
    lines = [
        f"# {Path(report['clip']).name}: evaluation",
        "",
        f"{report['frames']} frames at {report['fps']:g} fps, {report['people']} people, {report['size']} px "
        f"each; reference: {report['reference'] or 'none'}; who speaks: {report['speaking_from']}.",
        "",
    ]
    for person in report["per_person"]:
        cols = [c for c in COLUMNS if any(person[r].get(c[0]) is not None for r in ("all", *ROLES))]
        lines += [f"## Person {person['person']}", ""]
        lines.append("| role | " + " | ".join(c[1] for c in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for role in ("all", *ROLES):
            lines.append(
                f"| {role} | " + " | ".join(_cell(person[role].get(k), f) for k, _, f in cols) + " |"
            )
        lines.append("")
    if report.get("viewer_checks"):
        lines += viewer.markdown(report["viewer_checks"])
    if report["remarks"]:
        lines += ["## Notes", ""] + [f"- {w}" for w in report["remarks"]] + [""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    return "\n".join(lines)


def as_json(x):
    if isinstance(x, dict):
        return {k: as_json(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list | tuple):
        return [as_json(v) for v in x]
    if isinstance(x, float | np.floating):
        return round(float(x), 6) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def plot(report: dict, path) -> None:
    """Per person: the mouth against the speech envelope, and the sync curve c(k) while talking."""
    rd = report["_readings"]
    n = report["people"]
    fig = Figure(figsize=(11, 2.6 * n))
    axes = fig.subplots(n, 2, squeeze=False, gridspec_kw={"width_ratios": [3, 1]})
    t = np.arange(report["frames"]) / report["fps"]
    for p in range(n):
        r, talk = rd["clip"][p], rd["speaking"][p]
        mouth = sync.mouth_reading(r.opening, r.interior)
        ax = axes[p, 0]
        ax.fill_between(t, -3, 3, where=talk, color="C2", alpha=0.15, lw=0, label="talking")
        ax.plot(t, mouth, lw=0.8, label="mouth (z)")
        if rd["envelope"] is not None:
            ax.plot(t, sync.zscore(rd["envelope"]), lw=0.8, alpha=0.7, label="speech envelope (z)")
            offsets, curve = sync.offset_curve(mouth, rd["envelope"], talk)
            axes[p, 1].plot(offsets, curve, "o-", ms=3)
            axes[p, 1].axvline(0, color="k", lw=0.5)
        axes[p, 1].set(title=f"person {p}: sync c(k)", xlabel="offset k (frames)")
        ax.set(title=f"person {p}", xlabel="seconds", ylim=(-3, 3))
        ax.legend(loc="upper right", fontsize=7, ncol=3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")


def report_paths(clip) -> list[Path]:
    """Where the report of CLIP.mp4 goes: CLIP.eval.json, CLIP.eval.md and CLIP.eval.png beside it."""
    clip = Path(clip)
    return [clip.with_name(f"{clip.stem}.eval.{ext}") for ext in ("json", "md", "png")]


def write_report(report: dict) -> list[Path]:
    """The report beside its clip (`report_paths`), each file written atomically."""
    paths = report_paths(report["clip"])
    with atomic_path(paths[0]) as tmp:
        tmp.write_text(json.dumps(as_json(report), indent=1))
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(markdown(report))
    plot(report, paths[2])
    return paths


def summary(report: dict) -> str:
    """A few lines for the console."""
    lines = []
    for person in report["per_person"]:
        bits = []
        for role in ROLES:
            m = person[role]
            if not m.get("frames"):
                continue
            keys = ("psnr", "ssim", "cpbd", "av_offset", "av_conf") if role == "talking" else (
                "psnr", "ssim", "cpbd", "pose_fd", "exp_fd")  # fmt: skip
            keys += ("preference_score",)
            shown = ", ".join(
                f"{h} {_cell(m.get(k), f)}" for k, h, f in COLUMNS if k in keys and m.get(k) is not None
            )
            bits.append(f"{role} ({m['frames']} frames): {shown}")
        lines.append(f"person {person['person']}: " + "; ".join(bits))
    return "\n".join(lines)
