"""Forget-set difficulty: a random forget set split into easy, medium and hard thirds by how
memorised each sample is, and every forget metric and challenge score reported per third
(issue 27; docs/method.md, "Forget-set difficulty").

The forget set is drawn uniformly, as always; the strata are decided afterwards, from the
models of the seed's own replicate (replicate 0), so they are the same samples in every
replicate, as the forget set is:

- `margin` (the default): the original model's margin on the sample's label (its logit minus
  the best other logit). A small margin is a sample the original fits least surely, the one
  retraining without it is likeliest to get wrong: hard. Needs no retrained model.
- `gap`: the original's softmax confidence on the label minus the retrained model's, p_o − p_r:
  how much seeing the sample raised the probability of its label, Feldman's memorisation
  estimate (with and without the sample) from one pair of models. Large: hard. (Not the
  logit-scaled φ of the challenge: on samples both models are sure of, φ differences of a
  logit or so are training noise that p reads as the nothing they are.)

Ranks within the forget set, ties by position, make three strata of equal size (the first
ones one larger when the size is not a multiple of 3).

Pure numpy on plain dicts, like `replicates`: the per-stratum metrics of one model come from
`metrics.stratum_metrics`, the challenge's scores from `challenge.scores`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dimalign.remembered import output_values

STRATA = ("easy", "medium", "hard")
STRATIFY_BY = ("margin", "gap")  # scenario.stratify_by
SOURCE_REPLICATE = 0  # the replicate whose models decide the strata
OTHER = -1  # a retain sample's stratum


def difficulty(by: str, original: np.ndarray, labels: np.ndarray,
               retrained: np.ndarray | None = None) -> np.ndarray:
    """How hard each forget sample is to forget, larger = harder: the original model's
    negated margin (`margin`), or p_original − p_retrained, the softmax confidence on the
    label (`gap`), from the (N_f, K) logits of each model on the forget samples and their
    training labels."""
    if by == "margin":
        return -output_values(original, labels)["margin"]
    if by == "gap":
        if retrained is None:
            raise ValueError("stratifying by gap needs the retrained model's logits")
        return (output_values(original, labels)["confidence"]
                - output_values(retrained, labels)["confidence"])
    raise ValueError(f"unknown stratification {by!r}; choose one of {', '.join(STRATIFY_BY)}")


def tertiles(hardness: np.ndarray) -> np.ndarray:
    """Each sample's stratum, 0 (easy) .. len(STRATA) − 1 (hard), by rank of `hardness`
    (ties: the earlier sample counts as easier; NaN is hardest)."""
    order = np.argsort(np.asarray(hardness, dtype=np.float64), kind="stable")
    out = np.empty(len(order), dtype=np.int64)
    for s, chunk in enumerate(np.array_split(order, len(STRATA))):
        out[chunk] = s
    return out


def describe(strata: np.ndarray, hardness: np.ndarray, by: str) -> dict:
    """What the strata are, as plain data: the criterion, the replicate whose models decided
    them, and per stratum its size and the range of the criterion's own value (margin, or
    gap) in it."""
    value = -np.asarray(hardness, np.float64) if by == "margin" else np.asarray(hardness)
    out = {"by": by, "replicate": SOURCE_REPLICATE, "names": list(STRATA), "sizes": {},
           "range": {}}
    for s, name in enumerate(STRATA):
        inside = value[strata == s]
        out["sizes"][name] = int(len(inside))
        out["range"][name] = ([round(float(inside.min()), 4), round(float(inside.max()), 4)]
                              if len(inside) else None)
    return out


def columns(forget_strata: Sequence[int]) -> dict[str, np.ndarray]:
    """Per stratum, the positions in a result's `forget_confidence` lists of its samples."""
    s = np.asarray(forget_strata, dtype=np.int64)
    return {name: np.flatnonzero(s == i) for i, name in enumerate(STRATA)}


# ------------------------------------------------------------------ a compare's strata

WHOLE = ("acc_retain", "acc_test")  # whole-set metrics that per-stratum avg-gap and ToW use


