"""Tune: sweep one or two knobs of a method over a few values, on a few replicates, through the
shared queue; see the chosen metric along the knobs with its spread, the retrained value and
the retrain-vs-retrain noise floor; click a setting to open its run on Unlearn."""

import streamlit as st

from dimalign import plots, ui
from dimalign.errors import ConfigError
from dimalign.methods import ORDER, REGISTRY
from dimalign.metric_table import TABLE, TIME_FRACTION, shown
from dimalign.replicates import BEST_BY, baseline_rows, best_row, score_of, setting_rows
from dimalign.store import ACTIVE, StoreError

cfg, who = ui.page("Tune")

methods = [m for m in ORDER if REGISTRY[m].trains]
method = st.selectbox("Method", methods, index=methods.index("muda"), key="tune_method",
                      format_func=lambda m: f"{REGISTRY[m].title} — {REGISTRY[m].description}")
spec = REGISTRY[method]
numeric = [n for n, k in spec.knobs.items() if k.numeric]
knobs = st.multiselect("Knobs to sweep (one or two)", numeric, default=numeric[:1],
                       max_selections=2, key=f"tune_knobs_{method}")
c1, c2 = st.columns(2)
count = c1.slider("Values per knob", 2, 6, 3, key="tune_count")
replicates = int(c2.number_input("Replicates", 1, 10, 2, key="tune_replicates",
                                 help="Each setting runs on this many replicates: new "
                                      "initialisations, batch orders and method randomness, "
                                      "on the same split, each with its own baselines"))
grid = []
for col, name in zip(st.columns(max(1, len(knobs))), knobs, strict=False):
    knob = spec.knobs[name]
    scale = "log" if ui.is_log_knob(knob) else "even"
    suggested = ", ".join(f"{v:g}" for v in ui.sweep_grid(knob, count))
    text = col.text_input(f"{name}: values ({scale} spacing; allowed {knob.range_text()})",
                          suggested, key=f"tune_values_{method}_{name}_{count}",
                          help=knob.help)
    grid.append(f"{method}.{name}={text}")
try:
    total = ui.sweep_size(grid, replicates) if knobs else 0
except ConfigError:  # a box without values: the Sweep press says what is wrong
    total = 0
st.caption(f"{total} runs: every combination on {replicates} replicate(s), queued with your "
           "other runs; the rest of this experiment's settings come from the sidebar.")

def _sweep() -> None:  # a callback: it runs once per press, before the page redraws
    try:
        ids = ui.start_sweep(ui.sticky("preset"), st.session_state.get("overrides", []), method,
                             grid, replicates, who)
        ui.remember_sweep(ids, list(knobs))
        st.session_state["_tune_error"] = st.session_state["_tune_cancelled"] = None
    except ConfigError as err:
        st.session_state["_tune_error"] = ("Not started: a knob has no values; give it one or "
                                           "more, comma-separated." if err.key == "--grid"
                                           else f"Not started: {ui.said(err)}.")
    except StoreError as err:
        st.session_state["_tune_error"] = f"Not started: {ui.said(err)}."


if not who.admin:
    st.button("Sweep", type="primary", key="tune_sweep", disabled=not knobs, on_click=_sweep)
if error := st.session_state.get("_tune_error"):
    st.error(error)
if said := st.session_state.get("_tune_cancelled"):  # until the next sweep starts
    st.info(said)

sweep = ui.saved_sweep(who)  # the last sweep, also after a reload (its runs are in the URL)
if not sweep:
    st.info("Pick a method and one or two knobs, then press *Sweep*. Each point of the result "
            "is a setting; its spread is over the replicates.")
    st.stop()

KEYS = [*shown("compare"), "acc_test_kept"]
CHOICES = ["avg_gap", "acc_forget", "da", "acc_test_kept", TIME_FRACTION.name]


