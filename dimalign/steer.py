"""Steering: what changed between two runs of one experiment, and what that did. Pure
functions over saved configs and results; the Unlearn page draws them."""

from __future__ import annotations

from dimalign.config import Config
from dimalign.methods import REGISTRY
from dimalign.metric_table import TABLE, shown

SYMBOLS = {"lambda_da": "λ_DA", "lambda_sd": "λ_SD", "temperature": "T"}


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def knob_changes(before: Config, after: Config, method_before: str, method_after: str
                 ) -> list[str]:
    """What differs from one run's settings to another's, as "λ_DA 2 → 8" (the method's
    knobs), "method ga → muda" or "seed 0 → 1"; empty when nothing does."""
    if method_before != method_after:
        return [f"method {method_before} → {method_after}"]
    knobs_before = before.method_params(method_before)
    knobs_after = after.method_params(method_after)
    out = [f"{SYMBOLS.get(k, k)} {_text(knobs_before[k])} → {_text(knobs_after[k])}"
           for k in knobs_before if knobs_before[k] != knobs_after.get(k)]
    a_all, b_all = before.to_dict(), after.to_dict()
    for section in (k for k in a_all if k not in REGISTRY):
        a, b = a_all.get(section), b_all.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{section}.{k} {_text(a.get(k))} → {_text(b.get(k))}"
                    for k in a if a.get(k) != b.get(k)]
        elif a != b:
            out.append(f"{section} {_text(a)} → {_text(b)}")
    return out


def ghost_label(changes: list[str], run_id: str) -> str:
    """A ghost trace's name: what it changed, short enough for a legend."""
    if not changes:
        return f"{run_id[:6]} (same knobs)"
    text = ", ".join(changes[:2]) + (f" +{len(changes) - 2}" if len(changes) > 2 else "")
    return f"{run_id[:6]}: {text}"


def effect(newer: dict, older: dict) -> list[dict]:
    """The effect panel's rows: each metric the table shows in "effect", of two runs'
    unlearned models, the change and whether it went the better way (None where neither way
    is better or a value is missing)."""
    rows = []
    for key in shown("effect"):
        metric = TABLE[key]
        a, b = older.get(key), newer.get(key)
        if a is None and b is None:
            continue
        delta = None if a is None or b is None else b - a
        good = None if delta is None or metric.better is None or delta == 0 else (
            (delta > 0) == (metric.better == "higher"))
        rows.append({"key": key, "title": metric.title, "before": a, "after": b,
                     "delta": delta, "better": good})
    return rows
