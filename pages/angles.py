"""Principal angles between forget and retain subspaces, and DA."""

import streamlit as st

from dimalign import plots, ui

cfg, who = ui.page("Principal angles")
run, geometry = ui.require_geometry(cfg, who)

ui.chart(ui.memo_figure(("angles", run.id, run.finished), lambda: plots.angles_figure(geometry)),
         "angles")
models = geometry["models"]
st.dataframe([{"model": m, "DA": round(g["da"], 4), "k (retain)": g["k_retain"],
               "k (forget)": g["k_forget"], "smallest angle": round(float(g["angles"][0]), 2)}
              for m, g in models.items()], hide_index=True, key="da_table")
if "unlearned" in models and run.kind == "unlearn":
    curves = ui.store().curves(run.id)
    if curves.get("da"):
        ui.chart(plots.telemetry_figure({"da": curves["da"]}), "da_curve")

retrained, original = models.get("retrained"), models.get("original")
if retrained and original:
    closer = "unlearned" in models and abs(models["unlearned"]["da"] - retrained["da"]) < abs(
        original["da"] - retrained["da"])
    st.markdown(
        f"**Reading.** DA measures how much of the forget features' energy lies inside the "
        f"top-{retrained['k_retain']} retain eigenspace. The retrained model, which never saw "
        f"the forget set, has DA {retrained['da']:.3f}; the original has {original['da']:.3f}"
        + (", so its forget features keep directions of their own." if original["da"] <
           retrained["da"] else ".")
        + (f" The unlearned model's DA is {models['unlearned']['da']:.3f} — "
           + ("closer to retraining than the original." if closer else
              "not closer to retraining than the original.") if "unlearned" in models else "")
        + " Small principal angles mean the forget subspace overlaps the retain subspace.")
