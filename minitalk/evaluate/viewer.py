"""What a person watching a rendered conversation notices, each checked against the real footage
the people were trained on (`minitalk evaluate --prepared`, or `--reference`).

A viewer does not read PSNR; they see eyes that never close, a mouth that hangs open while nobody
talks, a face that shimmers, a head that does not sit on its neck, a face that is not there. Each
check compares the clip with the footage of the same person, read the same way (FaceMesh,
`minitalk.evaluate.faces`), so the footage passes every check by construction and a clip passes
where it behaves like the footage:

- **blinks**: blinks per second within `BLINK_RATE_TOLERANCE` of the footage's;
- **mouth closed in silence**: the median lip gap (over face width) where nobody speaks, at most
  the footage's plus `SILENT_MOUTH_SHARE` of the way from its silent to its talking median;
- **no flicker**: the median frame-to-frame change of the face (`faces.face_change`; a median, so
  head turns and blinks do not count) at most `FLICKER_RATIO` times the footage's;
- **no seam**: the median step across the head-torso boundary (`faces.seam_contrast`, which sees
  a break in the image, not a smooth chin sliding over a smooth neck) at most `SEAM_RATIO` times;
- **faces present**: the face found in at least the footage's share of frames.
"""

from __future__ import annotations

import numpy as np

from minitalk import metrics

BLINK_RATE_TOLERANCE = 0.5  # |clip - footage| <= this x footage's blinks per second
SILENT_MOUTH_SHARE = 0.25  # of the footage's silent-to-talking lip-gap range
FLICKER_RATIO = 1.5  # clip's median frame-to-frame face change over the footage's
SEAM_RATIO = 1.5  # clip's median head-torso boundary step over the footage's


def _median(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def _row(check: str, person: int, clip: float, footage: float, rule: str, passed) -> dict:
    verdict = "not measured" if passed is None else "pass" if passed else "short"
    return {
        "check": check,
        "person": person,
        "clip": clip,
        "footage": footage,
        "rule": rule,
        "verdict": verdict,
    }


def viewer_checks(clip, footage, fps: float, clip_speaking: np.ndarray, footage_speaking=None) -> list[dict]:
    """The rows of the checks above for each person: `clip` and `footage` are lists of
    `scores.Derived` (readings and blinks) per person; `clip_speaking` (P, T) and
    `footage_speaking` (P, T_ref) say who speaks on each frame (None for the footage: the mouth
    check is not measured)."""
    rows = []
    for p, (ours, theirs) in enumerate(zip(clip, footage, strict=True)):
        ours_rate = metrics.blink_statistics(ours.blink, fps)["blink_rate"]
        their_rate = metrics.blink_statistics(theirs.blink, fps)["blink_rate"]
        ok = (
            abs(ours_rate - their_rate) <= BLINK_RATE_TOLERANCE * their_rate
            if their_rate > 0
            else ours_rate == 0
        )
        rule = f"within {BLINK_RATE_TOLERANCE:.0%} of the footage's"
        rows.append(_row("blinks per second", p, ours_rate, their_rate, rule, ok))

        ok, ours_gap, their_gap = None, float("nan"), float("nan")
        if footage_speaking is not None:
            silent, their_silent = ~clip_speaking.any(0), ~footage_speaking.any(0)
            ours_gap = _median(ours.readings.opening[silent])
            their_gap = _median(theirs.readings.opening[their_silent])
            talking_gap = _median(theirs.readings.opening[footage_speaking[p]])
            if np.isfinite([ours_gap, their_gap, talking_gap]).all():
                ok = ours_gap <= their_gap + SILENT_MOUTH_SHARE * max(talking_gap - their_gap, 0.0)
        rule = f"at most the footage's + {SILENT_MOUTH_SHARE:g} of its way to talking"
        rows.append(_row("mouth opening while nobody speaks (lip gap / face width, median)", p, ours_gap,
                         their_gap, rule, ok))  # fmt: skip

        ours_change, their_change = _median(ours.readings.change), _median(theirs.readings.change)
        ok = (
            bool(ours_change <= FLICKER_RATIO * their_change)
            if np.isfinite([ours_change, their_change]).all()
            else None
        )
        rows.append(_row("face change per frame (flicker, median)", p, ours_change, their_change,
                         f"at most {FLICKER_RATIO:g}x the footage's", ok))  # fmt: skip

        ours_seam, their_seam = _median(ours.readings.seam), _median(theirs.readings.seam)
        measured = np.isfinite([ours_seam, their_seam]).all()
        ok = bool(ours_seam <= SEAM_RATIO * their_seam) if measured else None
        rows.append(_row("step across the head-torso boundary (seam, median)", p, ours_seam, their_seam,
                         f"at most {SEAM_RATIO:g}x the footage's", ok))  # fmt: skip

        ours_found, their_found = float(ours.readings.found.mean()), float(theirs.readings.found.mean())
        rows.append(_row("frames with the face found", p, ours_found, their_found, "at least the footage's",
                         ours_found >= their_found))  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> list[str]:
    """The checks as a Markdown table (lines)."""
    lines = [
        "## What a viewer checks",
        "",
        "| check | person | clip | footage | rule | |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{v:.3g}" if np.isfinite(v) else "–" for v in (r["clip"], r["footage"])]
        lines.append(
            f"| {r['check']} | {r['person']} | {cells[0]} | {cells[1]} | {r['rule']} | {r['verdict']} |"
        )
    return lines + [""]
