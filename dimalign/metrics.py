"""Metrics of models on an experiment: accuracies, MIA, linear probe, F1, NMI, DA, CKA, gaps.

Protocols are docs/method.md, "Metrics"; what each key means, its range, which way is
better and where it is shown is the metric table (`metric_table.py`), which also holds the one
gap-to-retrained function. Every model is run over the data once (`model_outputs`); each
metric is then a function of those logits and features. scikit-learn provides the SVC, the
logistic regression and k-means. Subsample sizes come from `EvalConfig` and are reported next
to the numbers they produced.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from dimalign.config import MIA_FEATURES, EvalConfig
from dimalign.data import Experiment
from dimalign.datasets import stratified_split
from dimalign.features import forward_all
from dimalign.geometry import (
    Basis,
    DegenerateFeatures,
    dimensional_alignment,
    effective_rank,
    linear_cka,
    top_basis,
)
from dimalign.memo import LRU
from dimalign.metric_table import avg_gap as table_avg_gap
from dimalign.metric_table import avg_gap_keys
from dimalign.models import Classifier

GAP_KEYS = avg_gap_keys()  # avg-gap averages these (the table's in_avg_gap entries)
NAN = float("nan")  # a metric its model leaves undefined (e.g. a collapsed model's DA); JSON null


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


@dataclass(frozen=True)
class Outputs:
    """One model's logits and penultimate features on every split."""

    logits_train: torch.Tensor  # (N, K)
    feats_train: torch.Tensor  # (N, C)
    logits_test: torch.Tensor  # (M, K)
    feats_test: torch.Tensor  # (M, C)
    logits_trigger: torch.Tensor | None = None  # backdoor: stamped test samples
    # fits made on these outputs (the MIA's calls, the linear probe), by their settings: the
    # per-stratum metrics reuse the whole set's (`stratum_metrics`)
    fitted: dict = field(default_factory=dict, compare=False, repr=False)

    def fit(self, key: tuple, make):
        """make(), once per key for these outputs."""
        if key not in self.fitted:
            self.fitted[key] = make()
        return self.fitted[key]


def model_outputs(model: Classifier, exp: Experiment) -> Outputs:
    lt, ft = forward_all(model, exp.x_train, exp.info)
    le, fe = forward_all(model, exp.x_test, exp.info)
    trig = forward_all(model, exp.x_trigger, exp.info)[0] if exp.x_trigger is not None else None
    return Outputs(lt, ft, le, fe, trig)


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(1) == labels).double().mean().item()


def split_accuracies(out: Outputs, exp: Experiment) -> dict[str, float]:
    """Accuracy on D_r, D_f, D_t; class scenario: on test samples of kept / forgotten classes;
    backdoor: `asr`, the fraction of stamped test samples sent to the target class."""
    f, r = exp.forget, ~exp.forget
    res = {"acc_retain": _acc(out.logits_train[r], exp.y_train[r]),
           "acc_forget": _acc(out.logits_train[f], exp.y_train[f]),
           "acc_test": _acc(out.logits_test, exp.y_test)}
    if exp.test_forgotten.any():
        tf = exp.test_forgotten
        res["acc_test_kept"] = _acc(out.logits_test[~tf], exp.y_test[~tf])
        res["acc_test_forgotten"] = _acc(out.logits_test[tf], exp.y_test[tf])
    if out.logits_trigger is not None:
        target = exp.y_train[f][0].item()
        res["asr"] = _acc(out.logits_trigger, torch.full_like(exp.y_trigger, target))
    return res


def accuracies(model: Classifier, exp: Experiment) -> dict[str, float]:
    return split_accuracies(model_outputs(model, exp), exp)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of the softmax output, per sample (N,)."""
    logp = torch.log_softmax(logits.double(), dim=1)
    return -(logp.exp() * logp).sum(1)


def sample_rows(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` of `n` rows (all when fewer), drawn with `rng`, in order."""
    return np.sort(rng.choice(n, size=min(n, size), replace=False))


