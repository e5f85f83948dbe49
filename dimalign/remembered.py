"""Which forget samples are still remembered: per-sample values of each model, scored against
what retraining gives for the same sample (issue 27; docs/method.md, "The audit").

Each model gives each forget sample four values: its residual outside the retain top-k
eigenspace (`film.residuals`, computed by the audit), and from its logits the margin and the
confidence on its label and a membership score, the logit-scaled confidence the challenge's
forgetting quality uses (`forgetting.logit_confidence`). A sample counts as remembered when the
unlearned model's value lies on the original model's side of the retrained models' values and
outside their spread:

- with replicates (n ≥ 2 retrained models): z = s (u − μ) / σ, μ the retrained models' mean
  for the sample, σ one sd for every sample (the mean of the samples' n − 1 variances: LiRA's
  "fixed variance", as `ulira`, steadier than n values give per sample), s = +1 where the
  original lies at or above μ, else −1; and the share of retrained models less far toward
  the original (ties count half);
- with one retrained model, the weaker single-run verdict: s (u − r), a gap in the value's
  own units, with no retraining spread to judge it by.

Pure numpy: a model's values are arrays over the same forget samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from dimalign.forgetting import logit_confidence

QUANTITIES = ("residual", "margin", "confidence", "membership")
SCORED = ("residual", "membership")  # scored against retraining; the verdict is the first's
VAR_FLOOR = 1e-12  # retrained models that agree exactly on every sample still give a z
MIN_REPLICATES = 2  # retrained models from which their spread is a reference


def output_values(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of `logits` (N, K), on its label: the margin (its logit minus the best other
    logit), the softmax confidence, and the membership score log p − log(1 − p)."""
    z = np.asarray(logits, dtype=np.float64)
    rows, labels = np.arange(len(z)), np.asarray(labels)
    own = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    top = z.max(1, keepdims=True)
    log_p = own - (top[:, 0] + np.log(np.exp(z - top).sum(1)))
    return {"margin": own - others.max(1), "confidence": np.exp(log_p),
            "membership": logit_confidence(z, labels)}


def direction(original: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """+1 where the original model's value lies at or above the retrained centre, else −1:
    the way "remembered" points for each sample."""
    return np.where(np.asarray(original) >= np.asarray(centre), 1.0, -1.0)


def fixed_sd(retrained: np.ndarray) -> float:
    """One sd for every sample: the root of the mean over samples of the retrained models'
    (n − 1) variances (NaN samples skipped), at least √VAR_FLOOR."""
    var = np.nanmean(np.asarray(retrained, dtype=np.float64).var(0, ddof=1))
    return math.sqrt(max(float(var), VAR_FLOOR)) if np.isfinite(var) else math.nan


def against_replicates(unlearned: np.ndarray, original: np.ndarray,
                       retrained: np.ndarray) -> dict[str, np.ndarray | float]:
    """The unlearned value of each sample against the (n, samples) retrained models' values:
    "z", "percentile" (the share of retrained models less far toward the original, ties half),
    the retrained "mean" per sample and the "sd" shared by all."""
    r = np.asarray(retrained, dtype=np.float64)
    if r.ndim != 2 or len(r) < MIN_REPLICATES:
        raise ValueError(f"needs at least {MIN_REPLICATES} retrained models, got {len(r)}")
    u = np.asarray(unlearned, dtype=np.float64)
    mean, sd = r.mean(0), fixed_sd(r)
    s = direction(original, mean)
    below, tied = (s * r < s * u).sum(0), (s * r == s * u).sum(0)
    percentile = np.where(np.isnan(u), np.nan, (below + 0.5 * tied) / len(r))
    return {"z": s * (u - mean) / sd, "percentile": percentile, "mean": mean, "sd": sd}


def against_one(unlearned: np.ndarray, original: np.ndarray,
                retrained: np.ndarray) -> np.ndarray:
    """The single-run gap s (u − r), toward the original: positive where the unlearned value
    moved from the retrained model's toward the original's."""
    r = np.asarray(retrained, dtype=np.float64)
    return direction(original, r) * (np.asarray(unlearned, dtype=np.float64) - r)


def verdicts(values: Mapping[str, Mapping[str, np.ndarray]],
             references: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """Per SCORED quantity, the unlearned model's score per sample against the retrained
    models: `values` holds each model's arrays ("original", "retrained", "unlearned"),
    `references` the other replicates' retrained models' (the run's own retrained model is
    one of the distribution). {"kind": "replicates" | "single" | None, "retrained_models",
    QUANTITY: {"score", "percentile"}}; kind None (no scores) without an unlearned model."""
    if not {"unlearned", "original", "retrained"} <= set(values):
        return {"kind": None, "retrained_models": 1 + len(references)}
    u, o = values["unlearned"], values["original"]
    out: dict = {"kind": "replicates" if references else "single",
                 "retrained_models": 1 + len(references)}
    for q in SCORED:
        if references:
            r = np.stack([values["retrained"][q], *(ref[q] for ref in references)])
            scored = against_replicates(u[q], o[q], r)
            out[q] = {"score": scored["z"], "percentile": scored["percentile"],
                      "mean": scored["mean"], "sd": scored["sd"]}
        else:
            out[q] = {"score": against_one(u[q], o[q], values["retrained"][q])}
    return out


def _num(value) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def ranked(ids: Sequence[int], labels: Sequence[int],
           values: Mapping[str, Mapping[str, np.ndarray]], scored: dict) -> list[dict]:
    """The samples as plain data, most remembered first (highest residual score; samples
    without one last, then by id): {"id", "label", "models": {MODEL: {QUANTITY: value}},
    "score" (the residual's), "scores": {QUANTITY: score}, and with replicates "percentile"
    (the residual's) and "reference" (the retrained models' mean of each scored quantity)}."""
    out = []
    for i, (sample, label) in enumerate(zip(ids, labels, strict=True)):
        models = {m: {q: _num(v[q][i]) for q in QUANTITIES} for m, v in values.items()}
        scores = {q: _num(scored[q]["score"][i]) if q in scored else None for q in SCORED}
        pct = scored.get("residual", {}).get("percentile")
        entry = {"id": int(sample), "label": int(label), "models": models,
                 "score": scores["residual"], "scores": scores,
                 "percentile": None if pct is None else _num(pct[i])}
        if scored["kind"] == "replicates":
            entry["reference"] = {q: _num(scored[q]["mean"][i]) for q in SCORED}
        out.append(entry)
    return sorted(out, key=lambda s: (s["score"] is None, -(s["score"] or 0.0), s["id"]))
