"""Widgets the pages share: charts (and a per-session figure memo), the run picker, knob
sliders built from a method's registry entry, and the result and effect tables."""

from __future__ import annotations

import math
import zlib

import streamlit as st

from dimalign.methods.base import Knob
from dimalign.metric_table import shown
from dimalign.store import Run
from dimalign.ui.runs import Ghost, more_runs_note
from dimalign.ui.state import remember, sticky
from dimalign.uploads import hide_server_paths


def memo_figure(identity: tuple, build):
    """A figure built once per `identity` in this session: plotly validates every array as a
    figure is built (~0.25 s for the manifolds), and page switches redraw unchanged data."""
    memo = st.session_state.setdefault("_figures", {})
    if identity not in memo:
        if len(memo) >= 16:
            memo.pop(next(iter(memo)))
        memo[identity] = build()
    return memo[identity]


def chart(fig, key: str, where=None, **kwargs):
    """A plotly chart whose camera button saves it as PNG or SVG (the sidebar's choice), in the
    browser, named after the chart."""
    fmt = str(st.session_state.get("_figure_format", "PNG")).lower()
    config = {"displaylogo": False,
              "toImageButtonOptions": {"format": fmt, "filename": f"dimalign-{key}",
                                       "scale": 2 if fmt == "png" else 1}}
    return (where or st).plotly_chart(fig, key=key, config=config, **kwargs)


def run_label(run: Run, with_owner: bool = False) -> str:
    replicate = (run.config or {}).get("replicate")
    return (f"{run.owner} · " if with_owner else "") + f"{run.id} · {run.method} · {run.status}" + (
        f" · fork of {run.parent_id}" if run.parent_id else "") + (
        f" · replicate {replicate}" if replicate else "")


def pick_run(runs: list[Run], key: str = "run", done_only: bool = False,
             with_owner: bool = False) -> Run | None:
    """A run picker that shows the run this session looks at (`sticky("run")`: the run its
    newest action made, or the one it picked since; kept in the URL, so a reload comes back to
    it), else the newest. A pick here is that session's choice until its next action.
    `with_owner`: labels name each run's owner (the instructor's view lists everyone's)."""
    choices = [r for r in runs if r.status == "done"] if done_only else runs
    if not choices:
        return None
    ids = [r.id for r in choices]
    by_id = {r.id: r for r in choices}
    labels = {i: run_label(by_id[i], with_owner) for i in ids}
    # Streamlit (1.67) keeps a keyed widget's own value across reruns, ignoring `index`, and its
    # selectbox redraws a changed option label (a run's new status) only on every other rerun:
    # the widget gets a key of its own per set of labels, and its value is set through
    # session_state before it is drawn (the supported way to move a widget).
    widget = f"{key}_{zlib.crc32(repr(labels).encode()):08x}"
    wanted, current = sticky("run"), st.session_state.get(widget)
    # set on every draw: a value left from this widget's last draw on an earlier visit to the
    # page is ignored when the widget is drawn again (it shows its first option instead)
    st.session_state[widget] = (wanted if wanted in ids else current if current in ids
                                else ids[0])
    chosen = st.selectbox("Run", ids, key=widget, on_change=_picked, args=(widget,),
                          format_func=labels.__getitem__)
    if note := more_runs_note(runs):
        st.caption(note)
    return by_id[chosen]


def _picked(key: str) -> None:
    """The person picked a run: it is the one every picker shows until their next action.
    (An earlier picker's key stays in the session, a few bytes each: deleting it makes the
    browser's copy of that widget look changed, and its callback fire for a pick nobody
    made.)"""
    if key in st.session_state:
        remember("run", st.session_state[key])


DATA_ERRORS = ("dataset_root", "original_checkpoint", "cannot read image")  # a run's data at fault


def said(message) -> str:
    """An error or message as a page may show it to a participant: an upload's folder on this
    server is said as "your upload" (`uploads.hide_server_paths`)."""
    return hide_server_paths(str(message))


def show_run_error(run: Run) -> None:
    hints = {"failed": "Change the settings that the message names (often a lower learning "
                       "rate or loss weight) and run again.",
             "interrupted": "Its worker stopped. Resume it to continue from its last "
                            "checkpoint.",
             "cancelled": "Resume continues it from its last checkpoint."}
    if run.status == "failed" and any(word in (run.error or "") for word in DATA_ERRORS):
        hints["failed"] = ("Its data are the problem, not its knobs: change them on the "
                           "Experiment page (Your own data and model).")
    if run.status in hints:
        why = hide_server_paths(run.error or "no message")
        show = st.info if run.status == "cancelled" else st.error  # a cancel was asked for
        show(f"Run {run.id} {run.status}: {why}. {hints[run.status]}")


