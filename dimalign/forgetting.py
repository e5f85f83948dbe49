"""Forgetting quality by the NeurIPS 2023 unlearning challenge's rule, and tug-of-war.

The challenge (Triantafillou et al. 2024; its scorer: google-deepmind/unlearning_evaluation,
`metric.py`) looks at one forget example at a time: N unlearned and N retrained models each give
it one number (the logit-scaled confidence on its label); the best threshold attack on those 2N
numbers gives an (ε, δ) estimate; ε falls in a bucket worth 2 / 2^k; the buckets' mean over the
forget set is the forgetting quality. Ours follows that rule, with the thresholds swept exactly
(docs/method.md, "Forgetting quality"). Pure numpy: arrays are (models, examples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

DELTA = 1e-5  # the challenge's δ
EPSILON_CAP = 50.0  # the challenge's ε for a separated or a "peaky" example (0 points)
BUCKET = 0.5  # width of an ε bucket
PEAKY = 0.01  # a side whose spread is under 1 % of the other's: ε = EPSILON_CAP
CELLS = 1 << 22  # the interval sweep's (examples, 2N, 2N) block, at most this many cells
TOW_KEYS = ("acc_forget", "acc_retain", "acc_test")


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log p_y − log(1 − p_y) per row, the challenge's (and LiRA's) score: logit_y minus the
    log-sum-exp of the other logits, which is that ratio without forming 1 − p_y."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    own = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    top = others.max(1)
    return own - (top + np.log(np.exp(others - top[:, None]).sum(1)))


def max_epsilon(n: int, delta: float = DELTA) -> float:
    """The largest finite ε a threshold attack can show with n models a side: both error
    rates at least 1/n, so log((1 − δ − 1/n) / (1/n)) = log(n − 1 − nδ). Beyond it only a
    perfect separation (ε = ∞) can be seen."""
    return math.log(n - 1 - n * delta) if n > 2 else 0.0


def buckets(n: int) -> list[tuple[float, float, float]]:
    """(from, to, points) of the challenge's ε buckets for n models a side: width 0.5 from 0,
    worth 1, 1/2, 1/4, ... (2 / 2^k for the k-th), up to ⌈log(n − 1)⌉; ε past the last
    scores 0."""
    top = math.ceil(math.log(n - 1)) if n > 2 else 0
    return [(k * BUCKET, (k + 1) * BUCKET, 2.0 / 2 ** (k + 1)) for k in range(int(top / BUCKET))]


def bucket_points(eps: np.ndarray, n: int) -> np.ndarray:
    """Each ε's points under `buckets(n)`: 2 / 2^k in the k-th bucket, 0 past the last."""
    k = np.floor(np.asarray(eps, dtype=np.float64) / BUCKET)
    return np.where(k < len(buckets(n)), 2.0 / 2 ** (k + 1), 0.0)


