"""What the linked views draw (the browser component in `dimalign/ui/linked.py`): plain,
JSON-able payloads built from a run's film and from an aligned embedding, and a picked film
sample's track in numbers. Pure functions: no streamlit, no files."""

from __future__ import annotations

import math

from dimalign.plots import (
    PALETTE,
    PHASE_LABELS_UP_TO,
    PHASE_SHADES,
    SHADED_SPANS_UP_TO,
    SVG_POINTS,
    phase_spans,
)

FILM_CURVES = ("da", "acc_forget", "acc_retain")  # the curves strip under the film
MODELS = ("original", "retrained", "unlearned")


def film_payload(arrays: dict, curves: dict[str, list[tuple[int, float]]],
                 frame: int | None = None, seek: dict | None = None) -> dict:
    """`dimalign.film.arrays(bundle)` plus what the player's curves strip needs: `curves`
    ({"step": [...], name: [...]}, aligned on the union of the curves' steps; None where a
    curve has no point) and the shaded phase `spans` ([name, first step, last step, colour]; the
    name "" when too many to label, none when too many to shade, as on the live curves);
    `frame`: the frame to show first (the person's last one, kept across a redraw); `seek`:
    {"step", "nonce"}, a step clicked on the page's live curves, shown once per nonce."""
    steps = sorted({s for name in FILM_CURVES for s, _ in curves.get(name, ())})
    strip: dict[str, list] = {"step": steps}
    for name in FILM_CURVES:
        if curves.get(name):
            at = dict(curves[name])
            strip[name] = [_num(at.get(s)) for s in steps]
    spans = [s for s in phase_spans(curves) or _frame_spans(arrays)  # the curves' are finer
             if s[0] in PHASE_SHADES and s[2] > s[1]]
    if len(spans) > SHADED_SPANS_UP_TO:  # as the live curves: too thin to read
        spans = []
    named = len(spans) <= PHASE_LABELS_UP_TO
    out = {**arrays, "curves": strip,
           "spans": [[n if named else "", a, b, PHASE_SHADES[n]] for n, a, b in spans]}
    if frame is not None and arrays["steps"]:
        out["frame"] = max(0, min(int(frame), len(arrays["steps"]) - 1))
    if seek is not None:
        out["seek"] = {"step": int(seek["step"]), "nonce": int(seek["nonce"])}
    return out


SERVER_ONLY = ("confidence", "predicted")  # the page reads them for a clicked sample; not drawn


def for_browser(payload: dict) -> dict:
    """The film payload without what the player never draws (every point's confidence and
    prediction per frame: a third of its size), for the trip to the browser."""
    out = {k: v for k, v in payload.items() if k not in SERVER_ONLY}
    if payload.get("ghosts"):
        out["ghosts"] = {name: {k: v for k, v in g.items() if k not in SERVER_ONLY}
                         for name, g in payload["ghosts"].items()}
    return out


def _frame_spans(arrays: dict) -> list[tuple[str, int, int]]:
    """Phase spans from the frames themselves, for a run whose curves carry no phase marks."""
    marks: dict[str, list[tuple[int, float]]] = {}
    for s, p in zip(arrays["steps"], arrays["phases"], strict=True):
        marks.setdefault(f"phase_{p}", []).append((s, 1.0))
    return phase_spans(marks)


def manifold_payload(embedding: dict) -> dict:
    """An aligned embedding (`dimalign.embed.embed_run`) as the three linked panels draw it:
    sample i is point i in every panel, so an id links a sample across panels."""
    models = [m for m in MODELS if m in embedding["coords"]]
    splits = list(embedding["split"])
    return {
        "models": models,
        "coords": {m: {"x": _list(embedding["coords"][m][:, 0]),
                       "y": _list(embedding["coords"][m][:, 1])} for m in models},
        "splits": splits,
        "labels": [int(v) for v in embedding["labels"].tolist()],
        "rows": [int(v) for v in embedding["rows"].tolist()],
        "predictions": {m: [int(v) for v in embedding["predictions"][m].tolist()]
                        for m in models},
        "palette": PALETTE,
        "webgl": len(models) * len(splits) > SVG_POINTS,  # WebGL past SVG_POINTS, as the charts
    }


def sample_track(payload: dict, sample: int) -> list[dict]:
    """One film sample per frame: {"step", "phase", "residual", "confidence"}."""
    return [{"step": s, "phase": p, "residual": payload["residual"][t][sample],
             "confidence": payload["confidence"][t][sample]}
            for t, (s, p) in enumerate(zip(payload["steps"], payload["phases"], strict=True))]


def sample_models(payload: dict, sample: int) -> list[dict]:
    """The sample under each model: the original and retrained ghosts, and the unlearned
    model at the film's last frame (its prediction, its confidence on its own label, and its
    residual)."""
    def predicted(values) -> int | None:
        return values[sample] if values else None  # films recorded before predictions: none

    rows = [{"model": name, "predicted": predicted(g.get("predicted")),
             "confidence": g["confidence"][sample], "residual": g["residual"][sample]}
            for name, g in payload.get("ghosts", {}).items()]
    if payload["steps"]:
        last = payload.get("predicted")
        rows.append({"model": f"unlearned (step {payload['steps'][-1]})",
                     "predicted": predicted(last[-1] if last else None),
                     "confidence": payload["confidence"][-1][sample],
                     "residual": payload["residual"][-1][sample]})
    return rows


def _num(value) -> float | None:
    """JSON has no NaN (the browser's parser refuses it): None instead."""
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def _list(values) -> list[float | None]:
    return [_num(v) for v in values.tolist()]
