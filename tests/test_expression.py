"""The expression model (DialogueNeRF Eq. 1) leaves eye closure to the blink value alone."""

from __future__ import annotations

import numpy as np

from minitalk.prepare import expression


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """How much of y (T,) a linear function of x (T, K) explains."""
    design = np.c_[x, np.ones(len(x))]
    w, *_ = np.linalg.lstsq(design, y, rcond=None)
    return 1 - float((y - design @ w).var() / y.var())


def test_no_coefficient_moves_with_a_blink_and_the_mouth_is_kept():
    """Two people whose faces blink and open their mouths, the blinks partly at the same time as
    the mouth (as people blink when they start to speak): the coefficients explain the mouth, and
    none of the blink."""
    rng = np.random.default_rng(0)
    T, D = 400, 478 * 3
    shapes, blinks, mouths = [], [], []
    for p in range(2):
        base = rng.normal(size=D) * 0.05
        mouth_dir, blink_dir = rng.normal(size=(2, D)) * 0.01
        mouth = np.abs(np.sin(np.arange(T) / (5 + p)))
        blink = np.zeros(T)
        for start in rng.choice(T - 5, 12, replace=False):
            blink[start : start + 4] = 1.0
        blink[(mouth > 0.99) & (np.arange(T) % 3 == 0)] = 1.0  # some at the mouth's widest
        flat = base + mouth[:, None] * mouth_dir + blink[:, None] * blink_dir + rng.normal(size=(T, D)) * 1e-4
        shapes.append(flat.reshape(T, 478, 3))
        blinks.append(blink)
        mouths.append(mouth)
    kept = expression.MorphableModel.fit(shapes, 4, blinks=blinks)
    plain = expression.MorphableModel.fit(shapes, 4, blinks=[np.zeros(T), np.zeros(T)])
    for p in range(2):
        assert r_squared(plain.coefficients(shapes[p], p), blinks[p]) > 0.99  # without: blink in beta
        beta = kept.coefficients(shapes[p], p)
        assert r_squared(beta, blinks[p]) < 1e-3
        assert r_squared(beta, mouths[p]) > 0.9