def _threshold_eps(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """ε of each threshold: max(log((1−δ−FPR)/FNR), log((1−δ−FNR)/FPR)), at least 0; ∞ where
    both rates are 0 (separated); −∞ (dropped) where one of them is 0, which the challenge reads
    as too few samples rather than as evidence."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr, 0, None)) - np.log(fnr)
        b = np.log(np.clip(1 - delta - fnr, 0, None)) - np.log(fpr)
    eps = np.where((fpr > 0) & (fnr > 0), np.maximum(np.maximum(a, b), 0.0), -np.inf)
    return np.where((fpr == 0) & (fnr == 0), np.inf, eps)


def _ge(x: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """(E, M): how many of each example's values x (E, n) are ≥ each of its cuts (E, M)."""
    return (x[:, None, :] >= cuts[:, :, None]).sum(2)


def _le(x: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return (x[:, None, :] <= cuts[:, :, None]).sum(2)


def _single(pos: np.ndarray, neg: np.ndarray, cuts: np.ndarray, delta: float) -> np.ndarray:
    """Best ε of the one-threshold rule "positive when ≥ t", t over every observed value (each
    distinct split of the sorted values; the challenge steps t by 0.01)."""
    fpr = _ge(neg, cuts) / neg.shape[1]
    fnr = 1 - _ge(pos, cuts) / pos.shape[1]
    return _threshold_eps(fpr, fnr, delta).max(1)


def _interval(pos: np.ndarray, neg: np.ndarray, cuts: np.ndarray, delta: float) -> np.ndarray:
    """Best ε of the two-threshold rule "positive when l ≤ x ≤ r", over every pair of observed
    values (the challenge: a grid of widths near the peakier side's spread)."""
    def inside(x):  # (E, M, M): #x in [cut_l, cut_r]; 0 when cut_l > cut_r
        return np.clip(_ge(x, cuts)[:, :, None] + _le(x, cuts)[:, None, :] - x.shape[1], 0, None)

    fpr = inside(neg) / neg.shape[1]
    fnr = 1 - inside(pos) / pos.shape[1]
    return _threshold_eps(fpr, fnr, delta).reshape(len(pos), -1).max(1)


def example_epsilons(unlearned: np.ndarray, retrained: np.ndarray,
                     delta: float = DELTA) -> np.ndarray:
    """ε per forget example from the (models, examples) scores of each side, by the
    challenge's rule: the best of a one-threshold attack (positive: the side with the larger
    median) and an interval attack (positive: the side with the smaller spread), capped at
    EPSILON_CAP, which a "peaky" example (one side's spread under 1 % of the other's) gets
    outright."""
    u = np.asarray(unlearned, dtype=np.float64).T  # (E, N_u)
    r = np.asarray(retrained, dtype=np.float64).T
    out = np.empty(len(u))
    chunk = max(1, CELLS // (u.shape[1] + r.shape[1]) ** 2)
    for s in range(0, len(u), chunk):
        out[s:s + chunk] = _epsilons(u[s:s + chunk], r[s:s + chunk], delta)
    return out


def _epsilons(u: np.ndarray, r: np.ndarray, delta: float) -> np.ndarray:
    cuts = np.concatenate([u, r], 1)
    r_up = np.median(r, 1) > np.median(u, 1)  # a tie: the unlearned side is positive
    single = np.where(r_up, _single(r, u, cuts, delta), _single(u, r, cuts, delta))
    spread_u, spread_r = np.ptp(u, 1), np.ptp(r, 1)
    # the interval's positive: the narrower side; a tie: the one the single rule called negative
    wide_up = np.where(r_up, spread_r >= spread_u, spread_u >= spread_r)
    r_narrow = np.where(wide_up, ~r_up, r_up)
    interval = np.where(r_narrow, _interval(r, u, cuts, delta), _interval(u, r, cuts, delta))
    eps = np.maximum(single, interval)
    # no threshold kept (every one had exactly one zero rate): identical constants, or apart
    # but for a tie; the challenge asserts here, we call the first 0 and the second separated
    same = (np.ptp(cuts, 1) == 0)
    eps = np.where(np.isneginf(eps), np.where(same, 0.0, EPSILON_CAP), eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        peaky = np.minimum(spread_u, spread_r) / np.maximum(spread_u, spread_r) < PEAKY
    return np.clip(np.where(peaky, EPSILON_CAP, eps), 0.0, EPSILON_CAP)


def forgetting_quality(eps: np.ndarray, n: int) -> float:
    """The mean of the examples' bucket points: 1 when no example can be told apart."""
    return float(bucket_points(eps, n).mean())


def side_for(eps: float, delta: float = DELTA) -> int:
    """The fewest models a side that can show ε short of full separation: the least n with
    log(n − 1 − nδ) ≥ ε."""
    return math.ceil((math.exp(eps) + 1) / (1 - delta))


def final_score(fq: float, unlearned: Sequence[Mapping], retrained: Sequence[Mapping]) -> float:
    """The challenge's final score: FQ × RA_u / RA_r × TA_u / TA_r, accuracies (retain, test)
    averaged over each side's models."""
    def mean(rows, key):
        return float(np.mean([row[key] for row in rows]))

    return (fq * mean(unlearned, "acc_retain") / mean(retrained, "acc_retain")
            * mean(unlearned, "acc_test") / mean(retrained, "acc_test"))


def tow(unlearned: Mapping, retrained: Mapping) -> float:
    """Tug-of-war (Zhao et al. 2024): ∏ (1 − |acc_u − acc_r|) over forget, retain and test."""
    return math.prod(1 - abs(unlearned[k] - retrained[k]) for k in TOW_KEYS)
