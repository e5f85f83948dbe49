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
import json
import math
from collections.abc import Iterable, Sequence

from dimalign.memo import LRU
from dimalign.metric_table import TABLE, TIME_FRACTION, avg_gap, gap_to_retrained

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
                values.append(v if v is not None else avg_gap(row, retrained))
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
    out[AVG_GAP] = mean_sd(avg_gap(b, a) for a, b in pairs)[0]
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


# ------------------------------------------------------- the challenge's forgetting quality


def forgetting_block(n: int, reference: dict) -> dict:
    """What the challenge's scores of a `compare` over n replicates rest on: the rule's
    constants, the models a side, the largest ε they can show, the buckets, and the retrained
    reference (retraining against itself)."""
    from dimalign.challenge import BOOTSTRAP, resolution_note
    from dimalign.forgetting import DELTA, buckets, max_epsilon
    from dimalign.ulira import MIN_MODELS

    h = n // 2
    return {"rule": "NeurIPS 2023 unlearning challenge (Triantafillou et al. 2024)",
            "replicates": n, "models_per_side": h, "delta": DELTA,
            "max_epsilon": max_epsilon(h) if h > 2 else None,
            "buckets": [{"from": lo, "to": hi, "points": p} for lo, hi, p in buckets(h)],
            "bootstrap": BOOTSTRAP, "ulira_min_replicates": MIN_MODELS,
            "reference": reference, "note": resolution_note(h)}


def with_forgetting(out: dict, rows: Sequence[dict], retrained: Sequence[dict],
                    confidences: Sequence[dict]) -> dict:
    """`aggregate`'s result plus, per method, the challenge's scores (`challenge.scores`:
    forgetting_quality, final_score, tow, ulira_auc, each with its sd, and a note), from each
    replicate's method rows, retrained metrics and forget confidences (model -> list), and
    `forgetting` (`forgetting_block`). `retrain`, retraining as a method, is the reference."""
    import numpy as np

    from dimalign.challenge import scores

    def conf(model: str):
        return np.array([c[model] for c in confidences], dtype=float)  # null (NaN) -> nan

    ref_conf = conf("retrained")
    reference = scores(ref_conf, ref_conf, retrained, retrained, reference=True)
    for name, row in out["methods"].items():
        if name == "retrain":
            row.update(reference)
            continue
        row.update(scores(conf(name), ref_conf, [r[name] for r in rows], retrained))
    return {**out, "forgetting": forgetting_block(len(rows), reference)}


def score_of(row: dict, key: str) -> tuple[float | None, float | None]:
    """(value, sd) of one challenge score in a `setting_rows` / `baseline_rows` row."""
    cell = (row.get("forgetting") or {}).get(key) or {}
    return cell.get("value"), cell.get("sd")


BEST_BY = ("avg_gap", "final_score")


def best_row(rows: Sequence[dict], by: str = "avg_gap") -> dict | None:
    """The best of `setting_rows`: the lowest mean avg-gap, or with `by="final_score"` the
    highest final score (the unlearning challenge's, over the setting's replicates); rows
    without the value cannot be best. None when no row has it."""
    if by == "final_score":
        scored = [r for r in rows if score_of(r, "final_score")[0] is not None]
        return max(scored, key=lambda r: score_of(r, "final_score")[0], default=None)
    gapped = [r for r in rows if r["mean"].get("avg_gap") is not None]
    return min(gapped, key=lambda r: r["mean"]["avg_gap"], default=None)


SCORED: LRU[dict | None] = LRU(256)  # stored runs' challenge scores: a page draws them often


def result_key(result: dict) -> str:
    """What names a stored result's baselines for `SCORED`: a digest of their forget
    confidences and metrics, which is what their scores are made of. (The store keeps no
    checkpoints or config in a result: a key of those named every experiment's baselines
    alike, and one experiment's scores were shown for another's.)"""
    import hashlib

    models = result.get("models", {})
    what = [result.get("forget_confidence"), {m: models.get(m) for m in ("original",
                                                                         "retrained")}]
    return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def stored_scores(key: tuple, results: Sequence[dict], model: str) -> dict | None:
    """`challenge.scores` of `model` ("unlearned", "original"; "retrained": the reference)
    over finished results, one per replicate, memoised under `key` (what names those results);
    None when a result has no forget confidences (saved before they were kept)."""
    confs = [res.get("forget_confidence") or {} for res in results]
    if any(model not in c or "retrained" not in c for c in confs):
        return None
    if len({len(c["retrained"]) for c in confs}) != 1:  # not one forget subset
        return None

    def make() -> dict:
        import numpy as np

        from dimalign.challenge import scores

        def conf(name: str):
            return np.array([c[name] for c in confs], dtype=float)

        return scores(conf(model), conf("retrained"), [r["models"][model] for r in results],
                      [r["models"]["retrained"] for r in results],
                      reference=model == "retrained")

    return SCORED.get_or_make((key, model), make)