def with_strata(out: dict, blocks: Sequence[Mapping], rows: Sequence[Mapping],
                retrained: Sequence[Mapping], confidences: Sequence[Mapping]) -> dict:
    """A `compare` result (`replicates.aggregate`'s, and `with_forgetting`'s with
    replicates) plus each method's `strata`, and a top-level `strata` saying how they were
    made. `blocks`: each replicate's strata (`runner.strata_block`), `rows` each replicate's
    method rows, `retrained` its retrained metrics, `confidences` its `forget_confidence`.

    One replicate: per method and stratum the metrics and their `gaps` to retrained. More:
    per method and stratum `mean`, `sd` and `mean_abs_gap` (`aggregate_strata`) and the
    challenge's scores on the stratum (`stratum_scores`); the top level adds each stratum's
    `noise_floor` and `between_methods`, how far the unlearning methods lie apart there."""
    from dimalign.metric_table import per_stratum
    from dimalign.replicates import gaps

    keys = list(per_stratum())
    names = list(out["methods"])
    first = blocks[0]
    desc = {k: first[k] for k in ("by", "replicate", "names", "sizes", "range")}

    def merged(r: int, name: str) -> dict:  # a model's strata with its whole-set accuracies
        model = "retrained" if name in ("retrain", "retrained") else name
        whole = retrained[r] if model == "retrained" else rows[r][name]
        return {s: {**{k: whole.get(k) for k in WHOLE}, **row}
                for s, row in blocks[r]["models"][model].items()}

    if len(blocks) == 1:
        ref = first["models"]["retrained"]
        for name in names:
            model = "retrained" if name == "retrain" else name
            out["methods"][name]["strata"] = {s: {**row, "gaps": gaps(row, ref[s], keys)}
                                              for s, row in first["models"][model].items()}
        return {**out, "strata": desc}
    per_rep = [{**{name: merged(r, name) for name in names}, "retrained": merged(r, "retrained")}
               for r in range(len(blocks))]
    agg = aggregate_strata(per_rep, keys)
    same = all(b["forget"] == first["forget"] for b in blocks)
    scored = stratum_scores(confidences, first["forget"], per_rep, names) if same else None
    for name in names:
        cells = agg["methods"][name]
        if scored is not None:
            for s in STRATA:
                cells[s].update(scored[name][s])
        out["methods"][name]["strata"] = cells
    trained = [n for n in names if n not in ("original", "retrain")]
    return {**out, "strata": {**desc, "noise_floor": agg["noise_floor"],
                              "between_methods": between_methods(
                                  {n: out["methods"][n]["strata"] for n in trained}, trained,
                                  keys)}}


def aggregate_strata(per_replicate: Sequence[Mapping], keys: Sequence[str]) -> dict:
    """Per model and stratum, over replicates: `mean` and `sd` of each of `keys` and
    `mean_abs_gap`, each model paired with its own replicate's retrained model; and per
    stratum the `noise_floor` (retraining against itself). `per_replicate`: each replicate's
    `{model: {stratum: {metric: value}}}`, "retrained" among them."""
    from dimalign.metric_table import TABLE
    from dimalign.replicates import noise_floor, paired_abs_gaps, summarize

    gapped = [k for k in keys if not TABLE[k].spread_of]  # an sd has no gap
    models = [m for m in per_replicate[0] if m != "retrained"]
    out: dict = {m: {} for m in models}
    floor = {}
    for name in STRATA:
        retrained = [rep["retrained"][name] for rep in per_replicate]
        for m in models:
            rows = [rep[m][name] for rep in per_replicate]
            out[m][name] = {**summarize(rows, keys),
                            "mean_abs_gap": paired_abs_gaps(list(zip(rows, retrained,
                                                                     strict=True)), gapped)}
        floor[name] = {k: v for k, v in noise_floor(retrained, gapped).items() if k in gapped}
    return {"methods": out, "noise_floor": floor}


def stratum_scores(confidences: Sequence[Mapping], forget_strata: Sequence[int],
                   per_replicate: Sequence[Mapping], models: Sequence[str]) -> dict:
    """The challenge's scores (`challenge.scores`) per model and stratum: forgetting
    quality on the stratum's forget examples alone, ToW and the final score with the
    stratum's forget accuracy beside the whole-set retain and test accuracies; `retrain` is
    retraining against itself, the reference. `confidences`: each replicate's
    `forget_confidence` (model -> list, its examples' strata `forget_strata`);
    `per_replicate` as `aggregate_strata`'s, the rows holding `acc_retain` and `acc_test`."""
    from dimalign.challenge import scores

    cols = columns(forget_strata)

    def conf(model: str, name: str) -> np.ndarray:
        return np.array([c[model] for c in confidences], dtype=float)[:, cols[name]]

    out: dict = {m: {} for m in models}
    for name in STRATA:
        ref = conf("retrained", name)
        ref_acc = [rep["retrained"][name] for rep in per_replicate]
        for m in models:
            if m == "retrain":
                out[m][name] = scores(ref, ref, ref_acc, ref_acc, reference=True)
            else:
                out[m][name] = scores(conf(m, name), ref, [rep[m][name] for rep in per_replicate],
                                      ref_acc)
    return out