def mia_score(logits: torch.Tensor, labels: torch.Tensor, feature: str) -> np.ndarray:
    """The one output feature the MIA's SVC sees, per sample: `confidence` = softmax
    probability of the sample's label (the literature's reported choice), `entropy` of the
    softmax, or `correctness` (1 where the prediction equals the label)."""
    if feature == "entropy":
        return entropy(logits).numpy()
    if feature == "confidence":
        probs = torch.softmax(logits.double(), dim=1)
        return probs.gather(1, labels.long()[:, None]).squeeze(1).numpy()
    if feature == "correctness":
        return (logits.argmax(1) == labels).double().numpy()
    raise ValueError(f"unknown MIA feature {feature!r}; choose one of {', '.join(MIA_FEATURES)}")


@dataclass(frozen=True)
class MiaResult:
    mean: float  # fraction of D_f predicted non-member, averaged over the resamplings
    sd: float  # its sample standard deviation over them (0 with one resampling)
    per_side: int  # members and non-members (each) each SVC was fitted on
    values: tuple[float, ...]  # one value per resampling


def mia_efficacy(members: tuple[torch.Tensor, torch.Tensor],
                 non_members: tuple[torch.Tensor, torch.Tensor],
                 forget: tuple[torch.Tensor, torch.Tensor], *, feature: str = "confidence",
                 samples: int = 1000, repeats: int = 5, seed: int = 0) -> MiaResult:
    """MIA-efficacy (Jia et al. 2023): an RBF SVC (C = 3, gamma "auto") on one output feature
    learns members from non-members, balanced; applied to D_f, the fraction it calls
    non-member. Each argument is (logits, labels). The shadow sets are drawn `repeats` times
    (seeded): one draw's value is not a finding, so the mean and sd over draws are reported."""
    n, calls = mia_calls(members, non_members, forget, feature=feature, samples=samples,
                         repeats=repeats, seed=seed)
    if calls is None:  # a diverged model
        return MiaResult(NAN, NAN, n, ())
    return _mia_result(calls, n)


def mia_of(out: Outputs, exp: Experiment, ev: EvalConfig, seed: int
           ) -> tuple[int, np.ndarray | None]:
    """`mia_calls` of a model's outputs with the eval settings (fitted once per outputs)."""
    return out.fit(("mia", split_key(exp), ev.mia_feature, ev.mia_samples, ev.mia_repeats, seed),
                   lambda: mia_calls(**mia_sets(out, exp), feature=ev.mia_feature,
                                     samples=ev.mia_samples, repeats=ev.mia_repeats, seed=seed))


def _mia_result(calls: np.ndarray, n: int) -> MiaResult:
    """MIA-efficacy from the (repeats, samples) non-member calls of each draw's SVC."""
    values = [float(v) for v in calls.mean(1)]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return MiaResult(float(np.mean(values)), sd, n, tuple(values))


def mia_calls(members: tuple[torch.Tensor, torch.Tensor],
              non_members: tuple[torch.Tensor, torch.Tensor],
              forget: tuple[torch.Tensor, torch.Tensor], *, feature: str = "confidence",
              samples: int = 1000, repeats: int = 5, seed: int = 0
              ) -> tuple[int, np.ndarray | None]:
    """The attack of `mia_efficacy`, per target sample: (the members and non-members each SVC
    was fitted on, a (repeats, N_f) bool array, True where draw i's SVC calls forget sample j
    a non-member); None for the calls where a model's outputs are not finite."""
    from sklearn.svm import SVC

    n = min(samples, len(members[1]), len(non_members[1]))
    if not _finite(members[0], non_members[0], forget[0]):
        return n, None
    rng = np.random.default_rng(seed)
    inside, outside = mia_score(*members, feature), mia_score(*non_members, feature)
    target = mia_score(*forget, feature)[:, None]
    calls = np.zeros((repeats, len(target)), dtype=bool)
    for i in range(repeats):
        x = np.concatenate([inside[sample_rows(len(inside), n, rng)],
                            outside[sample_rows(len(outside), n, rng)]])[:, None]
        y = np.concatenate([np.ones(n), np.zeros(n)])
        svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
        calls[i] = svc.predict(target) == 0
    return n, calls


def mia_sets(out: Outputs, exp: Experiment) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The MIA's (logits, labels): members = D_r; non-members = the test set, only its kept
    classes in a class scenario (a forgotten class has no members left to tell apart); the
    target D_f with the labels the model was trained on."""
    f, r = exp.forget, ~exp.forget
    kept = ~exp.test_forgotten
    return {"members": (out.logits_train[r], exp.y_train[r]),
            "non_members": (out.logits_test[kept], exp.y_test[kept]),
            "forget": (out.logits_train[f], exp.y_train[f])}


def probe_halves(y_test: torch.Tensor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear probe's split of the test set: a stratified half to fit on, half to score."""
    return stratified_split(y_test.numpy(), 0.5, seed)


