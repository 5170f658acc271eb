"""How a ranking of clips is judged, and what the Preference Score is judged against (the
Preference Score paper, section 5).

- MRR: the mean over queries of 1 / (rank of the most preferred clip).
- DCG (Eq. 3): sum_i rel_i / log2(i + 1) over the ordering, rel_i the graded relevance of the
  clip at position i (3 for the clean clip, 3 - s at severity s).
- The baselines: #Top-1 (ViCo 2022: on how many metrics a clip is best), rank-sum (ViCo 2023:
  the sum of its ranks over the metrics) and a decision-tree classifier of the preference level.
- `compare`: every method on held-out segments (five folds; the learned methods never train on
  what they are scored on), mean and std over seeds; optionally on a degradation family the
  learned methods never saw. `permutation_importance`: section 5.3's DCG drop when one metric is
  shuffled across the held-out clips.
"""

from __future__ import annotations

import numpy as np

from minitalk.evaluate.preference import HIGHER_IS_BETTER, Normaliser, PreferenceData, train_score

METHODS = ("ps", "top1", "rank_sum", "tree")


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
    from sklearn.tree import DecisionTreeClassifier  # lazy: a 1 s import, for this baseline only

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
    """MRR and DCG of every method on held-out segments, mean and std over seeds
    ({method: {"mrr": [mean, std], "dcg": [mean, std]}}, and "per_seed": the values behind them).

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
    out["per_seed"] = runs
    queries = data.subset(
        data.query if held_out_family is None else np.isin(data.family, ("clean", held_out_family))
    )
    out["gt"] = {"mrr": [1.0, 0.0], "dcg": [round(dcg(queries.relevance, queries), 4), 0.0]}
    return out


def versus(result: dict, method: str = "ps", baselines=("top1", "rank_sum", "tree")) -> dict:
    """`method` against each baseline in a `compare` result: per measure, the mean and std over
    seeds of the paired difference (both scored on the same folds of each seed) and a verdict,
    "better" or "worse" when the mean difference is larger than its spread, else "tie"."""
    out = {}
    for b in baselines:
        out[b] = {}
        for k in ("mrr", "dcg"):
            diff = np.subtract(result["per_seed"][method][k], result["per_seed"][b][k])
            mean, std = float(np.mean(diff)), float(np.std(diff))
            verdict = "better" if mean > std else "worse" if mean < -std else "tie"
            out[b][k] = {"diff": [round(mean, 4), round(std, 4)], "verdict": verdict}
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