def between_methods(strata_rows: Mapping[str, Mapping], methods: Sequence[str],
                    keys: Sequence[str]) -> dict:
    """How far the methods lie apart in each stratum: per stratum and key, the range
    (max − min) over `methods` of their mean |gap| to retraining (`mean_abs_gap`; for
    avg-gap, a distance, its mean) and of their challenge scores' values where scored; None
    with fewer than two methods. Where it is widest, the choice of method matters most."""
    from dimalign.challenge import SCORES

    def spread(values) -> float | None:
        values = [v for v in values if v is not None]
        return float(max(values) - min(values)) if len(values) > 1 else None

    out = {}
    for name in STRATA:
        gapped = {k for m in methods for k in strata_rows[m][name]["mean_abs_gap"]}
        cells = {key: spread(strata_rows[m][name]["mean_abs_gap"].get(key) for m in methods)
                 for key in keys if key in gapped}
        for key in SCORES:
            cells[key] = spread((strata_rows[m][name].get(key) or {}).get("value")
                                for m in methods)
        out[name] = cells
    return out


# ------------------------------------------------------------------ stored runs' strata

def stratum_result(result: Mapping, name: str) -> dict | None:
    """A stored run's result seen through one stratum: each model's metrics on the stratum
    (the result's `strata` block) beside its whole-set retain and test accuracies, with the
    result's `seconds` and `params`, which is what `replicates.setting_rows` and
    `baseline_rows` read; their means, sds, gaps and noise floor are then the stratum's.
    None: the result has no strata (a class forget set, or saved before they were kept). No
    forget confidences: the challenge's scores per stratum are `compare`'s (`with_strata`)."""
    block = result.get("strata")
    if not block or name not in block.get("names", STRATA):
        return None
    models = {}
    for model, rows in block["models"].items():
        if model in result["models"] and name in rows:
            whole = result["models"][model]
            models[model] = {**{k: whole.get(k) for k in WHOLE}, **rows[name]}
    if not {"original", "retrained"} <= set(models):  # nothing to hold a model against
        return None
    return {"models": models, "seconds": result["seconds"], "params": result.get("params", {})}


def strata_rows(results: Sequence[tuple[str, str, dict, dict]],
                keys: Sequence[str]) -> tuple[list[dict], dict]:
    """The Compare table per stratum, from stored runs that kept their strata: (run id,
    method, config, result) newest first, as `replicates.setting_rows` takes them. Rows in
    the table's order (original, retrained, then each setting), each with `method`, `run`,
    `replicates` and per stratum `mean`, `sd` and `abs_gap` (mean |gap| to each replicate's
    own retrained model, on the stratum); and each stratum's noise floor (retraining against
    itself there; empty with one replicate)."""
    from dimalign.replicates import baseline_rows, setting_rows

    rows: dict[str, dict] = {}
    floors = {}
    for name in STRATA:
        seen = [(run, method, config, view) for run, method, config, result in results
                if (view := stratum_result(result, name)) is not None]
        if not seen:  # every result has every stratum (thirds of at least 3 samples)
            continue
        base, floor = baseline_rows([(config, view) for _, _, config, view in seen], keys)
        floors[name] = {k: v for k, v in floor.items() if v is not None}
        for row in (*base, *setting_rows(seen, keys)):
            out = rows.setdefault(row["run"], {"method": row["method"], "run": row["run"],
                                               "replicates": row["replicates"], "strata": {}})
            out["strata"][name] = {"mean": row["mean"], "sd": row["sd"],
                                   "abs_gap": row["abs_gap"]}
    return list(rows.values()), floors


def heading(block: Mapping) -> str:
    """One line: what the strata of a random forget set are and how they were made."""
    what = ("the original model's margin" if block["by"] == "margin" else
            "the original's minus the retrained model's confidence")
    ranges = {name: f" [{r[0]:.2f}, {r[1]:.2f}]" if (r := block["range"].get(name)) else ""
              for name in block["names"]}
    parts = [f"{name} {block['sizes'][name]}{ranges[name]}" for name in block["names"]]
    return (f"forget set in strata by {what} (replicate {block['replicate']}'s models); "
            f"size [range]: {', '.join(parts)}")


def strata_csv(rows: Sequence[Mapping], keys: Sequence[str]) -> list[dict]:
    """`strata_rows`' rows flat, a line per row and stratum: what the per-stratum CSV holds."""
    out = []
    for row in rows:
        for name, cell in row["strata"].items():
            line = {"run": row["run"], "method": row["method"], "stratum": name,
                    "replicates": row["replicates"]}
            for k in keys:
                line[k] = cell["mean"].get(k)
                line[f"{k}_sd"] = cell["sd"].get(k)
                line[f"{k}_abs_gap"] = cell["abs_gap"].get(k)
            out.append(line)
    return out
