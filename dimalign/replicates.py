"""Replicates: mean and sd over seeds, gaps paired within a replicate, and the noise floor.

A replicate (`Config.replicate`) retrains both baselines and reruns the method with a new
initialisation, batch order and method randomness, on the same split and forget set. An
unlearned model is compared with the retrained model *of its own replicate*. The noise floor
is how far retraining differs from itself: the mean absolute gap between the retrained models
of every pair of replicates, with the same gap definition (`metric_table.gap_to_retrained`);
a method whose gap is inside it is as close to retraining as another retraining would be.

Pure Python on plain dicts (metric name -> value), like the metric table: no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

from dimalign.metric_table import TABLE, TIME_FRACTION, avg_gap_keys, gap_to_retrained

# measured against another model (CKA) or already a distance (avg-gap): between two retrained
# models these have no gap of the ordinary kind; avg-gap's floor is the pairs' avg-gap
PAIRWISE = frozenset({"cka_retrained", "cka_original", "avg_gap"})
AVG_GAP = "avg_gap"


def _value(v) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(v) else float(v)


def mean_sd(values: Iterable) -> tuple[float | None, float | None]:
    """Mean and sample sd (n - 1; 0 for one value) of the values present (None, NaN and
    non-numbers skipped); (None, None) when none is."""
    xs = [x for v in values if (x := _value(v)) is not None]
    if not xs:
        return None, None
    mean = math.fsum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def summarize(rows: Sequence[dict], keys: Iterable[str]) -> dict[str, dict]:
    """{"mean": {key: ...}, "sd": {key: ...}} of each key over rows (one row per replicate)."""
    out: dict[str, dict] = {"mean": {}, "sd": {}}
    for key in keys:
        out["mean"][key], out["sd"][key] = mean_sd(row.get(key) for row in rows)
    return out


def pair_avg_gap(row: dict, reference: dict) -> float | None:
    """Mean |row - reference| over the avg-gap metrics (accuracies and MIA), as
    `metrics.avg_gap` computes it against the retrained model."""
    gaps = [abs(g) for k in avg_gap_keys()
            if (g := gap_to_retrained(k, _value(row.get(k)), _value(reference.get(k))))
            is not None]
    return math.fsum(gaps) / len(gaps) if gaps else None


def gaps(row: dict, retrained: dict, keys: Iterable[str]) -> dict[str, float | None]:
    """Each key's gap of `row` to `retrained`, which must be the retrained model of the
    replicate `row` was measured in."""
    return {k: gap_to_retrained(k, _value(row.get(k)), _value(retrained.get(k))) for k in keys}


def paired_abs_gaps(pairs: Sequence[tuple[dict, dict]], keys: Iterable[str]) -> dict:
    """Mean |gap| per key over (row, its own replicate's retrained row) pairs; avg-gap is the
    rows' own (a distance), or computed from the pair when a row lacks it."""
    keys = list(keys)
    out = {}
    for key in keys:
        values = []
        for row, retrained in pairs:
            if key == AVG_GAP:
                v = _value(row.get(AVG_GAP))
                values.append(v if v is not None else pair_avg_gap(row, retrained))
            else:
                g = gap_to_retrained(key, _value(row.get(key)), _value(retrained.get(key)))
                values.append(None if g is None else abs(g))
        out[key] = mean_sd(values)[0]
    return out


def noise_floor(retrained: Sequence[dict], keys: Iterable[str]) -> dict[str, float | None]:
    """Mean absolute gap between the retrained models of every pair of replicates, per key
    (keys measured against another model are left out), and their mean avg-gap under
    "avg_gap". Every value is None with fewer than two replicates: there is no pair."""
    keys = [k for k in keys if k in TABLE and k not in PAIRWISE]
    pairs = list(itertools.combinations(retrained, 2))
    out: dict[str, float | None] = {}
    for key in keys:
        values = [gap_to_retrained(key, _value(b.get(key)), _value(a.get(key)))
                  for a, b in pairs]
        out[key] = mean_sd(abs(v) for v in values if v is not None)[0]
    out[AVG_GAP] = mean_sd(pair_avg_gap(b, a) for a, b in pairs)[0]
    return out


def inside(abs_gap: float | None, floor: float | None) -> bool | None:
    """Whether a mean absolute gap lies within the noise floor (None: one of them missing)."""
    if abs_gap is None or floor is None:
        return None
    return abs_gap <= floor


def aggregate(results: Sequence[dict], retrained: Sequence[dict]) -> dict:
    """One `compare` result per replicate (replicate 0 first) and each replicate's retrained
    metrics -> replicate 0's result (today's fields, unchanged) plus `replicates`, per method
    `mean`, `sd` (every metric, avg-gap and the time fraction) and `mean_abs_gap` (the gap of
    each replicate's model to that replicate's retrained model), and `noise_floor`."""
    if len(results) != len(retrained) or not results:
        raise ValueError("one retrained row per result, at least one of each")
    out = {**results[0], "replicates": len(results)}
    methods = {}
    for name, row0 in results[0]["methods"].items():
        rows = [r["methods"][name] for r in results]
        keys = [k for k in row0 if k in TABLE or k in ("seconds", TIME_FRACTION.name)]
        stats = summarize(rows, keys)
        gap_keys = [k for k in keys if k in TABLE and (k not in PAIRWISE or k == AVG_GAP)]
        methods[name] = {**row0, **stats,
                         "mean_abs_gap": paired_abs_gaps(list(zip(rows, retrained, strict=True)),
                                                         gap_keys)}
    out["methods"] = methods
    keys = [k for k in retrained[0] if k in TABLE]
    out["noise_floor"] = noise_floor(retrained, keys)
    return out
