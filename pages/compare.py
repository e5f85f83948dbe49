"""Compare: every finished run of this experiment against the retrained model."""

import pandas as pd
import streamlit as st

from dimalign import plots, ui
from dimalign.export import csv_text
from dimalign.metric_table import TABLE, TIME_FRACTION, gap_to_retrained, shown
from dimalign.runner import comparison_rows, gaps_to_retrained

cfg, who = ui.page("Compare")

KEYS = list(shown("compare"))  # the metric table's columns for this page
runs = [r for r in ui.experiment_runs(cfg, who) if r.status == "done" and r.result]
if not runs:
    st.info("No finished runs of this experiment yet: start some on the Unlearn page.")
    st.stop()

rows = comparison_rows([(r.id, r.method, r.result) for r in runs], KEYS)
retrained = next(row for row in rows if row["run"] == "retrained")
show_gaps = st.toggle("Show gaps to retrained instead of values", key="gaps")
table = gaps_to_retrained(rows, KEYS) if show_gaps else rows


def _colour(value, key):
    if TABLE[key].distance or pd.isna(value):  # a distance is not shaded against itself
        return ""
    gap = value if show_gaps else gap_to_retrained(key, value, retrained.get(key))
    if gap is None:
        return ""
    return f"background-color: rgba(228, 87, 86, {min(0.8, abs(gap) * 2):.2f})"


styled = pd.DataFrame(table).style.format(precision=3).apply(
    lambda col: [_colour(v, col.name) for v in col] if col.name in KEYS else [""] * len(col))
columns = {k: st.column_config.Column(help=f"{TABLE[k].title}: {TABLE[k].description}")
           for k in KEYS}
columns[TIME_FRACTION.name] = st.column_config.Column(TIME_FRACTION.title,
                                                      help=TIME_FRACTION.description)
st.dataframe(styled, hide_index=True, key="compare_table", column_config=columns)
st.caption("Red shading grows with the distance to the retrained model (the gold standard).")

ui.chart(plots.tradeoff_figure(rows, KEYS, retrained), "tradeoffs")
c1, c2 = st.columns(2)
c1.download_button("Download CSV", csv_text(rows), "dimalign-compare.csv", "text/csv",
                   key="download_csv")


def _figure_html() -> str:  # built on click only: with plotly.js inlined it is 4.6 MB
    return plots.tradeoff_figure(rows, KEYS, retrained).to_html(include_plotlyjs=True)


c2.download_button("Download figure (HTML)", _figure_html, "dimalign-compare.html", "text/html",
                   key="download_fig")
st.caption("The chart's camera button (hover it) saves it as PNG or SVG — pick which in the "
           "sidebar; the HTML file keeps it interactive.")
