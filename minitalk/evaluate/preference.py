"""The Preference Score (its paper, section 4): a small network that learns from rankings how to
weigh the metrics of a conversational head into one score, and the ways it is judged (section 5).

- Input: a clip's metric vector M = [m_1 .. m_n], min-max normalised, then standardised, with the
  statistics of the training clips (section 5.1). A metric that could not be computed is 0 after
  standardisation (the training mean).
- Model: fully connected layers, each followed by batch normalisation and an activation: ReLU in
  between, ReLU6 at the output (section 4.2). Separate models for talking and listening heads.
- Loss: RankNet. For clips i, j of one query with preferences S_i > S_j,
      P(i > j) = sigmoid(h(M_i) - h(M_j))                                          (Eq. 1)
      L = - sum log P(i > j)                                                       (Eq. 2)
  (Eq. 2's second term vanishes: every pair is ordered so that Y_ij = 1.)
- Judged in `minitalk.evaluate.ranking` (MRR, DCG, the baselines, feature importance).
- Kept: the trained scores (`save_scores`, `data_samples/preference.pt`) and the data they learned
  from (`save_data`, `data_samples/preference_data.npz`).

The preferences here are known orderings of degraded renders (`minitalk.evaluate.dataset`), not
human judgements: what the score learns is that ordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from minitalk.files import FORMAT_VERSION, load_npz, load_torch
from minitalk.utils import atomic_path, save_npz_atomic

TALKING = ("psnr", "ssim", "cpbd", "lmd", "lip_lmd", "exp_l1", "pose_l1", "av_offset_abs", "av_conf")
LISTENING = ("psnr", "ssim", "cpbd", "lmd", "exp_l1", "pose_l1", "exp_fd", "pose_fd")
HIGHER_IS_BETTER = frozenset({"psnr", "ssim", "cpbd", "av_conf"})


def vector(values: dict, names) -> np.ndarray:
    """A metric vector (F,) in the order of `names` from a dict of metrics (`minitalk evaluate`'s
    per-role figures or a clip's); |AVOffset| from a signed AVOffset; NaN where a metric is missing."""
    values = dict(values)
    if "av_offset_abs" not in values and values.get("av_offset") is not None:
        values["av_offset_abs"] = abs(values["av_offset"])
    return np.array([np.nan if values.get(n) is None else float(values[n]) for n in names], np.float64)


@dataclass
class PreferenceData:
    """One track's clips: metric vectors, known preference scores, and how they group into queries."""

    track: str  # "talking" or "listening"
    names: tuple[str, ...]  # the metrics, columns of X
    X: np.ndarray  # (N, F) raw metric values, NaN where one does not apply
    score: np.ndarray  # (N,) preference score S: 10 clean, -s degraded at level s, stitched, fakes
    group: np.ndarray  # (N,) int: clips of one segment and track form a group (a query)
    segment: np.ndarray  # (N,) int
    family: np.ndarray  # (N,) str: "clean", a degradation family, "stitched" or "fake"
    level: np.ndarray  # (N,) int: severity, 0 for clean

    def subset(self, keep: np.ndarray) -> PreferenceData:
        keep = np.asarray(keep)
        return PreferenceData(self.track, self.names, self.X[keep], self.score[keep], self.group[keep],
                              self.segment[keep], self.family[keep], self.level[keep])  # fmt: skip

    @property
    def query(self) -> np.ndarray:
        """Clips ranked at test time: each segment's clean clip and its degradations."""
        return ~np.isin(self.family, ("stitched", "fake"))

    @property
    def relevance(self) -> np.ndarray:
        """Graded relevance for DCG: 3 for the clean clip, 3 - s at severity s."""
        return np.clip(3 - self.level, 0, 3).astype(np.float64)


def comparable_pairs(data: PreferenceData) -> np.ndarray:
    """(M, 2) indices (i, j) with S_i > S_j, within one group, and known to be ordered: the same
    degradation at two levels, or either clip clean, stitched or fake (whose scores follow the
    paper's rules); two different degradations are never compared."""
    pairs = []
    for g in np.unique(data.group):
        idx = np.flatnonzero(data.group == g)
        s, fam = data.score[idx], data.family[idx]
        i, j = np.meshgrid(np.arange(len(idx)), np.arange(len(idx)), indexing="ij")
        special = np.isin(fam, ("clean", "stitched", "fake"))
        ok = (s[i] > s[j]) & ((fam[i] == fam[j]) | special[i] | special[j])
        pairs.append(np.stack([idx[i[ok]], idx[j[ok]]], axis=1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), int)


@dataclass
class Normaliser:
    """Min-max normalisation, then standardisation, fitted on training clips (section 5.1)."""

    low: np.ndarray
    span: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Normaliser:
        low, high = np.nanmin(X, 0), np.nanmax(X, 0)
        span = np.where(high - low > 1e-12, high - low, 1.0)
        unit = (X - low) / span
        mean, std = np.nanmean(unit, 0), np.nanstd(unit, 0)
        return cls(low, span, mean, np.where(std > 1e-12, std, 1.0))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        z = ((X - self.low) / self.span - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


class PreferenceScore(nn.Module):
    """h: metric vector (B, F) -> score (B,) in [0, 6]: Linear-BN-ReLU blocks, Linear-BN-ReLU6 out."""

    def __init__(self, n_metrics: int, hidden: tuple[int, ...] = (16, 8)):
        super().__init__()
        layers, width = [], n_metrics
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, 1), nn.BatchNorm1d(1), nn.ReLU6()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


def ranknet_loss(h: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Eq. 1-2 over pairs (M, 2) of (preferred, other): mean of -log sigmoid(h_i - h_j)."""
    return nn.functional.softplus(-(h[pairs[:, 0]] - h[pairs[:, 1]])).mean()


@dataclass
class TrainedScore:
    model: PreferenceScore
    normaliser: Normaliser
    names: tuple[str, ...]
    curve: list[float]  # training RankNet loss per epoch

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(self.normaliser(X))).numpy().astype(np.float64)

    def state_dict(self) -> dict:
        """Tensors only, so the file loads with `torch.load(weights_only=True)`."""
        n = self.normaliser
        stats = {
            k: torch.as_tensor(getattr(n, k), dtype=torch.float64) for k in ("low", "span", "mean", "std")
        }
        return {"weights": self.model.state_dict(), "names": list(self.names), **stats}

    @classmethod
    def from_state_dict(cls, state: dict) -> TrainedScore:
        names = tuple(state["names"])
        hidden = tuple(
            v.shape[0] for k, v in state["weights"].items() if k.endswith(".weight") and v.ndim == 2
        )
        model = PreferenceScore(len(names), hidden[:-1])
        model.load_state_dict(state["weights"])
        normaliser = Normaliser(*(state[k].numpy() for k in ("low", "span", "mean", "std")))
        return cls(model, normaliser, names, [])


SCORE_FILE_KEYS = ("kind", "talking", "listening", "trained_on")


def save_scores(path, scores: dict[str, TrainedScore], trained_on: str) -> None:
    """The two tracks' trained scores in one file (atomically), with what they were trained on."""
    state = {"kind": "minitalk preference score", "trained_on": trained_on, "format_version": FORMAT_VERSION}
    state.update({track: scores[track].state_dict() for track in ("talking", "listening")})
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_scores(path) -> tuple[dict[str, TrainedScore], str]:
    """The scores `save_scores` wrote, checked (`minitalk.files.load_torch`), and what they learned from."""
    state = load_torch(path, "preference score file", SCORE_FILE_KEYS)
    return {t: TrainedScore.from_state_dict(state[t]) for t in ("talking", "listening")}, state["trained_on"]


DATA_FIELDS = ("names", "X", "score", "group", "segment", "family", "level")


def save_data(path, data: dict[str, PreferenceData], built_from: str) -> None:
    """Both tracks' preference data in one `.npz` (atomically): `{track}_{field}` arrays and a
    line saying what they were built from. Built once (`python -m minitalk.evaluate.dataset`),
    the data is fixed: the comparisons made on it (notebook 07, `benchmarks/bench_eval.py`) then
    vary only with the training of the learned methods, not with FaceMesh's readings of the
    renders, which move in their last digits from one CPU to another."""
    arrays = {"built_from": np.array(built_from), "format_version": np.array(FORMAT_VERSION)}
    for track in ("talking", "listening"):
        d = data[track]
        for field in DATA_FIELDS:
            arrays[f"{track}_{field}"] = np.asarray(getattr(d, field))
    save_npz_atomic(path, **arrays)


def load_data(path) -> tuple[dict[str, PreferenceData], str]:
    """The data `save_data` wrote, checked (`minitalk.files.load_npz`), and what it was built from."""
    required = ("built_from", *(f"{t}_{f}" for t in ("talking", "listening") for f in DATA_FIELDS))
    z = load_npz(path, "preference data file", required)
    data = {}
    for track in ("talking", "listening"):
        names, *rest = (z[f"{track}_{f}"] for f in DATA_FIELDS)
        data[track] = PreferenceData(track, tuple(str(n) for n in names), *rest)
    return data, str(z["built_from"])


def train_score(data: PreferenceData, seed: int = 0, epochs: int = 300, lr: float = 0.01,
                validation: float = 0.2) -> TrainedScore:  # fmt: skip
    """Fit h with RankNet on the comparable pairs of `data`, full batch (every clip in one batch,
    so batch normalisation sees the whole spread of metrics).

    As in section 5.1, a share of the clips (`validation`, whole segments) is set aside; the
    weights kept are those of the epoch with the lowest validation loss, which stops the net
    from learning the training segments by heart.
    """
    torch.manual_seed(seed)
    segments = np.random.default_rng(seed).permutation(np.unique(data.segment))
    n_val = int(round(validation * len(segments))) if len(segments) >= 5 else 0
    val_mask = np.isin(data.segment, segments[:n_val])
    train, val = data.subset(~val_mask), data.subset(val_mask)
    normaliser = Normaliser.fit(train.X)
    x = torch.from_numpy(normaliser(train.X))
    pairs = torch.from_numpy(comparable_pairs(train))
    x_val, pairs_val = torch.from_numpy(normaliser(val.X)), torch.from_numpy(comparable_pairs(val))
    model = PreferenceScore(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    curve, best = [], (float("inf"), None)
    for _ in range(epochs):
        model.train()
        loss = ranknet_loss(model(x), pairs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
        if len(pairs_val):
            model.eval()
            with torch.no_grad():
                val_loss = float(ranknet_loss(model(x_val), pairs_val))
            if val_loss < best[0]:
                best = (val_loss, {k: v.clone() for k, v in model.state_dict().items()})
    if best[1] is not None:
        model.load_state_dict(best[1])
    return TrainedScore(model, normaliser, data.names, curve)