def wait_for_job(job_id: str, ready, what: str, note: str = "") -> None:
    """While a job the page needs runs (an embedding, an audit, the film's frames): its
    progress, checked each second; the whole page is drawn again once `ready()` holds (its
    file is there), and the job's error is shown if it ended without."""
    from dimalign.ui.state import store

    @st.fragment(run_every=1.0)
    def waiting() -> None:
        if ready():
            st.rerun()
        job = store().get(job_id)
        if job.status == "done":  # and still not ready: its file went (set aside, replaced)
            st.caption(f"{what}: done. Reload the page to see it.")
            return
        if job.terminal:
            show_run_error(job)
            return
        phase = f" ({job.phase})" if job.phase and job.status == "running" else ""
        st.progress(job.progress or 0.0, text=f"{what}: {job.status}{phase}{note}")

    waiting()


# ---------------------------------------------------------------------------- knob widgets


def _log_grid(knob: Knob) -> list[float]:
    low = knob.low if knob.low is not None and knob.low > 0 else 1e-6
    high = knob.high if knob.high is not None else 1e3
    values = {knob.default}
    if knob.low == 0 and not knob.low_open:
        values.add(0.0)
    for exp in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            v = float(f"{mantissa}e{exp}")
            if low <= v <= high:
                values.add(v)
    return sorted(values)


def knob_widget(method: str, name: str, knob: Knob, value, disabled: bool = False,
                variant: str | None = None):
    """A slider (or picker) for one knob; its key is stable, so tests find it. A knob whose
    default depends on the method's variant has a widget per `variant`, so that switching
    variants shows that variant's default."""
    key = f"knob_{method}_{name}" + (f"_{variant}" if variant else "")
    label = f"{name}"
    help_text = knob.help + (f" — {knob.source}" if knob.source != "choice" else "")
    if knob.type is bool:
        return st.checkbox(label, value=bool(value), key=key, help=help_text, disabled=disabled)
    if knob.type is str:
        return st.selectbox(label, knob.choices, index=knob.choices.index(value), key=key,
                            help=help_text, disabled=disabled)
    if knob.type is int:  # a useful span: up to 4x the default or the start value, at least 50
        low = int(knob.low or 0)  # (the start value: a variant's own default may be larger)
        high = int(min(knob.high if knob.high is not None else 10**6,
                       max(50, 4 * max(int(knob.default), int(value)))))
        return st.slider(label, low, high, int(value), key=key, help=help_text,
                         disabled=disabled)
    if knob.high is not None and knob.high <= 1 and knob.default >= 0.05:  # a fraction
        return st.slider(label, 0.01 if knob.low_open else float(knob.low or 0), 1.0,
                         float(value), step=0.01, key=key, help=help_text, disabled=disabled)
    grid = _log_grid(knob)
    if value not in grid:
        grid = sorted({*grid, value})
    return st.select_slider(label, grid, value=value, key=key, help=help_text,
                            format_func=lambda v: f"{v:g}", disabled=disabled)


# ---------------------------------------------------------------------------- steering


def knob_groups(method: str, spec, overrides: dict) -> dict:
    """Every knob's widget, by group: the first group open, the others in expanders. Values
    start from `overrides` (the config's for this method) over the defaults; once the variant
    is picked, the knobs drawn after it start from that variant's defaults."""
    values = {}
    params = spec.resolve(overrides)
    dependent = spec.variant_dependent()
    for i, (group, names) in enumerate(spec.groups()):
        where = st.container() if i == 0 else st.expander(group)
        if i == 0:
            where.markdown(f"**{group}**")
        cols = where.columns(4)
        for j, name in enumerate(names):
            with cols[j % 4]:
                values[name] = knob_widget(method, name, spec.knobs[name], params[name],
                                           variant=params["variant"] if name in dependent
                                           else None)
            if name == "variant" and values[name] != params["variant"]:
                params = spec.resolve({**overrides, "variant": values[name]})
    return values


def knobs_moved(auto: bool, signature: tuple) -> bool:
    """True once per change of the knobs while *Run on change* is on (switching it on, or
    the first draw, only records the knobs)."""
    before = st.session_state.get("_auto_signature")
    st.session_state["_auto_signature"] = signature
    return auto and before is not None and before != signature


