"""Audit: where in the network forgetting happens, what a membership attacker sees, how fast
the forgotten comes back, what each class gets, and which samples are still remembered
(computed by a worker, cached per run)."""

import base64
import dataclasses
import io

import streamlit as st
from PIL import Image

from dimalign import plots, ui
from dimalign.audit import (
    AuditSettings,
    attack_table,
    audit_path,
    load_audit,
    relearn_table,
    sample_table,
    score_range,
    verdict_text,
)
from dimalign.checked import DamagedFile
from dimalign.config import config_from_dict
from dimalign.data import build_experiment
from dimalign.errors import ConfigError
from dimalign.store import ACTIVE, StoreError

cfg, who = ui.page("Audit")
run, _ = ui.require_geometry(cfg, who)

c1, c2, _ = st.columns([1, 1, 2])
m = c1.number_input("Relearn samples m (0: 10 % of the forget set)", 0, 100_000, 0,
                    key="audit_m")
s = c2.number_input("Relearn steps s", 1, 1000, 50, key="audit_s")
settings = AuditSettings(relearn_samples=int(m), relearn_steps=int(s))
path = audit_path(run.folder, settings)


def _job():
    """The latest audit job of this run with these settings, if any."""
    return ui.latest_job("audit", run, {"settings": dataclasses.asdict(settings)})


def _start(run_id: str, wanted: AuditSettings) -> None:
    """Button callback (it runs before the page, so a rerun cannot lose the click)."""
    try:
        ui.job_on_run("audit", ui.store().get(run_id), {"settings": dataclasses.asdict(wanted)},
                      who)
    except (ConfigError, StoreError) as err:
        st.session_state["_audit_error"] = f"{ui.said(err)}."


if not path.exists():
    job = _job()
    if job is None or job.status not in ACTIVE:
        if st.session_state.get("_audit_error"):
            st.error(st.session_state.pop("_audit_error"))
        elif job is not None:
            ui.show_run_error(job)
        st.info(f"Run {run.id} has no audit with these settings yet. It takes each model's "
                "features at every block, its outputs on every sample, a relearn attack of "
                f"{settings.relearn_steps} fine-tuning steps, and its per-class predictions.")
        st.button("Compute the audit", key="audit_start", type="primary", on_click=_start,
                  args=(run.id, settings))
        st.stop()

    def _over() -> bool:  # the audit, or why it did not come and the button: the whole page
        j = _job()
        return path.exists() or j is None or j.status not in ACTIVE

    ui.wait_for_job(job.id, _over, f"Audit of run {run.id}")
    st.stop()

try:
    audit = load_audit(path)
except DamagedFile:  # set aside: the button computes it again
    st.error(f"The audit of run {run.id} was damaged and set aside; reload the page to "
             "compute it again.")
    st.stop()
except FileNotFoundError:  # set aside by another session just now
    st.rerun()
stamp = (str(path), path.stat().st_mtime)
settings_used = audit["settings"]

st.subheader("1. Where in the network does the representation change?")
ui.chart(ui.memo_figure(("audit_layers", *stamp), lambda: plots.layer_profile_figure(audit)),
         "audit_layers")
st.caption("Each block's output, average-pooled over space, for retain, forget and test "
           f"samples; DA with energy {settings_used['eval']['energy']}, k "
           f"{settings_used['eval']['k'] or 'from energy'}. Inner layers are centred on the "
           "retain mean (uncentred, their shared positive mean is the one retain direction: "
           "k = 1 and DA ≈ 0.99 for every model). The last layer is the penultimate one, with "
           f"the run's centring ({settings_used['eval']['center']}): its DA is the run's DA. "
           "Effective rank: Roy & Vetterli's, centred as DA.")

st.subheader("2. What does a membership attacker see?")
c1, c2 = st.columns([1, 3])
score = c1.radio("Score", ["confidence", "entropy"], key="audit_score",
                 format_func=lambda v: {"confidence": "max confidence",
                                        "entropy": "output entropy"}[v])
low, high = score_range(score, len(audit["classwise"]["classes"]))
threshold = c1.slider("Threshold", float(low), float(high),
                      float(0.9 if score == "confidence" else 0.25 * high), 0.01,
                      key=f"audit_threshold_{score}",
                      help="The attack calls a sample a member when its confidence is at least "
                           "this (its entropy at most this)")
ui.chart(ui.memo_figure(("audit_mia", *stamp, score, threshold),
                        lambda: plots.membership_figure(audit, score, threshold)),
         "audit_mia", c2)
st.dataframe(attack_table(audit, score, threshold), hide_index=True, key="audit_attack")
st.caption(f"Non-members: {settings_used['nonmembers']}. A good unlearner's TPR and FPR, and "
           "its AUC, sit next to the retrained model's. TPR/FPR use up to "
           f"{settings_used['score_samples']} sampled scores per split; AUC and histograms use "
           "every sample.")

