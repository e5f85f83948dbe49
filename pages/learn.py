"""Learn: a workshop walkthrough of MUDA on the current experiment's live figures."""

from pathlib import Path

import streamlit as st

from dimalign import plots, ui
from dimalign.exercises import EXERCISES, first_met, summary

cfg, who = ui.page("Learn: unlearning in feature space")

st.markdown("""
**1. The setting.** A classifier $f = h \\circ g$: $g$ maps an image to penultimate features
$z \\in \\mathbb{R}^C$, $h$ is a linear head. The training set splits into a retain set $D_r$ and
a forget set $D_f$. The **retrained** model — trained from scratch on $D_r$ only — is what
every unlearning method should look like.
""")
st.markdown("**2. Where do forget features live?** Stack features as columns. $U_r$ holds the "
            "top-$k$ eigenvectors of the retain Gram matrix. Dimensional Alignment asks how "
            "much of the forget features' energy falls inside that span:")
st.latex(r"\mathrm{DA}(D_f \mid D_r) = "
         r"\frac{\lVert F_f F_f^\top U_r U_r^\top \rVert_F}{\lVert F_f F_f^\top \rVert_F}"
         r"\in [0, 1]")
st.markdown("**Move it yourself.** Retain (blue) and forget (red) features in 2-D or 3-D. Turn "
            "the forget cloud, spread it, or change $k$: DA, the principal angles between the "
            "forget and retain top-$k$ subspaces, and the retain eigenvectors follow at once "
            "(your browser computes them). Turned onto the retain eigenvectors, the forget "
            "features score a high DA; square to them, a low one.")
ui.playground("learn_playground")
run, geometry = ui.geometry_source(cfg, who)
if geometry is not None:
    ui.chart(ui.memo_figure(("angles", run.id, run.finished),
                             lambda: plots.angles_figure(geometry)), "learn_angles")
    st.caption("Forgetting a class: in the retrained model the forget features lie in the "
               "retain eigenspace (high DA, small angles), while the original keeps directions "
               "of its own for them." if cfg.scenario.kind == "class" else
               "A random forget set is drawn from every class, the classes the retain set "
               "holds too, so every model puts its features in the retain eigenspace (high DA "
               "for all three): "
               "what tells the models apart here is smaller, and the retrained model need not "
               "have the smallest angles. Forget a class (the Experiment page) to see the "
               "contrast DA was made for.")
st.markdown("**3. MUDA** alternates two phases. The forget phase pulls forget features into "
            "the retain eigenspace while self-distillation keeps the rest of the model close "
            "to the original:")
st.latex(r"\mathcal{L}_{\text{forget}} = -\lambda_{DA}\,\mathrm{DA}(B_f \mid B_r)^2 "
         r"+ \lambda_{SD}\,T^2\,\mathrm{KL}\big(\sigma(t/T)\,\Vert\,\sigma(s/T)\big)")
st.markdown("The recover phase repairs the retain accuracy:")
st.latex(r"\mathcal{L}_{\text{recover}} = \mathrm{CE}(B_r) + \lambda_{SD}\,\mathcal{L}_{SD}")
if geometry is not None:
    ui.chart(ui.memo_figure(("spectra", run.id, run.finished, False),
                             lambda: plots.spectra_grid(geometry)), "learn_spectra")
st.markdown("**4. Watch it happen.** Every unlearning run records a *film* of its features. "
            "Across: the starting model's first retain direction. Up: each sample's distance "
            "off the retain eigenspace, the quantity DA measures. Forgetting in MUDA's sense is "
            "the red forget samples falling onto the blue retain ones:")
st.image(str(Path(__file__).resolve().parents[1] / "assets" / "film.gif"),
         caption="A MUDA run on digits, 17 frames (dimalign film RUN --out film.gif). Your own "
                 "runs' films play on the Unlearn page, live while they train.")
st.markdown("""
**5. Judge against retraining, in feature space.** Accuracy and MIA can be matched by bending
the head while the features still encode the forget data. Compare every metric's **gap to the
retrained model** (Compare page), and look at the spectra, angles and manifolds.

**Try it.** On the Unlearn page, run MUDA with `lambda_da = 0`: forgetting then comes only from
the recover phase. Raise it again and watch DA and the forget accuracy move together.

**6. Audit a run.** Is the forgotten gone, or only hidden? The Audit page follows DA and CKA
through the network's layers, shows what a membership attacker sees, fine-tunes each model on
a few forget samples to see how fast the forgotten comes back, and breaks accuracy down by
class. How to read each panel: the *Audit* section of docs/dashboard.md
(docs/dashboard.md#audit).
""")
st.page_link("pages/audit.py", label="Open the Audit page", icon=":material/fact_check:")

st.markdown("**7. Exercises on your own runs.** Each turns ✔ when one of your finished runs "
            "meets it; the link opens the page where it is done.")


def _exercises(watching: bool) -> None:
    if who.admin:
        st.caption("The instructor's view has no runs of its own to check.")
        return
    attempts = ui.own_attempts(who)
    for exercise in EXERCISES:
        done = first_met(exercise, attempts)
        with st.container(border=True, key=f"exercise_{exercise.key}"):
            st.markdown(f"{'✔' if done else '○'} **{exercise.goal}**")
            st.caption(f"Done by {summary(done)}. {exercise.question}" if done
                       else exercise.question)
            st.page_link(exercise.page, label="Do it on the Unlearn page",
                         icon=":material/play_arrow:")
    if watching and not ui.has_active_runs(who):
        st.rerun()  # the last run ended: the whole page, without this fragment's timer


active = ui.has_active_runs(who)  # checked again every 2 s while a run may finish
st.fragment(_exercises, run_every=2.0 if active else None)(active)