def result_table(run: Run, ghosts: list[Ghost], floor: dict | None = None) -> None:
    """The chosen run's three models, then the ghosts' unlearned models, on the same metrics.
    With a noise floor (the experiment has replicates): the unlearned model's gap to its
    retrained model and the floor beside it, each gap within it shaded grey."""
    import pandas as pd

    from dimalign.replicates import gaps, inside

    keys = shown("unlearn")
    models = run.result["models"]
    rows = [{"model": m, **{k: models[m].get(k) for k in keys}} for m in models]
    rows += [{"model": f"ghost {g.label}", **{k: g.run.result["models"]["unlearned"].get(k)
                                              for k in keys}}
             for g in ghosts if g.run.status == "done" and g.run.result]
    if not floor or "unlearned" not in models:
        st.dataframe(rows, hide_index=True, key="result_table")
        return
    gap = gaps(models["unlearned"], models["retrained"], keys)
    rows += [{"model": "gap: unlearned − retrained", **gap},
             {"model": "noise floor (retrain vs retrain)", **{k: floor.get(k) for k in keys}}]
    within = {k for k in keys if inside(None if gap[k] is None else abs(gap[k]), floor.get(k))}
    grey = "background-color: rgba(140, 140, 140, 0.3)"
    styled = pd.DataFrame(rows).style.format(precision=3).apply(
        lambda row: [grey if row["model"].startswith("gap") and c in within else ""
                     for c in row.index], axis=1)
    st.dataframe(styled, hide_index=True, key="result_table")
    st.caption("Grey: a gap within the noise floor — the mean gap between retrained models of "
               "different replicates: indistinguishable from retraining.")


def sweep_grid(knob: Knob, count: int) -> list[float | int]:
    """`count` values of a knob within its registry range: log-spaced over a decade either side
    of its default for loss weights and positive ranges spanning decades, evenly spaced over
    the range (capped at 4x the default where it is open) otherwise; ints rounded, distinct."""
    low = knob.low if knob.low is not None else 0.0
    high = knob.high if knob.high is not None else max(4.0 * abs(knob.default), 1.0)
    if count == 1:
        return [knob.default]
    if is_log_knob(knob):
        ref = knob.default if knob.default > 0 else high / 100
        low, high = max(low, ref / 10), min(high, ref * 10)
        if low <= 0:
            low = ref / 10
        values = [low * (high / low) ** (i / (count - 1)) for i in range(count)]
    else:
        if knob.type is int:
            high = min(high, max(4 * knob.default, low + count - 1))
        if knob.low_open:
            low = low + (high - low) / count
        values = [low + (high - low) * i / (count - 1) for i in range(count)]
    if knob.type is int:
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.3g}") for v in values]


def is_log_knob(knob: Knob) -> bool:
    """Loss weights, and float knobs whose positive range spans decades (an open lower bound
    of 0 included, e.g. a learning rate), sweep on a log scale."""
    if knob.type is not float or knob.choices:
        return False
    if knob.group == "Loss weights":
        return True
    if knob.low is None or knob.high is None:
        return False
    if knob.low == 0:
        return knob.low_open
    return knob.low > 0 and knob.high / knob.low >= 100


def effect_panel(runs: list[Run]) -> None:
    """The last two finished runs side by side: what the last change did."""
    from dimalign.config import config_from_dict
    from dimalign.steer import effect, knob_changes

    done = [r for r in runs if r.status == "done" and r.result][:2]
    if len(done) < 2:
        return
    newer, older = done
    changes = knob_changes(config_from_dict(older.config), config_from_dict(newer.config),
                           older.method, newer.method)
    what = ", ".join(changes) or ("the same knobs" if newer.parent_id else
                                    "a rerun with the same knobs")
    fork = f"a fork of {newer.parent_id} with " if newer.parent_id else ""
    st.markdown(f"**Effect** of {fork}{what} ({older.id} → {newer.id})")
    rows = effect(newer.result["models"]["unlearned"], older.result["models"]["unlearned"])
    for col, row in zip(st.columns(len(rows)), rows, strict=True):
        color = "off" if row["better"] is None else (
            "normal" if (row["better"] == (row["delta"] > 0)) else "inverse")
        col.metric(row["title"], "–" if row["after"] is None else f"{row['after']:.3f}",
                   None if row["delta"] is None else f"{row['delta']:+.3f}",
                   delta_color=color)
