"""Compare: every finished run of this experiment against the retrained model — on every
replicate, each run against its own replicate's retrained model, as mean ± sd over replicates,
with the retrain-vs-retrain noise floor."""

import pandas as pd
import streamlit as st

from dimalign import plots, ui
from dimalign.challenge import DESCRIPTIONS, SCORES
from dimalign.errors import ConfigError
from dimalign.export import csv_text
from dimalign.methods import ORDER, REGISTRY
from dimalign.metric_table import TABLE, TIME_FRACTION, per_stratum, shown
from dimalign.replicates import baseline_rows, inside, score_of, setting_rows
from dimalign.store import ACTIVE, StoreError
from dimalign.strata import heading as strata_heading
from dimalign.strata import strata_csv, strata_rows

cfg, who = ui.page("Compare")

KEYS = list(shown("compare"))  # the metric table's columns for this page
every = ui.replicate_runs(cfg, who)
if not who.admin:
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    count = int(c1.number_input("Replicates", 1, 10, 1, key="compare_replicates",
                                help="Each method on this many replicates (new initialisation, "
                                     "batch order and method randomness; the same split), "
                                     "each with its own baselines"))

    def _run_every_method() -> None:  # a callback: once per press, before the page redraws
        methods = [m for m in ORDER if REGISTRY[m].trains]
        try:
            ui.submit_replicates(ui.sticky("preset"), st.session_state.get("overrides", []),
                                 methods, count, who)
            st.session_state["_compare_error"] = None
        except (ConfigError, StoreError) as err:
            st.session_state["_compare_error"] = f"Not started: {ui.said(err)}."

    c2.button("Run every method", key="run_every_method", type="primary",
              on_click=_run_every_method,
              help="Queue every method with its default knobs on each replicate, except what "
                   "is already queued, running or done")
    if error := st.session_state.get("_compare_error"):
        st.error(error)

if (active := [r for r in every if r.status in ACTIVE]):
    @st.fragment(run_every=1.0)
    def progress() -> None:
        runs = [ui.store().get(r.id) for r in active]
        going = [r for r in runs if r.status in ACTIVE]
        if len(going) < len(active):
            st.rerun()  # some ended: the table takes them in (the page draws again)
        done = sum(r.progress or 0.0 for r in going) + len(runs) - len(going)
        st.progress(done / len(runs), text=f"{len(going)} of this experiment's runs queued or "
                    "running; the table fills in as they finish")

    progress()

runs = [r for r in every if r.status == "done" and r.result]  # newest first
if note := ui.more_runs_note(every):
    st.caption(note)
if not runs:
    st.info("No finished runs of this experiment yet: press *Run every method*, or start some "
            "on the Unlearn page.")
    st.stop()

settings = setting_rows([(r.id, r.method, r.config, r.result) for r in runs], KEYS)
baselines, floor = baseline_rows([(r.config, r.result) for r in runs], KEYS)
many = any(row["replicates"] > 1 for row in (*baselines, *settings))
if not any(v is not None for v in floor.values()):
    floor = None
show_gaps = st.toggle("Show gaps to retrained instead of values", key="gaps")
source = [*baselines, *settings]
# the unlearning challenge's scores, once some setting has the replicates for them
scored = [k for k in SCORES if any(score_of(row, k)[0] is not None for row in source)]
if "final_score" in scored and st.toggle("Rank by final score", key="rank_final",
                                         help=DESCRIPTIONS["final_score"]):
    source.sort(key=lambda row: (score_of(row, "final_score")[0] is None,
                                 -(score_of(row, "final_score")[0] or 0.0)))
COLUMNS = [*KEYS, TIME_FRACTION.name, *scored]


def _flat(row: dict) -> dict:
    """A row for the table and the CSV: the mean of each metric over the replicates (with
    `gaps`: of its gap to each run's own replicate's retrained model); sds are in `spread`."""
    values = row["gap_mean"] if show_gaps else row["mean"]
    flat = {"run": row["run"], "method": row["method"],
            **{k: values.get(k) for k in KEYS},
            TIME_FRACTION.name: row["mean"].get(TIME_FRACTION.name),
            **{k: score_of(row, k)[0] for k in scored}}
    if many:
        flat["replicates"] = row["replicates"]
    return flat


table = [_flat(row) for row in source]
spread = [{**(row["gap_sd"] if show_gaps else row["sd"]),
           **{k: score_of(row, k)[1] for k in scored}} for row in source]


def _cell(value, sd) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.3f} ± {sd:.3f}" if sd is not None else f"{value:.3f}"


latest = ui.sticky("run")  # the run this person's newest action made (or their pick since)
mine = next((row for row in settings if latest in row.get("runs", {}).values()), None)