def linear_probe(out: Outputs, exp: Experiment, seed: int) -> dict[str, float]:
    """Multinomial logistic regression on frozen, standardised features, fitted on half of the
    test split (every class present); accuracy on D_f (true labels) and the other half, and the
    forgotten classes' F1 on that half (class scenario)."""
    from sklearn.metrics import f1_score

    _, score_idx = probe_halves(exp.y_test, seed)
    if not _finite(out.feats_train, out.feats_test):  # a diverged model: nothing to fit
        return {"lp_forget": NAN, "lp_test": NAN,
                **({"f1_forget": NAN} if exp.forgotten_classes else {})}
    probe, scaled = out.fit(("probe", seed), lambda: fit_probe(out, exp, seed))
    f = exp.forget
    res = {"lp_forget": float(probe.score(scaled(out.feats_train[f]), exp.y_clean[f].numpy())),
           "lp_test": float(probe.score(scaled(out.feats_test[score_idx]),
                                        exp.y_test[score_idx].numpy()))}
    if exp.forgotten_classes:
        predicted = probe.predict(scaled(out.feats_test[score_idx]))
        res["f1_forget"] = float(f1_score(exp.y_test[score_idx].numpy(), predicted,
                                          labels=exp.forgotten_classes, average="macro",
                                          zero_division=0))
    return res


def fit_probe(out: Outputs, exp: Experiment, seed: int):
    """The linear probe fitted on its half of the test set, and the scaling its inputs need:
    (probe, scaled), scaled(features) -> standardised numpy rows."""
    from sklearn.linear_model import LogisticRegression

    fit_idx, _ = probe_halves(exp.y_test, seed)
    x_fit = out.feats_test[fit_idx].double()
    mean, std = x_fit.mean(0), x_fit.std(0).clamp(min=1e-8)

    def scaled(x: torch.Tensor) -> np.ndarray:
        return ((x.double() - mean) / std).numpy()

    probe = LogisticRegression(max_iter=2000, C=1.0)
    probe.fit(scaled(x_fit), exp.y_test[fit_idx].numpy())
    return probe, scaled


def forget_and_test(out: Outputs, exp: Experiment) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and true labels of D_f followed by D_t (the samples NMI and CKA look at)."""
    f = exp.forget
    return (torch.cat([out.feats_train[f], out.feats_test]),
            torch.cat([exp.y_clean[f], exp.y_test]))


def nmi(out: Outputs, exp: Experiment, samples: int, seed: int) -> tuple[float, int]:
    """k-means (k = number of classes) on forget + test features; NMI against true labels."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import normalized_mutual_info_score

    feats, labels = forget_and_test(out, exp)
    idx = sample_rows(len(labels), samples, np.random.default_rng(seed))
    if not _finite(feats[idx]):  # a diverged model
        return NAN, len(idx)
    km = KMeans(n_clusters=exp.info.num_classes, n_init=3, random_state=seed)
    with warnings.catch_warnings():  # a collapsed model's features form fewer clusters than k
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = km.fit_predict(feats[idx].double().numpy())
    return float(normalized_mutual_info_score(labels[idx].numpy(), clusters)), len(idx)


def model_metrics(out: Outputs, exp: Experiment, ev: EvalConfig, seed: int) -> dict[str, float]:
    """Every single-model metric."""
    f, r = exp.forget, ~exp.forget
    res = split_accuracies(out, exp)
    n, calls = mia_of(out, exp, ev, seed)
    mia = MiaResult(NAN, NAN, n, ()) if calls is None else _mia_result(calls, n)
    res["mia"], res["mia_sd"] = mia.mean, mia.sd
    retain = out.feats_train[r]
    res.update(alignments(out.feats_train[f], out.feats_test, retain, ev))
    res.update(linear_probe(out, exp, seed))
    res["nmi"], _ = nmi(out, exp, ev.nmi_samples, seed)
    res["effective_rank"] = _defined(lambda: effective_rank(retain, ev.center))
    return res