st.subheader("3. Does the forgotten come back? (relearn attack)")
ui.chart(ui.memo_figure(("audit_relearn", *stamp), lambda: plots.relearn_figure(audit)),
         "audit_relearn")
st.dataframe(relearn_table(audit), hide_index=True, key="audit_steps")
threshold_text = ("" if settings_used["relearn_threshold"] is None else
                  f"{settings_used['relearn_threshold']:.3f}")
batch = settings_used["relearn_batch"]
st.caption(f"Each model fine-tuned on the same {settings_used['m']} forget samples (seed "
           f"{settings_used['seed']}), {batch['forget']} of them beside {batch['retain']} "
           f"retain samples in each batch, with the training's SGD (lr {settings_used['lr']}, "
           f"{'Nesterov ' * settings_used['nesterov']}momentum {settings_used['momentum']}) for "
           f"{settings_used['relearn_steps']} steps. Relearnt: forget accuracy at least 0.9 × "
           f"the original model's ({threshold_text}); none = never within the steps. The mean "
           f"± sd is over {settings_used['relearn_subsets']} seeded draws of the forget "
           "samples, of the draws that relearnt.")

st.subheader("4. What does each class get?")
ui.chart(ui.memo_figure(("audit_classes", *stamp), lambda: plots.class_accuracy_figure(audit)),
         "audit_classes")
ui.chart(ui.memo_figure(("audit_confusion", *stamp), lambda: plots.confusion_figure(audit)),
         "audit_confusion")
classwise = audit["classwise"]
if "target" in classwise:
    st.markdown(f"**Attack success rate** (stamped test samples sent to class "
                f"{classwise['target']}):")
    for col, (model, entry) in zip(st.columns(len(classwise["models"])),
                                   classwise["models"].items(), strict=True):
        col.metric(model, "–" if entry.get("asr") is None else f"{entry['asr']:.3f}")

st.subheader("5. Which forget samples are still remembered?")
how, run_cfg = audit["sample_verdict"], config_from_dict(run.config)


def _thumbnails(rows: list[int]) -> list[str]:
    """Training images as data-URI PNGs, for the table's image column (one experiment for
    every row: `ui.sample_image` builds it per call, a backdoor's with a copy of the images)."""
    images, out = build_experiment(run_cfg).x_train, []
    for row in rows:
        png = io.BytesIO()
        Image.fromarray(plots.image_montage(images[row:row + 1], ncols=1)).save(png, "PNG")
        out.append("data:image/png;base64," + base64.b64encode(png.getvalue()).decode())
    return out


def _show_sample(sample: dict) -> None:
    """The picked sample: its image and label, its numbers under each model, and its track in
    the run's film when the film holds it."""
    film = ui.load_film(run)
    at = None if film is None else next(
        (i for i, (split, row) in enumerate(zip(film["splits"], film["rows"], strict=True))
         if split == "forget" and row == sample["id"]), None)
    numbers = [{"model": m, **v} for m, v in sample["models"].items()]
    if sample.get("reference"):
        numbers.append({"model": f"retrained (mean of {how['retrained_models']})",
                        **sample["reference"]})
    where = st
    if at is None:
        picture, where = st.columns([1, 4])
        picture.image(ui.sample_image(run_cfg, "forget", sample["id"]), width=96)
        picture.markdown(f"**forget** sample {sample['id']}  \nlabel {sample['label']}")
    where.dataframe(numbers, hide_index=True, key="audit_sample_models")
    if at is not None:
        st.caption("Its track in the run's film (the film's residuals use one k for every "
                   "frame, the retrained model's; the audit's, each model's own).")
        ui.show_film_sample(run, film, film["ids"][at])


def _table() -> list[dict]:
    rows = sample_table(audit)
    return [{"image": image, **row} for image, row in
            zip(_thumbnails([r["sample"] for r in rows]), rows, strict=True)]


table = ui.memo_figure(("audit_samples", *stamp), _table)
number = st.column_config.NumberColumn
picked = st.dataframe(
    table, hide_index=True, key="audit_samples", on_select="rerun",
    selection_mode="single-row",
    column_config={"image": st.column_config.ImageColumn("image", width="small"),
                   "score": number(format="%.2f", help=verdict_text(how)),
                   "percentile": number(format="%.2f", help="The share of retrained models "
                                        "less far toward the original (ties count half)"),
                   "membership score": number(format="%.2f", help="The same score of the "
                                              "logit-scaled confidence on the label"),
                   **{c: number(format="%.3f") for c in (table[0] if table else ())
                      if c.startswith(("residual", "confidence"))}}).selection.rows
st.caption(f"The {len(table)} forget samples with the highest score of the {how['scored']} "
           f"scored (of {how['forget']}); {verdict_text(how)}. Residual: the sample's share of "
           "its penultimate features outside the model's retain top-k eigenspace (k as its "
           "DA's). Pick a row to see the sample.")
if picked:
    _show_sample(audit["samples"][picked[0]])
