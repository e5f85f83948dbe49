"""Audit: where in the network forgetting happens, what a membership attacker sees, how fast
the forgotten comes back, and what each class gets (computed by a worker, cached per run)."""

import dataclasses

import streamlit as st

from dimalign import plots, ui
from dimalign.audit import AuditSettings, attack_table, audit_path, load_audit, score_range
from dimalign.checked import DamagedFile
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

    @st.fragment(run_every=1.0)
    def waiting() -> None:
        j = _job()
        if path.exists() or j is None or j.status not in ACTIVE:
            st.rerun()  # the whole page: the audit, or why it did not come and the button
        st.progress(j.progress or 0.0, text=f"Audit of run {run.id}: {j.status}"
                    + (f" ({j.phase})" if j.phase and j.status == "running" else ""))

    waiting()
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
           f"samples; DA with the run's eval settings (energy {settings_used['eval']['energy']}"
           f", k {settings_used['eval']['k'] or 'from energy'}, centred "
           f"{settings_used['eval']['center']}). The last layer is the penultimate one: its DA "
           "is the run's DA.")

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
st.dataframe([{"model": model, "steps to relearn": entry["steps_to_relearn"]}
              for model, entry in audit["relearn"].items()], hide_index=True,
             key="audit_steps")
threshold_text = ("" if settings_used["relearn_threshold"] is None else
                  f"{settings_used['relearn_threshold']:.3f}")
st.caption(f"Each model fine-tuned on the same {settings_used['m']} forget samples (seed "
           f"{settings_used['seed']}, lr {settings_used['lr']}) for "
           f"{settings_used['relearn_steps']} steps. Relearnt: forget accuracy at least 0.9 × "
           f"the original model's ({threshold_text}); none = never within the steps.")

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