def _defined(measure) -> float:
    """measure(), or NaN where the features leave it undefined (all zero, constant, NaN)."""
    try:
        return measure()
    except DegenerateFeatures:
        return NAN


def alignments(forget: torch.Tensor, test: torch.Tensor, retain: torch.Tensor,
               ev: EvalConfig) -> dict[str, float]:
    """`da` (forget), `da_test` (test) against one retain basis, and its size `da_k`; NaN
    where a collapsed model's features leave them undefined."""
    try:
        basis = retain_basis(retain, ev)
    except DegenerateFeatures:  # no retain subspace at all
        return {"da": NAN, "da_test": NAN, "da_k": NAN}
    return {"da": _defined(lambda: alignment(forget, retain, ev, basis=basis)[0]),
            "da_test": _defined(lambda: alignment(test, retain, ev, basis=basis)[0]),
            "da_k": basis.k}


def retain_basis(retain: torch.Tensor, ev: EvalConfig) -> Basis:
    """U_r as the config asks for it (centred on the retain mean when eval.center is set)."""
    centred = retain - retain.mean(0, keepdim=True) if ev.center else retain
    return top_basis(centred, ev.energy, ev.k or None)


def alignment(feats: torch.Tensor, retain: torch.Tensor, ev: EvalConfig,
              basis: Basis | None = None) -> tuple[float, Basis]:
    """DA of `feats` (N, C) against the retain features `retain` (N_r, C) as the eval settings
    ask for it: U_r = `retain_basis(retain, ev)` (ev.energy or a fixed ev.k; both sets centred
    on the retain mean when ev.center). Pass the `basis` it returned to score another set
    against the same U_r without a second eigendecomposition. Returns (DA, the basis used)."""
    basis = retain_basis(retain, ev) if basis is None else basis
    value = dimensional_alignment(feats, retain, center=ev.center, basis=basis).value.item()
    return value, basis


def sample_sizes(exp: Experiment, ev: EvalConfig) -> dict[str, int]:
    """How many samples each subsampled metric used (reported with the numbers)."""
    n_forget, n_retain = int(exp.forget.sum()), int((~exp.forget).sum())
    n_test = len(exp.y_test)
    fit_idx, score_idx = probe_halves(exp.y_test, 0)
    n_non_members = int((~exp.test_forgotten).sum())
    return {"mia_per_side": min(ev.mia_samples, n_retain, n_non_members),
            "nmi": min(ev.nmi_samples, n_forget + n_test),
            "cka": min(ev.cka_samples, n_forget + n_test),
            "lp_fit": len(fit_idx), "lp_score": len(score_idx)}


EVALUATED: LRU[tuple[Outputs, dict]] = LRU(4)  # baselines' outputs and metrics, in a warm worker


def evaluate(models: dict[str, Classifier], exp: Experiment, ev: EvalConfig, seed: int = 0,
             ids: dict[str, str] | None = None
             ) -> tuple[dict[str, dict[str, float]], dict[str, Outputs]]:
    """Every metric for every model, plus CKA to the retrained and original models and the
    avg-gap to the retrained model. Returns (metrics per model, outputs per model).
    `ids` names models by a checkpoint identity (the cached baselines): those are evaluated
    once per process and settings, and reused."""
    ids = ids or {}

    def measure(model: Classifier) -> tuple[Outputs, dict]:
        out = model_outputs(model, exp)
        return out, model_metrics(out, exp, ev, seed)

    split = split_key(exp)  # one original serves every class and random forget set
    measured = {name: EVALUATED.get_or_make((ids[name], ev, seed, split),
                                            lambda m=m: measure(m))
                if name in ids else measure(m) for name, m in models.items()}
    outs = {name: out for name, (out, _) in measured.items()}
    result = {name: dict(row) for name, (_, row) in measured.items()}
    idx = sample_rows(int(exp.forget.sum()) + len(exp.y_test), ev.cka_samples,
                  np.random.default_rng(seed))
    shared = {name: forget_and_test(out, exp)[0][idx] for name, out in outs.items()}
    for name, row in result.items():
        for ref in ("retrained", "original"):
            if ref in shared:
                row[f"cka_{ref}"] = _defined(lambda a=shared[name], b=shared[ref]:
                                             linear_cka(a, b))
        if "retrained" in result and name != "retrained":
            row["avg_gap"] = avg_gap(row, result["retrained"])
    return result, outs