def _shade(row: dict, key: str) -> str:
    """Grey where the mean |gap| lies within the noise floor; else red growing with it. The
    row of the person's latest run: its run cell blue."""
    if key == "run" and row is mine:
        return "background-color: rgba(66, 133, 244, 0.35); font-weight: bold"
    if key not in KEYS or (TABLE[key].distance and floor is None):
        return ""
    gap = row["abs_gap"].get(key)
    if gap is None:
        return ""
    if floor is not None and inside(gap, floor.get(key)):
        return "background-color: rgba(140, 140, 140, 0.35)"
    if TABLE[key].distance:
        return ""
    return f"background-color: rgba(228, 87, 86, {min(0.8, gap * 2):.2f})"


frame = pd.DataFrame(table)
if many:  # cells read mean ± sd over the replicates
    for col in COLUMNS:
        # a row of one replicate has no spread: its value alone, not "± 0.000"
        frame[col] = [_cell(row[col], sd.get(col) if sd and row["replicates"] > 1 else None)
                      for row, sd in zip(table, spread, strict=True)]
styled = frame.style.format(precision=3).apply(
    lambda col: [_shade(source[i], col.name) for i in range(len(col))])
columns = {k: st.column_config.Column(help=f"{TABLE[k].title}: {TABLE[k].description}")
           for k in KEYS}
columns[TIME_FRACTION.name] = st.column_config.Column(TIME_FRACTION.title,
                                                      help=TIME_FRACTION.description)
columns.update({k: st.column_config.Column(help=DESCRIPTIONS[k]) for k in scored})
st.dataframe(styled, hide_index=True, key="compare_table", column_config=columns)
if mine is not None:
    st.caption(f"Blue run cell: the row of your latest run, {latest}"
               + (f" (row {mine['run']}, its lowest replicate)" if mine["run"] != latest else "")
               + ".")
st.caption("Red shading grows with the distance to the retrained model (the gold standard)"
           + ("; grey: within the noise floor — the mean gap between retrained models of "
              "different replicates — indistinguishable from retraining." if floor else
              ". Run two or more replicates to see the noise floor (retrain vs retrain)."))
if floor:
    st.caption("Noise floor: " + ", ".join(f"{k} {floor[k]:.3f}" for k in KEYS
                                           if floor.get(k) is not None))
if scored:
    note = next((row["forgetting"]["note"] for row in source if row.get("forgetting")
                 and row["forgetting"].get("note")), None)
    st.caption("The unlearning challenge's scores (docs/method.md, \"Forgetting quality\"): "
               "value ± sd over resampled replicates; the retrained row is retraining against "
               "itself, the reference." + (f" {note}." if note else ""))


def _chart_row(row: dict) -> dict:
    flat = {"run": row["run"], "method": row["method"], **row["mean"]}
    if many:
        flat.update(sd=row["sd"], gap=row["gap_mean"], gap_sd=row["gap_sd"])
    return flat


chart_rows = [_chart_row(row) for row in source]
retrained = next(row for row in chart_rows if row["run"] == "retrained")


def _figure():
    return plots.tradeoff_figure(chart_rows, KEYS, retrained, floor)


ui.chart(_figure(), "tradeoffs")
c1, c2 = st.columns(2)
c1.download_button("Download CSV", csv_text(table), "dimalign-compare.csv", "text/csv",
                   key="download_csv")


def _figure_html() -> str:  # built on click only: with plotly.js inlined it is 4.6 MB
    return _figure().to_html(include_plotlyjs=True)


c2.download_button("Download figure (HTML)", _figure_html, "dimalign-compare.html", "text/html",
                   key="download_fig")
st.caption("The chart's camera button (hover it) saves it as PNG or SVG — pick which in the "
           "sidebar; the HTML file keeps it interactive.")

# A random forget set: the same table per stratum of it (easy, medium, hard by how surely the
# original model fits each sample: dimalign/strata.py), where methods differ most on the hard.
stratified = [(r.id, r.method, r.config, r.result) for r in runs if r.result.get("strata")]
if stratified:
    st.subheader("Forget-set difficulty")
    block = stratified[0][3]["strata"]
    per = [k for k in per_stratum() if not TABLE[k].spread_of]
    metric = st.segmented_control("Metric per stratum", per, default="acc_forget",
                                  format_func=lambda k: TABLE[k].title, key="strata_metric",
                                  help="Each model's metric on the stratum's forget samples "
                                       "alone, beside the whole-set retain and test accuracies")
    metric = metric or "acc_forget"  # a second click on the chosen button clears it
    strata_table, strata_floors = strata_rows(stratified, per)
    ui.chart(plots.strata_figure(strata_table, metric, strata_floors), "strata")
    said = strata_heading(block)
    st.caption(said[:1].upper() + said[1:] + ". Cells: mean ± sd over replicates; "
               "colour: the mean |gap| to the retrained model on the stratum; ≈: within the "
               "stratum's noise floor (two or more replicates). "
               + (f"{older} finished run{'s' if older > 1 else ''} saved before the strata "
                  "were kept are not in this view. "
                  if (older := len(runs) - len(stratified)) else "")
               + "`dimalign compare --json` adds the challenge's scores per stratum.")
    st.download_button("Download per-stratum CSV", csv_text(strata_csv(strata_table, per)),
                       "dimalign-compare-strata.csv", "text/csv", key="download_strata_csv")