# ---------------------------------------------------------------------------- stored runs


def setting_key(method: str, config: dict) -> str:
    """What a run tried, whatever its replicate: its method and its config without the
    replicate. Runs with the same setting are replicates of one another."""
    rest = {k: v for k, v in config.items() if k != "replicate"}
    return json.dumps({"method": method, "config": rest}, sort_keys=True, default=str)


def replicate_of(config: dict) -> int:
    return int(config.get("replicate", 0))


def setting_rows(results: Sequence[tuple[str, str, dict, dict]],
                 keys: Sequence[str]) -> list[dict]:
    """One row per setting from finished runs, (run id, method, config, result as the store
    keeps it) newest first: the newest run of each replicate counts. A row holds `method`,
    `run` (the run of the lowest replicate: the one a click opens), `runs` (replicate -> run
    id), `replicates`,
    `mean` and `sd` of each key and of the time fraction, `gap_mean`, `gap_sd` and
    `abs_gap` (mean |gap|) of each key's gap to *its own replicate's* retrained model, and
    `forgetting`, the challenge's scores over its replicates (`stored_scores`)."""
    groups: dict[str, dict] = {}
    for run, method, config, result in results:
        group = groups.setdefault(setting_key(method, config),
                                  {"method": method, "by_replicate": {}, "params":
                                   result.get("params", {})})
        group["by_replicate"].setdefault(replicate_of(config), (run, result))
    rows = []
    for group in groups.values():
        reps = sorted(group["by_replicate"])
        values, paired = [], []
        for r in reps:
            _, result = group["by_replicate"][r]
            unlearned, retrained = result["models"]["unlearned"], result["models"]["retrained"]
            seconds = result["seconds"]
            values.append({**{k: unlearned.get(k) for k in keys},
                           TIME_FRACTION.name: seconds["unlearn"] / seconds["retrained"]})
            paired.append((unlearned, retrained))
        gap_rows = [gaps(u, t, keys) for u, t in paired]
        stats = summarize(values, [*keys, TIME_FRACTION.name])
        gap_stats = summarize(gap_rows, keys)
        runs = tuple(group["by_replicate"][r][0] for r in reps)
        scored = stored_scores(runs, [group["by_replicate"][r][1] for r in reps], "unlearned")
        rows.append({"method": group["method"], "params": group["params"],
                     "run": group["by_replicate"][reps[0]][0],
                     "runs": {r: group["by_replicate"][r][0] for r in reps},
                     "replicates": len(reps), **stats,
                     "gap_mean": gap_stats["mean"], "gap_sd": gap_stats["sd"],
                     "abs_gap": paired_abs_gaps(paired, keys), "forgetting": scored})
    return rows


def baseline_rows(results: Sequence[tuple[dict, dict]],
                  keys: Sequence[str]) -> tuple[list[dict], dict]:
    """The original and retrained models over the replicates that (config, result) pairs
    cover (one result per replicate counts), as `setting_rows` rows (time fraction: training
    time over retraining time, and `forgetting`: the challenge's scores, the retrained row's
    retraining against itself), and the noise floor of those replicates' retrained models."""
    by_replicate: dict[int, dict] = {}
    for config, result in results:
        by_replicate.setdefault(replicate_of(config), result)
    chosen = [by_replicate[r] for r in sorted(by_replicate)]
    retrained = [res["models"]["retrained"] for res in chosen]
    named = tuple(result_key(res) for res in chosen)
    rows = []
    for role in ("original", "retrained"):
        models = [res["models"][role] for res in chosen]
        values = [{**{k: m.get(k) for k in keys}, TIME_FRACTION.name:
                   res["seconds"][role] / res["seconds"]["retrained"]}
                  for m, res in zip(models, chosen, strict=True)]
        paired = list(zip(models, retrained, strict=True))
        if role == "original":  # the original's avg-gap, which evaluate gives unlearned models
            paired = [({**m, AVG_GAP: avg_gap(m, t)}, t) for m, t in paired]
            values = [{**v, AVG_GAP: m[AVG_GAP]} for v, (m, _) in zip(values, paired,
                                                                          strict=True)]
        gap_stats = summarize([gaps(m, t, keys) for m, t in paired], keys)
        rows.append({"method": role, "params": {}, "run": role, "runs": {},
                     "replicates": len(chosen), **summarize(values, [*keys, TIME_FRACTION.name]),
                     "gap_mean": gap_stats["mean"], "gap_sd": gap_stats["sd"],
                     "abs_gap": paired_abs_gaps(paired, keys),
                     "forgetting": stored_scores(named, chosen, role)})
    return rows, noise_floor(retrained, keys)