def _results() -> None:
    store = ui.store()
    runs = [store.get(i) for i in sweep["ids"]]
    done = [r for r in runs if r.status == "done" and r.result]
    active = [r for r in runs if r.status in ACTIVE]
    # a cancelled or failed run is not progress: the bar fills with the runs that finish
    progress = sum(1.0 if r.status == "done" else (r.progress or 0.0) if r.status in ACTIVE
                   else 0.0 for r in runs)
    st.progress(progress / len(runs), text=f"{len(done)} of {len(runs)} runs done, "
                f"{sum(r.status == 'running' for r in runs)} running, "
                f"{sum(r.status == 'queued' for r in runs)} queued")
    if bad := [r for r in runs if r.status in ("failed", "cancelled", "interrupted")]:
        st.warning(f"{len(bad)} run(s) did not finish: " + "; ".join(
            f"{r.id} {r.status}" + (f" ({ui.said(r.error)})" if r.error else "") for r in bad[:3]))
    if not done:
        return
    rows = setting_rows([(r.id, r.method, r.config, r.result) for r in done], KEYS)
    baselines, floor = baseline_rows([(r.config, r.result) for r in done], KEYS)
    choices = [k for k in CHOICES if any(row["mean"].get(k) is not None for row in rows)]
    metric = st.selectbox("Metric", choices, key="tune_metric",
                          format_func=lambda k: TABLE[k].title if k in TABLE
                          else TIME_FRACTION.title)
    retrained = next(b for b in baselines if b["method"] == "retrained")
    if metric == TIME_FRACTION.name:
        reference, width = 1.0, None
    elif TABLE[metric].distance:
        reference, width = 0.0, floor.get(metric)
    else:
        reference, width = retrained["mean"].get(metric), floor.get(metric)
    swept = REGISTRY[sweep["method"]]  # the sweep's own method: the picker may show another
    log = {k: ui.is_log_knob(swept.knobs[k]) for k in sweep["knobs"]}
    fig = plots.sweep_figure(rows, sweep["knobs"], metric, reference, width, log)
    event = ui.chart(fig, "tune_chart", on_select="rerun", selection_mode="points")
    st.caption("The grey band: within the noise floor (how far retrained models of different "
               "replicates differ), indistinguishable from retraining"
               + ("" if width is not None else " — it needs two finished replicates")
               + ". Click a point to open its run on Unlearn.")
    points = event.selection.points if event else []
    chosen = next((p["customdata"][0] for p in points if p.get("customdata")), None)
    if chosen:
        ui.follow(chosen)
        st.switch_page("pages/unlearn.py")
    if active:
        return
    by = "avg_gap"
    if any(score_of(r, "final_score")[0] is not None for r in rows):  # 6+ replicates a setting
        by = st.radio("Best by", BEST_BY, horizontal=True, key="tune_best_by",
                      format_func={"avg_gap": "avg-gap (lowest)",
                                   "final_score": "final score (highest)"}.get,
                      help="The final score is the unlearning challenge's: forgetting quality "
                           "across replicates times the retain and test accuracy ratios.")
    best = best_row(rows, by)
    if best is None:
        return
    setting = ", ".join(f"{k}={best['params'][k]:g}" for k in sweep["knobs"])
    if by == "final_score":
        value, sd = score_of(best, "final_score")
        measure = f"final score {value:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
    else:
        spread = f" ± {best['sd']['avg_gap']:.3f}" if best["replicates"] > 1 else ""
        measure = f"avg-gap {best['mean']['avg_gap']:.3f}{spread}"
    found = (f"{setting} — {measure}, time {best['mean'][TIME_FRACTION.name]:.2f}× retraining "
             f"(run {best['run']})")
    if len(done) < len(runs):  # a sweep cut short: its best is among what finished only
        st.info(f"Best among the {len(done)} finished run(s) of {len(runs)}: {found}.")
    else:
        st.success(f"Best setting: {found}.")


def _cancel_sweep() -> None:  # a callback: once per press
    try:
        cancelled, asked = ui.cancel_sweep(sweep["sweep"], who)
        st.session_state["_tune_error"] = None
        st.session_state["_tune_cancelled"] = (f"Sweep cancelled: {cancelled} queued run(s) "
                                               f"dropped, {asked} running run(s) stopping.")
    except StoreError as err:
        st.session_state["_tune_error"] = f"Not cancelled: {ui.said(err)}."


if any(ui.store().get(i).status in ACTIVE for i in sweep["ids"]):
    if sweep["sweep"] and not who.admin:
        st.button("Cancel sweep", key="tune_cancel", on_click=_cancel_sweep,
                  help="Drop this sweep's queued runs and stop its running ones")

    @st.fragment(run_every=1.0)
    def live() -> None:
        if not any(ui.store().get(i).status in ACTIVE for i in sweep["ids"]):
            st.rerun()  # all finished: draw once more without polling
        _results()

    live()
else:
    _results()
