"""Experiment: data, forget scenario and the baseline models (trained as a background job)."""

import streamlit as st

from dimalign import plots, ui
from dimalign.data import build_experiment
from dimalign.datasets import DatasetUnavailable
from dimalign.errors import ConfigError
from dimalign.metric_table import shown
from dimalign.paths import DATA_ROOTS_ENV, data_roots
from dimalign.store import StoreError
from dimalign.train import cached_meta
from dimalign.uploads import hide_server_paths

cfg, who = ui.page("Experiment", settings=True)  # its controls stay when settings are wrong
invalid = ui.settings_error()


def _apply() -> None:
    s = st.session_state

    def shown(key: str, now):  # a control of another scenario kind is not drawn: its value
        return s.get(key, now)  # is the experiment's own until it is

    kind = s.exp_kind
    out = [*s.get("own_data", []), f"scenario.kind={kind}", f"seed={shown('exp_seed', cfg.seed)}"]
    if kind == "class":
        classes = shown("exp_classes", list(sc.classes) or [0])
        out.append("scenario.classes=" + ",".join(str(c) for c in classes))
    else:
        out.append(f"scenario.fraction={shown('exp_fraction', sc.fraction)}")
    if kind == "backdoor":
        out.append(f"scenario.target={shown('exp_target', sc.target)}")
    s.overrides = out


sc, n_classes = cfg.scenario, cfg.info.num_classes
with st.expander("Your own data and model", expanded=bool(st.session_state.get("own_data"))):
    st.caption("An image folder (one sub-folder per class; `train/` and `test/` inside are "
               "used when both exist, else a seeded 80/20 split), a torchvision model, and "
               "optionally your trained weights as the original model.")
    roots = data_roots()  # a page reads paths under these only (the server's choice)
    if roots:
        st.caption("This server reads folders and checkpoints under: "
                   + ", ".join(f"`{r}`" for r in roots) + ".")
    else:
        st.info(f"This server reads no folder or file named on a page: upload them below. "
                f"Whoever starts it can allow the folders under some: "
                f"`{DATA_ROOTS_ENV}=/data/a:/data/b make app`.", icon=":material/folder_off:")
    uploaded = ui.uploaded_paths(who.name)  # shown as the uploader's file, not the server path
    o1, o2 = st.columns(2)
    o1.text_input("Image folder", "" if cfg.dataset_root in uploaded else cfg.dataset_root,
                  key="own_root", placeholder="/data/my-images", disabled=not roots)
    o2.number_input("Image size (pixels)", 4, 1024, cfg.image_size, key="own_size")
    o1.text_input("Model", cfg.model, key="own_model",
                  help="auto, cnn, resnet18, or torchvision:NAME (any torchvision "
                       "classification model, e.g. torchvision:resnet18)")
    o2.text_input("Original checkpoint (state dict, optional)",
                  "" if cfg.original_checkpoint in uploaded else cfg.original_checkpoint,
                  key="own_checkpoint", placeholder="/models/original.pt", disabled=not roots)
    u1, u2 = st.columns(2)
    u1.file_uploader("…or upload the image folder as a zip", type=["zip"], key="own_zip",
                     help="A zip of the folder (its class sub-folders at the top, or inside "
                          "one folder), kept in your own area on this server")
    u2.file_uploader("…or upload the checkpoint", type=["pt", "pth"], key="own_upload_ckpt",
                     help="A state dict saved with torch.save, read with weights_only=True")
    use, reset = st.columns([1, 4])
    use.button("Use these", key="own_apply", on_click=lambda: ui.use_own_data(
        st.session_state.own_root, int(st.session_state.own_size), st.session_state.own_model,
        st.session_state.own_checkpoint, owner=who.name,
        upload_zip=st.session_state.get("own_zip"),
        upload_checkpoint=st.session_state.get("own_upload_ckpt")))
    if st.session_state.get("own_data"):
        reset.button("Back to the preset's data", key="own_reset", on_click=ui.use_own_data,
                     args=("", 0, "", ""))
    if st.session_state.get("own_error"):
        st.error(st.session_state["own_error"])
