"""Stage 5, evaluation (notebook 07): the metrics papers report, computed offline on a rendered
clip, and the Preference Score that learns how to weigh them.

    sharpness.py    CPBD, the no-reference sharpness score
    sync.py         audio-visual offset and confidence from the mouth against the speech envelope
    faces.py        FaceMesh readings of each person's panel: landmarks, pose, expression, blinks
    clip.py         `minitalk evaluate`: every metric that applies to a clip, per person and role
    report.py       what it writes: CLIP.eval.json, CLIP.eval.md, CLIP.eval.png
    degrade.py      controlled degradations, ordered by severity: the known preferences
    preference.py   the Preference Score (RankNet MLP), its baselines, MRR, DCG, feature importance
    dataset.py      the preference data built from the sample: rendered segments and their degradations
"""

from minitalk import lazy_submodules

__getattr__ = lazy_submodules(
    __name__, ("clip", "dataset", "degrade", "faces", "preference", "report", "sharpness", "sync")
)