def split_key(exp: Experiment) -> str:
    """The identity of an experiment's split (its forget set and forgotten test samples): the
    same model, e.g. the original every class and random scenario shares, has other metrics
    under another split."""
    import hashlib

    blob = exp.forget.numpy().tobytes() + exp.test_forgotten.numpy().tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]


def avg_gap(row: dict[str, float], reference: dict[str, float]) -> float:
    """Mean |model - retrained| over GAP_KEYS (the accuracies and MIA); missing or NaN
    entries are skipped."""
    value = table_avg_gap(row, reference)
    return float("nan") if value is None else value


# ------------------------------------------------------------- strata of a random forget set


STRATIFIED: LRU[dict] = LRU(8)  # baselines' per-stratum metrics, in a warm worker


def stratum_metrics(out: Outputs, exp: Experiment, ev: EvalConfig, seed: int
                    ) -> dict[str, dict[str, float]]:
    """One model's forget metrics on each stratum of a random forget set (`exp.strata`;
    dimalign/strata.py): the metric table's `per_stratum` entries but avg-gap, which needs
    the retrained model (`evaluate_strata`). Each is its whole-set protocol restricted to the
    stratum's samples: accuracy; MIA from the same shadow draws and SVCs as `mia`, so the
    strata's MIA, weighted by size, is `mia` (`mia_sd` over those draws); DA against the
    same retain basis as `da`; the linear probe of `lp_forget`. NaN on an empty stratum."""
    from dimalign.strata import STRATA

    f = exp.forget
    strata = exp.strata[f].numpy()
    logits, labels, feats = out.logits_train[f], exp.y_train[f], out.feats_train[f]
    retain = out.feats_train[~f]
    n, calls = mia_of(out, exp, ev, seed)
    try:
        basis = retain_basis(retain, ev)
    except DegenerateFeatures:
        basis = None
    probe = (out.fit(("probe", seed), lambda: fit_probe(out, exp, seed))
             if _finite(out.feats_train, out.feats_test) else None)
    rows = {}
    for s, name in enumerate(STRATA):
        idx = np.flatnonzero(strata == s)
        row = {"acc_forget": _acc(logits[idx], labels[idx]), "mia": NAN, "mia_sd": NAN,
               "da": NAN, "lp_forget": NAN}
        if len(idx):
            if calls is not None:
                mia = _mia_result(calls[:, idx], n)
                row["mia"], row["mia_sd"] = mia.mean, mia.sd
            if basis is not None:
                row["da"] = _defined(lambda i=idx: alignment(feats[i], retain, ev,
                                                             basis=basis)[0])
            if probe is not None:
                fitted, scaled = probe
                row["lp_forget"] = float(fitted.score(scaled(feats[idx]),
                                                      exp.y_clean[f][idx].numpy()))
        rows[name] = row
    return rows


def evaluate_strata(outputs: dict[str, Outputs], metrics: dict[str, dict[str, float]],
                    exp: Experiment, ev: EvalConfig, seed: int = 0,
                    ids: dict[str, str] | None = None) -> dict[str, dict[str, dict]] | None:
    """`stratum_metrics` of every model, and per stratum the avg-gap of each model but the
    retrained one (its forget accuracy and MIA on the stratum, retain and test accuracy on
    their whole sets, `metrics` as `evaluate` returned them): {model: {stratum: {metric:
    value}}}. None when the experiment has no strata. `ids` as in `evaluate`."""
    if exp.strata is None:
        return None
    ids = ids or {}
    marks = exp.strata.numpy().tobytes()
    rows = {name: STRATIFIED.get_or_make((ids[name], ev, seed, marks),
                                         lambda o=out: stratum_metrics(o, exp, ev, seed))
            if name in ids else stratum_metrics(out, exp, ev, seed)
            for name, out in outputs.items()}
    rows = {name: {s: dict(row) for s, row in strata.items()} for name, strata in rows.items()}
    if "retrained" in rows:
        whole = {name: {k: metrics[name].get(k) for k in ("acc_retain", "acc_test")}
                 for name in rows}
        for name, strata in rows.items():
            if name == "retrained":
                continue
            for s, row in strata.items():
                row["avg_gap"] = avg_gap({**whole[name], **row},
                                         {**whole["retrained"], **rows["retrained"][s]})
    return rows