with st.expander("Scenario and seed", expanded=invalid is not None):
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Forget", ["class", "random", "backdoor"],
                 index=["class", "random", "backdoor"].index(sc.kind), key="exp_kind",
                 on_change=_apply)
    if sc.kind == "class":
        c2.multiselect("Classes to forget", list(range(n_classes)), default=list(sc.classes),
                       key="exp_classes", on_change=_apply)
    else:
        c2.slider("Fraction of training samples", 0.01, 0.5, float(sc.fraction), 0.01,
                  key="exp_fraction", on_change=_apply)
    if sc.kind == "backdoor":
        c2.number_input("Target class", 0, n_classes - 1, sc.target, key="exp_target",
                        on_change=_apply)
    c3.number_input("Seed", 0, 10_000, cfg.seed, key="exp_seed", on_change=_apply)

if invalid is not None:  # the controls above are drawn; nothing below would be this experiment
    st.error(f"These settings are invalid: {hide_server_paths(str(invalid))}. Change them "
             "above, or go back to the preset's settings.")
    st.button("Back to the preset's settings", key="settings_reset",
              on_click=ui.reset_settings)
    st.stop()

what = {"class": f"classes {', '.join(map(str, sc.classes))}",
        "random": f"a random {sc.fraction:.0%} of training samples",
        "backdoor": f"{sc.fraction:.0%} of samples stamped with a trigger and relabelled to "
                    f"{sc.target}"}[sc.kind]
st.markdown(f"**{cfg.dataset}** · model **{cfg.model_name}** · seed {cfg.seed} · "
            f"forget {what}")

try:
    exp = build_experiment(cfg)
except DatasetUnavailable as err:
    st.error(hide_server_paths(str(err)))
    st.stop()
except (OSError, ValueError) as err:  # e.g. an unreadable image in one's own image folder
    what = "" if isinstance(err, ConfigError) else f"{type(err).__name__}: "
    st.error(f"The data could not be loaded ({what}{hide_server_paths(str(err))}). Change the "
             "data settings above.")
    st.stop()

left, right = st.columns([1, 2])
ui.chart(plots.split_sizes(exp.summary()), "split_sizes", left)
with right:
    st.markdown("**Forget set** (first 20)")
    st.image(plots.image_montage(exp.x_train[exp.forget_idx[:20]]), width="stretch")
    st.markdown("**Retain set** (first 20)")
    st.image(plots.image_montage(exp.x_train[exp.retain_idx[:20]]), width="stretch")

st.subheader("Baseline models")
cached = {role: cached_meta(cfg, role) for role in ("original", "retrained")}
active = ui.active_baselines(cfg)
done = ui.baselines_run(cfg)
if done is not None and done.result:
    models = done.result["models"]
    keys = [k for k in shown("experiment") if k in models["original"]]
    st.dataframe([{"model": m, **{k: models[m].get(k) for k in keys},
                   "train seconds": round(done.result["seconds"][m], 1)}
                  for m in ("original", "retrained")], hide_index=True, key="baselines")
elif active is None:
    status = ", ".join(f"{r}: {'cached' if m else 'not trained'}" for r, m in cached.items())
    if who.admin:
        st.info(f"Baselines: {status}. (Instructor's view: read-only.)")
    else:
        st.info(f"Baselines: {status}. Train (or load) and evaluate them in the background.")
        label = "Evaluate baselines" if all(cached.values()) else "Train baselines"
        if st.button(label, key="train_baselines", type="primary"):
            try:
                ui.train_baselines(ui.sticky("preset"), st.session_state.get("overrides", []),
                                   who)
            except (ConfigError, StoreError) as err:
                st.error(f"Not started: {hide_server_paths(str(err))}.")
            else:
                st.rerun()


@st.fragment(run_every=1.0)
def _baselines_progress() -> None:
    run = ui.active_baselines(cfg)
    if run is None:
        st.rerun()  # finished: redraw the page with its metrics
    label = f"{run.phase or run.status} — shared job {run.id}"
    st.progress(run.progress or 0.0, text=label)


if active is not None:
    _baselines_progress()
