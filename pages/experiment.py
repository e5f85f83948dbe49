"""Experiment: the data and forget scenario of the chosen preset, and its baseline models."""

import streamlit as st

from dimalign import plots, ui
from dimalign.data import build_experiment
from dimalign.datasets import DatasetUnavailable
from dimalign.train import cached_meta

cfg = ui.sidebar_config()
st.title("Experiment")
if cfg is None:
    st.stop()

sc = cfg.scenario
what = {"class": f"classes {', '.join(map(str, sc.classes))}",
        "random": f"a random {sc.fraction:.0%} of training samples",
        "backdoor": f"{sc.fraction:.0%} of samples stamped with a trigger and relabelled to "
                    f"{sc.target}"}[sc.kind]
st.markdown(f"**{cfg.dataset}** · model **{cfg.model_name}** · seed {cfg.seed} · "
            f"forget {what}")

try:
    exp = build_experiment(cfg)
except DatasetUnavailable as err:
    st.error(str(err))
    st.stop()

left, right = st.columns([1, 2])
left.plotly_chart(plots.split_sizes(exp.summary()), key="split_sizes")
with right:
    st.markdown("**Forget set** (first 20)")
    st.image(plots.image_montage(exp.x_train[exp.forget_idx[:20]]), width="stretch")
    st.markdown("**Retain set** (first 20)")
    st.image(plots.image_montage(exp.x_train[exp.retain_idx[:20]]), width="stretch")

st.subheader("Baseline models")
rows = []
for role in ("original", "retrained"):
    meta = cached_meta(cfg, role)
    rows.append({"model": role, "status": "cached" if meta else "not trained yet",
                 "training seconds": round(meta["seconds"], 1) if meta else None,
                 "device": meta["device"] if meta else None})
st.dataframe(rows, hide_index=True, key="baselines")
if any(r["status"] != "cached" for r in rows):
    preset = st.query_params.get("preset")
    st.info(f"Train them from a terminal: `dimalign run --preset {preset}` "
            "(background training from the dashboard arrives with the run queue).")
