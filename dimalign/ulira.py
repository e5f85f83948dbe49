"""A per-example likelihood-ratio attack on unlearning, U-LiRA style (Hayes et al. 2024).

For each forget example, Gaussians fitted to the unlearned and to the retrained models'
logit-scaled confidences; a held-out model's confidence is scored by the log ratio of the two
densities, and the AUC over held-out models says how well the test tells unlearned from
retrained (0.5: not at all). Our protocol (docs/method.md, "Forgetting quality"): leave one
replicate's pair out, fit on the rest, score the pair. Pure numpy: arrays are (models,
examples), row i of each side from replicate i.
"""

from __future__ import annotations

import numpy as np

MIN_MODELS = 8  # models a side below which no AUC is reported
VAR_FLOOR = 1e-6  # a side whose models agree exactly still gets a density


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann–Whitney U)."""
    x = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # tied values share their mean rank
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fit(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-example means and one variance, the mean of the examples' (n − 1) variances: LiRA's
    "fixed variance", steadier than per-example variances from a handful of models."""
    return x.mean(0), max(float(x.var(0, ddof=1).mean()), VAR_FLOOR)


def _log_density(x: np.ndarray, mean: np.ndarray, var: float) -> np.ndarray:
    return -0.5 * ((x - mean) ** 2 / var + np.log(2 * np.pi * var))


def held_out_scores(unlearned: np.ndarray, retrained: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Log likelihood ratios (unlearned over retrained), (models, examples) for each side: row
    i scored by Gaussians fitted on every other row of both sides."""
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    if len(u) != len(r) or len(u) < 3:
        raise ValueError("U-LiRA needs as many models on each side, at least 3")
    s_u, s_r = np.empty_like(u), np.empty_like(r)
    for i in range(len(u)):
        rest = np.arange(len(u)) != i
        (mu_u, var_u), (mu_r, var_r) = _fit(u[rest]), _fit(r[rest])
        for x, out in ((u[i], s_u), (r[i], s_r)):
            out[i] = _log_density(x, mu_u, var_u) - _log_density(x, mu_r, var_r)
    return s_u, s_r


def ulira_auc(s_u: np.ndarray, s_r: np.ndarray, rows: np.ndarray | None = None) -> float:
    """The mean over held-out replicates `rows` (all when None; a bootstrap passes a
    resample) of the AUC of that replicate's unlearned against its retrained model's scores,
    pooled over examples: within a pair both models meet the same fits, so with no difference
    the AUC is 0.5 by symmetry; across pairs the fits differ."""
    rows = np.arange(len(s_u)) if rows is None else rows
    return float(np.mean([auc(s_u[i], s_r[i]) for i in rows]))
