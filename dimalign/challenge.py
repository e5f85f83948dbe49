"""The challenge's scores of one method over replicates, each with an sd over resampled
replicates: forgetting quality, final score, tug-of-war and the U-LiRA AUC (`forgetting`,
`ulira`).

Every row, the retrained reference's included, is scored on one split of the replicates into
halves A and B (docs/method.md, "Forgetting quality"): the rule's ε grows with the models a side,
so retraining against itself (A against B) and a method against retraining must meet with as
many models a side for the reference to mean anything. Pure numpy on plain dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from dimalign.forgetting import (
    TOW_KEYS,
    example_epsilons,
    final_score,
    forgetting_quality,
    max_epsilon,
    side_for,
    tow,
)
from dimalign.ulira import MIN_MODELS, held_out_scores, ulira_auc

SCORES = ("forgetting_quality", "final_score", "tow", "ulira_auc")
DESCRIPTIONS = {  # a page's column help
    "forgetting_quality": "The NeurIPS 2023 unlearning challenge's forgetting quality: per forget "
    "example, ε of the best threshold attack between unlearned and retrained models' "
    "confidences, worth 2/2^k in its k-th ε bucket, averaged; replicates in two halves. "
    "Higher is better; the retrained row is retraining against itself, the reference",
    "final_score": "Forgetting quality × retain accuracy ratio × test accuracy ratio "
    "(unlearned over retrained): the challenge's ranking score",
    "tow": "Tug-of-war: ∏ (1 − |acc_unlearned − acc_retrained|) over forget, retain and test "
    "(Zhao et al. 2024); 1 is retraining's accuracies",
    "ulira_auc": "U-LiRA: AUC of a per-example likelihood-ratio test telling unlearned from "
    "retrained models (0.5: it cannot; 8 replicates or more)",
}
BOOTSTRAP = 200  # draws of the replicates (re-splits, resamples) behind each sd
RESOLVE = 2.0  # the ε a run should be able to show: past it an example scores under 1/8


def _sd(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicates 0..h−1 and h..2h−1, h = n // 2 (an odd last one sits out)."""
    return halves_of(np.arange(n))


def halves_of(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = len(order) // 2
    return order[:h], order[h:2 * h]


def scores(unlearned: np.ndarray, retrained: np.ndarray, acc_u: Sequence[Mapping],
           acc_r: Sequence[Mapping], *, reference: bool = False, boots: int = BOOTSTRAP,
           seed: int = 0) -> dict:
    """Forgetting quality, final score, ToW and U-LiRA AUC of unlearned against retrained
    models, each {"value", "sd"} (or {"value": None, "reason"}), and a note on resolution.
    Row i of the scores (models, examples) and of each side's accuracies (acc_forget,
    acc_retain, acc_test) comes from replicate i. Every row, the retrained reference's
    (`reference`: `unlearned` is `retrained`) included, is scored on one split of the
    replicates in halves A and B: unlearned A against retrained B and B against A, so a
    perfect method and retraining meet the same test. The sds, over `boots` seeded draws of
    the models: forgetting quality over random re-splits into halves (a resample with
    replacement would tie duplicated models, and ties move ε); ToW, the accuracy ratios and
    U-LiRA over resamples of the replicates (within each half, held-out pairs)."""
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    a, b = halves(len(u))
    h = len(a)
    finite = bool(np.isfinite(u).all() and np.isfinite(r).all())
    accurate = all(isinstance(row.get(k), int | float) for row in (*acc_u, *acc_r)
                   for k in TOW_KEYS)
    why = {"forgetting_quality": None if finite else "a model's forget outputs are not finite",
           "tow": None if accurate else "an accuracy is undefined"}
    if u.shape[1] == 0:
        why["forgetting_quality"] = "no forget examples"
    if h < 3:
        why["forgetting_quality"] = f"needs at least 6 replicates (3 a side), got {len(u)}"
    if h < 1:
        why["tow"] = "needs at least 2 replicates"
    why["final_score"] = why["forgetting_quality"] or why["tow"]

    def fq(a: np.ndarray, b: np.ndarray) -> float:  # unlearned of one half, retrained of other
        return _mean(forgetting_quality(example_epsilons(u[x], r[y]), h)
                     for x, y in ((a, b), (b, a)))

    def tows(a: np.ndarray, b: np.ndarray) -> float:
        return _mean(tow(acc_u[i], acc_r[j]) for x, y in ((a, b), (b, a))
                     for i, j in zip(x, y, strict=True))

    def utility(rows: np.ndarray) -> float:  # final score / forgetting quality
        return final_score(1.0, [acc_u[i] for i in rows], [acc_r[i] for i in rows])

    rng = np.random.default_rng(seed)
    splits = [halves_of(rng.permutation(2 * h)) for _ in range(boots)]
    resamples = [(rng.choice(a, h), rng.choice(b, h)) for _ in range(boots)] if h else []
    value, draws = {}, {}
    if not why["forgetting_quality"]:
        value["forgetting_quality"] = fq(a, b)
        draws["forgetting_quality"] = [fq(x, y) for x, y in splits]
    if not why["tow"]:
        value["tow"] = tows(a, b)
        draws["tow"] = [tows(x, y) for x, y in resamples]
    if not why["final_score"]:
        both = np.concatenate([a, b])
        value["final_score"] = value["forgetting_quality"] * utility(both)
        draws["final_score"] = [f * utility(np.concatenate(xy)) for f, xy
                                in zip(draws["forgetting_quality"], resamples, strict=True)]
    out = {"models_per_side": h, "examples": u.shape[1]}
    for key in SCORES[:3]:
        out[key] = ({"value": value[key], "sd": _sd(draws[key])} if key in value
                    else {"value": None, "sd": None, "reason": why[key]})
    if len(u) < MIN_MODELS or why["forgetting_quality"]:
        reason = (f"needs at least {MIN_MODELS} replicates, got {len(u)}"
                  if len(u) < MIN_MODELS else why["forgetting_quality"])
        out["ulira_auc"] = {"value": None, "sd": None, "reason": reason}
    else:  # retraining against itself: its halves; a method: every replicate a side
        s_u, s_r = held_out_scores(r[a], r[b]) if reference else held_out_scores(u, r)
        rows = [rng.integers(0, len(s_u), len(s_u)) for _ in range(boots)]
        out["ulira_auc"] = {"value": ulira_auc(s_u, s_r),
                            "sd": _sd([ulira_auc(s_u, s_r, x) for x in rows])}
    out["note"] = resolution_note(h)
    return out


def _mean(values) -> float:
    return float(np.mean(list(values)))


def resolution_note(h: int) -> str | None:
    """What to say when h models a side cannot show ε = RESOLVE: past it an example's points
    fall under 1/8, and below it the attack cannot tell those examples from ones at its
    largest ε, so a method's forgetting quality is too kind; None when h can (or when h
    is too few for any score)."""
    if h < 3 or max_epsilon(h) >= RESOLVE:
        return None
    need = side_for(RESOLVE)
    return (f"{h} models a side show ε up to log({h} − 1) ≈ {max_epsilon(h):.2f}, then only "
            f"full separation: examples with ε past it score as if at it. ε ≥ {RESOLVE:g} "
            f"(1/16 of a point or less) needs {need} a side: --replicates {2 * need}")
