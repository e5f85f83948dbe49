"""Compare: every finished run of this experiment against the retrained model."""

import csv
import io

import streamlit as st

from dimalign import plots, ui

cfg = ui.sidebar_config()
who = ui.owner()
st.title("Compare")
if cfg is None:
    st.stop()

KEYS = ["acc_retain", "acc_forget", "acc_test", "mia", "da", "lp_forget", "nmi",
        "cka_retrained", "avg_gap"]
runs = [r for r in ui.experiment_runs(cfg, who) if r.status == "done" and r.result]
baselines = ui.baselines_run(cfg)
if not runs:
    st.info("No finished runs of this experiment yet: start some on the Unlearn page.")
    st.stop()

rows = []
retrained = runs[0].result["models"]["retrained"]
retrain_seconds = runs[0].result["seconds"]["retrained"]
for name, m in (("original", runs[0].result["models"]["original"]), ("retrained", retrained)):
    rows.append({"run": name, "method": name, **{k: m.get(k) for k in KEYS},
                 "time / retrain": runs[0].result["seconds"][name] / retrain_seconds})
for r in runs:
    m = r.result["models"]["unlearned"]
    rows.append({"run": r.id, "method": r.method, **{k: m.get(k) for k in KEYS},
                 "time / retrain": r.result["seconds"]["unlearn"] / retrain_seconds})

show_gaps = st.toggle("Show gaps to retrained instead of values", key="gaps")
table = [{**row, **{k: (row[k] - retrained[k]) if show_gaps and row[k] is not None
                    and retrained.get(k) is not None and k != "avg_gap" else row[k]
                    for k in KEYS}} for row in rows]


def _colour(value, key):
    if value is None or key not in retrained or retrained[key] is None or key == "avg_gap":
        return ""
    gap = abs(value if show_gaps else value - retrained[key])
    return f"background-color: rgba(228, 87, 86, {min(0.8, gap * 2):.2f})"


try:
    import pandas as pd

    frame = pd.DataFrame(table)
    styled = frame.style.format(precision=3).apply(
        lambda col: [_colour(v, col.name) for v in col] if col.name in KEYS else [""] * len(col))
    st.dataframe(styled, hide_index=True, key="compare_table")
except ImportError:
    st.dataframe(table, hide_index=True, key="compare_table")
st.caption("Red shading grows with the distance to the retrained model (the gold standard).")

ui.chart(plots.tradeoff_figure(rows, KEYS, retrained), "tradeoffs")
buffer = io.StringIO()
writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
writer.writeheader()
writer.writerows(rows)
c1, c2 = st.columns(2)
c1.download_button("Download CSV", buffer.getvalue(), "dimalign-compare.csv", "text/csv",
                   key="download_csv")


def _figure_html() -> str:  # built on click only: with plotly.js inlined it is 4.6 MB
    return plots.tradeoff_figure(rows, KEYS, retrained).to_html(include_plotlyjs=True)


c2.download_button("Download figure (HTML)", _figure_html, "dimalign-compare.html", "text/html",
                   key="download_fig")
st.caption("The chart's camera button (hover it) saves it as PNG or SVG — pick which in the "
           "sidebar; the HTML file keeps it interactive.")
