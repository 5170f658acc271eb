"""Stage 5, evaluation (notebook 07): the metrics papers report, computed offline on a rendered
clip, and the Preference Score that learns how to weigh them.

    sharpness.py    CPBD, the no-reference sharpness score
    sync.py         audio-visual offset and confidence from the mouth against the speech envelope
    faces.py        FaceMesh readings of each person's panel: landmarks, pose, expression, blinks
    clip.py         `minitalk evaluate`: every metric that applies to a clip, per person and role
    scores.py       the figures of one person and role from those readings, and their Preference Score
    report.py       what it writes: CLIP.eval.json, CLIP.eval.md, CLIP.eval.png
    degrade.py      controlled degradations, ordered by severity: the known preferences
    preference.py   the Preference Score: the RankNet MLP, its training, its file
    ranking.py      how a ranking is judged: MRR, DCG, #Top-1, rank-sum, a decision tree, importance
    dataset.py      the preference data built from the sample: rendered segments and their degradations
"""

from minitalk import lazy_submodules

__getattr__ = lazy_submodules(
    __name__,
    ("clip", "dataset", "degrade", "faces", "preference", "ranking", "report", "scores", "sharpness", "sync"),
)
