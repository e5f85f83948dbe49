"""Eigenspectra of retain, forget and test features for each model."""

import streamlit as st

from dimalign import plots, ui

cfg, who = ui.page("Eigenspectra")
run, geometry = ui.require_geometry(cfg, who)

centered = st.toggle("Centred (covariance) instead of uncentred", key="centered")
ui.chart(ui.memo_figure(("spectra", run.id, run.finished, centered),
                         lambda: plots.spectra_grid(geometry, centered)), "spectra")
c1, c2 = st.columns([1, 3])
split = c1.radio("Features", ["forget", "retain", "test"], key="split")
energy = c1.slider("Energy", 0.5, 0.999, float(geometry["settings"]["energy"]), 0.001,
                   key="energy")
fig, ks = ui.memo_figure(("cumulative", run.id, run.finished, split, energy, centered),
                         lambda: plots.cumulative_figure(geometry, split, energy, centered))
ui.chart(fig, "cumulative", c2)
c1.markdown("\n".join(f"- **{m}**: k = {k}" for m, k in ks.items()))
st.dataframe([{"model": m, **{f"effective rank ({s})": round(g["effective_rank"][s], 2)
                              for s in ("retain", "forget", "test")}}
              for m, g in geometry["models"].items()], hide_index=True, key="ranks")
st.caption(f"Spectra of every sample of each split; run {run.id}. Effective rank: Roy & "
           "Vetterli's, exp(entropy) of the normalised singular values"
           + (", centred (eval.center)" if geometry["settings"].get("center") else "") + ".")
