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
- Judged, as in section 5.2, by the mean reciprocal rank of the best clip of each query (MRR) and
  the discounted cumulative gain of the whole ordering, DCG = sum_i rel_i / log2(i + 1) (Eq. 3),
  against the challenge rules #Top-1 (ViCo 2022: how many metrics a clip is best on) and
  rank-sum (ViCo 2023: the sum of a clip's ranks over the metrics), and a decision tree; and by
  permutation feature importance, the drop in DCG when one metric is shuffled (section 5.3).

The preferences here are known orderings of degraded renders (`minitalk.evaluate.dataset`), not
human judgements: what the score learns is that ordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

TALKING = ("psnr", "ssim", "cpbd", "lmd", "lip_lmd", "exp_l1", "pose_l1", "av_offset_abs", "av_conf")
LISTENING = ("psnr", "ssim", "cpbd", "lmd", "exp_l1", "pose_l1", "exp_fd", "pose_fd")
HIGHER_IS_BETTER = frozenset({"psnr", "ssim", "cpbd", "av_conf"})
METHODS = ("ps", "top1", "rank_sum", "tree")


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
        n = self.normaliser
        return {"weights": self.model.state_dict(), "names": list(self.names), "low": n.low, "span": n.span,
                "mean": n.mean, "std": n.std}  # fmt: skip


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


# ---- the baselines: higher output = ranked higher ------------------------------------------------


def _oriented(data: PreferenceData) -> np.ndarray:
    """X with every metric turned so that higher is better; NaN as the worst value."""
    sign = np.array([1.0 if n in HIGHER_IS_BETTER else -1.0 for n in data.names])
    return np.where(np.isnan(data.X), -np.inf, data.X * sign)


def rank_sum(data: PreferenceData) -> np.ndarray:
    """ViCo 2023's rule: each clip's rank on every metric within its query (1 = best), summed;
    returned negated, so that higher is better."""
    out = np.zeros(len(data.X))
    Xo = _oriented(data)
    for g in np.unique(data.group):
        idx = np.flatnonzero(data.group == g)
        ranks = np.zeros(len(idx))
        for f in range(Xo.shape[1]):
            col = Xo[idx, f]
            ranks += 1 + (col[None, :] > col[:, None]).sum(1)  # ties share the better rank
        out[idx] = -ranks
    return out


def top1(data: PreferenceData) -> np.ndarray:
    """ViCo 2022's rule: on how many metrics a clip is the best of its query (ties all count);
    ties in that count are broken by rank-sum."""
    out = np.zeros(len(data.X))
    Xo = _oriented(data)
    for g in np.unique(data.group):
        idx = np.flatnonzero(data.group == g)
        out[idx] = (Xo[idx] >= Xo[idx].max(0)).sum(1)
    rs = rank_sum(data)
    return out + 1e-3 * (rs - rs.min()) / max(np.ptp(rs), 1e-12)


def tree_scores(train: PreferenceData, test: PreferenceData, seed: int) -> np.ndarray:
    """A decision-tree classifier of the preference level (section 5.2's DT), scored by its
    expected preference: sum over levels of P(level) times the level's score."""
    from sklearn.tree import DecisionTreeClassifier

    normaliser = Normaliser.fit(train.X)
    classes = np.unique(train.score)
    tree = DecisionTreeClassifier(random_state=seed).fit(
        normaliser(train.X), np.searchsorted(classes, train.score)
    )
    proba = tree.predict_proba(normaliser(test.X))
    return proba @ classes[tree.classes_]


# ---- ranking quality -------------------------------------------------------------------------------


def mrr(scores: np.ndarray, data: PreferenceData) -> float:
    """Mean over queries of 1 / (rank of the most preferred clip); ties count against the method."""
    rr = []
    for g in np.unique(data.group):
        idx = np.flatnonzero(data.group == g)
        best = idx[np.argmax(data.score[idx])]
        rr.append(1.0 / (1 + np.sum(scores[idx] >= scores[best]) - 1))
    return float(np.mean(rr))


def dcg(scores: np.ndarray, data: PreferenceData) -> float:
    """Mean over queries of Eq. 3 on the ordering by `scores` (ties: the less relevant clip first)."""
    out = []
    for g in np.unique(data.group):
        idx = np.flatnonzero(data.group == g)
        order = np.lexsort((data.relevance[idx], -scores[idx]))
        rel = data.relevance[idx][order]
        out.append(float(np.sum(rel / np.log2(np.arange(2, len(rel) + 2)))))
    return float(np.mean(out))


def method_scores(method: str, train: PreferenceData, test: PreferenceData, seed: int, epochs: int = 300):
    """Scores of `test`'s clips by one method (the PS and the tree learn from `train`)."""
    if method == "ps":
        return train_score(train, seed, epochs)(test.X)
    if method == "tree":
        return tree_scores(train, test, seed)
    if method == "rank_sum":
        return rank_sum(test)
    if method == "top1":
        return top1(test)
    raise ValueError(f"unknown method {method!r}")


def folds(data: PreferenceData, n_folds: int, seed: int) -> list[np.ndarray]:
    """Segments split into `n_folds` test sets (each segment tested once)."""
    segments = np.random.default_rng(seed).permutation(np.unique(data.segment))
    return [np.isin(data.segment, part) for part in np.array_split(segments, n_folds)]


def compare(data: PreferenceData, seeds=range(5), n_folds: int = 5, held_out_family: str | None = None,
            epochs: int = 300) -> dict:  # fmt: skip
    """MRR and DCG of every method on held-out segments, mean and std over seeds.

    With `held_out_family`, the learned methods never see that degradation in training, and are
    scored on queries of the clean clip and that degradation only: a test of what they did not
    learn from.
    """
    runs = {m: {"mrr": [], "dcg": []} for m in METHODS}
    for seed in seeds:
        per = {m: {"mrr": [], "dcg": []} for m in METHODS}
        for test_mask in folds(data, n_folds, seed):
            train_mask = ~test_mask
            query_mask = test_mask & data.query
            if held_out_family is not None:
                train_mask &= data.family != held_out_family
                query_mask &= np.isin(data.family, ("clean", held_out_family))
            train, test = data.subset(train_mask), data.subset(query_mask)
            for m in METHODS:
                s = method_scores(m, train, test, seed, epochs)
                per[m]["mrr"].append(mrr(s, test))
                per[m]["dcg"].append(dcg(s, test))
        for m in METHODS:
            for k in ("mrr", "dcg"):
                runs[m][k].append(float(np.mean(per[m][k])))
    out = {
        m: {k: [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)] for k, v in r.items()}
        for m, r in runs.items()
    }
    queries = data.subset(
        data.query if held_out_family is None else np.isin(data.family, ("clean", held_out_family))
    )
    out["gt"] = {"mrr": [1.0, 0.0], "dcg": [round(dcg(queries.relevance, queries), 4), 0.0]}
    return out


def permutation_importance(data: PreferenceData, seeds=range(5), n_folds: int = 5, repeats: int = 5,
                           epochs: int = 300) -> dict:  # fmt: skip
    """Section 5.3: the mean drop in the PS's held-out DCG when one metric's values are shuffled
    across the test clips."""
    drops = {n: [] for n in data.names}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for test_mask in folds(data, n_folds, seed):
            score = train_score(data.subset(~test_mask), seed, epochs)
            test = data.subset(test_mask & data.query)
            base = dcg(score(test.X), test)
            for f, name in enumerate(data.names):
                for _ in range(repeats):
                    X = test.X.copy()
                    X[:, f] = rng.permutation(X[:, f])
                    drops[name].append(base - dcg(score(X), test))
    return {n: round(float(np.mean(v)), 4) for n, v in drops.items()}
