"""Metrics near their extremes on synthetic features, and on the trained default preset."""

import json

import pytest
import torch

from dimalign.artifacts import SPLITS, geometry_bundle, load_bundle, save_bundle
from dimalign.config import MIA_FEATURES, EvalConfig
from dimalign.data import Experiment
from dimalign.datasets import DATASETS
from dimalign.geometry import dimensional_alignment, effective_rank, eigenspectrum
from dimalign.metric_table import for_scenario
from dimalign.metrics import (
    GAP_KEYS,
    Outputs,
    alignment,
    avg_gap,
    evaluate,
    linear_probe,
    mia_efficacy,
    mia_score,
    mia_sets,
    model_metrics,
    nmi,
)

GEN = torch.Generator().manual_seed(0)


def synthetic(separable: bool, n_train=600, n_test=400, c=32, forget_class=3):
    """Labels cycle through 10 classes; features are class means plus noise, or noise only."""
    y_tr, y_te = torch.arange(n_train) % 10, torch.arange(n_test) % 10
    means = torch.randn(10, c, generator=GEN) * (6.0 if separable else 0.0)

    def feats(y):
        return means[y] + torch.randn(len(y), c, generator=GEN)

    def logits(y):  # confident and right when separable
        return torch.nn.functional.one_hot(y, 10).float() * (8.0 if separable else 0.0)

    x_tr = torch.zeros(n_train, 1, 8, 8, dtype=torch.uint8)
    x_te = torch.zeros(n_test, 1, 8, 8, dtype=torch.uint8)
    exp = Experiment(DATASETS["digits"], x_tr, y_tr, y_tr == forget_class, x_te, y_te,
                     y_te == forget_class, y_tr)
    out = Outputs(logits(y_tr), feats(y_tr).relu(), logits(y_te), feats(y_te).relu())
    return out, exp


def test_linear_probe_and_nmi_are_near_one_on_separable_and_near_chance_on_noise():
    out, exp = synthetic(separable=True)
    lp = linear_probe(out, exp, seed=0)
    assert lp["lp_forget"] > 0.95 and lp["lp_test"] > 0.95 and lp["f1_forget"] > 0.95
    assert nmi(out, exp, 5000, seed=0)[0] > 0.9
    out, exp = synthetic(separable=False)
    lp = linear_probe(out, exp, seed=0)
    assert lp["lp_test"] < 0.3 and lp["f1_forget"] < 0.35
    assert nmi(out, exp, 5000, seed=0)[0] < 0.1


def _logits_with_entropy(n, confident: bool):
    scale = 10.0 if confident else 0.0
    return torch.nn.functional.one_hot(torch.arange(n) % 10, 10).float() * scale + \
        0.1 * torch.randn(n, 10, generator=GEN)


def _labelled(logits):
    return logits, torch.arange(len(logits)) % 10


@pytest.mark.parametrize("feature", MIA_FEATURES)
def test_mia_efficacy_reads_unseen_like_forget_sets_as_non_members(feature):
    retain = _labelled(_logits_with_entropy(300, confident=True))  # members: confident, right
    test = _labelled(_logits_with_entropy(300, confident=False))  # non-members: unsure
    like_test = _labelled(_logits_with_entropy(100, confident=False))
    like_retain = _labelled(_logits_with_entropy(100, confident=True))
    high = mia_efficacy(retain, test, like_test, feature=feature, samples=200, seed=0)
    low = mia_efficacy(retain, test, like_retain, feature=feature, samples=200, seed=0)
    assert high.per_side == 200 and len(high.values) == 5
    assert high.mean > 0.85 and low.mean < 0.1


def _with_confidence(confidence: list[float]):
    """Two-class logits whose softmax gives label 0 exactly `confidence`."""
    p = torch.tensor(confidence, dtype=torch.float64)
    logits = torch.stack([torch.log(p), torch.log1p(-p)], dim=1)
    return logits, torch.zeros(len(p), dtype=torch.long)


def test_mia_confidence_is_the_softmax_probability_of_the_label_and_scores_a_known_split():
    """By hand: members are sure (0.99), non-members unsure (0.5 or 0.6); a forget set half
    of each is called non-member for exactly its unsure half, in every draw."""
    logits, labels = _with_confidence([0.75, 0.2])
    assert mia_score(logits, labels, "confidence") == pytest.approx([0.75, 0.2])
    assert mia_score(logits, torch.tensor([1, 1]), "confidence") == pytest.approx([0.25, 0.8])
    assert mia_score(logits, labels, "correctness").tolist() == [1.0, 0.0]
    members = _with_confidence([0.99] * 50)
    non_members = _with_confidence([0.5, 0.6] * 25)
    forget = _with_confidence([0.99] * 10 + [0.5] * 10 + [0.6] * 20)
    result = mia_efficacy(members, non_members, forget, samples=40, repeats=4, seed=3)
    assert result.values == (0.75,) * 4 and result.mean == 0.75 and result.sd == 0.0
    one = mia_efficacy(members, non_members, forget, samples=40, repeats=1, seed=3)
    assert one.sd == 0.0 and len(one.values) == 1


def test_mia_sd_comes_from_redrawing_the_shadow_sets():
    """Overlapping member and non-member confidences: each draw of the shadow sets fits a
    different SVC, so the value varies (sd > 0) and is the mean of the draws; the same seed
    gives the same draws."""
    gen = torch.Generator().manual_seed(1)
    members = _with_confidence((0.55 + 0.44 * torch.rand(400, generator=gen)).tolist())
    non_members = _with_confidence((0.5 + 0.4 * torch.rand(400, generator=gen)).tolist())
    forget = _with_confidence((0.5 + 0.49 * torch.rand(200, generator=gen)).tolist())
    result = mia_efficacy(members, non_members, forget, samples=60, repeats=6, seed=0)
    assert result.sd > 0 and result.mean == pytest.approx(sum(result.values) / 6)
    assert mia_efficacy(members, non_members, forget, samples=60, repeats=6, seed=0) == result


def test_mia_non_members_are_the_test_samples_of_kept_classes():
    out, exp = synthetic(separable=True)
    sets = mia_sets(out, exp)
    assert 3 not in sets["non_members"][1].tolist()
    assert len(sets["non_members"][1]) == int((~exp.test_forgotten).sum())
    assert len(sets["members"][1]) == int((~exp.forget).sum())
    assert torch.equal(sets["forget"][1], exp.y_train[exp.forget])


def test_avg_gap_is_the_mean_absolute_difference_over_its_table_keys():
    a = dict(zip(GAP_KEYS, (1.0, 1.0, 0.9, 0.1), strict=True))
    b = dict(zip(GAP_KEYS, (1.0, 0.0, 0.8, 0.9), strict=True))
    assert avg_gap(a, b) == pytest.approx((0 + 1 + 0.1 + 0.8) / 4)
    assert avg_gap(a, a) == 0


def test_model_metrics_report_every_documented_key_for_a_class_scenario():
    out, exp = synthetic(separable=True)
    row = model_metrics(out, exp, EvalConfig(), seed=0)
    pairwise = {"cka_retrained", "cka_original", "avg_gap"}  # evaluate adds these (two models)
    assert set(row) == set(for_scenario("class")) - pairwise
    assert all(torch.isfinite(torch.tensor(float(v))) for v in row.values())


@pytest.mark.parametrize("ev", [EvalConfig(), EvalConfig(k=5, center=True)],
                         ids=["energy", "fixed-k-centred"])
def test_alignment_is_da_with_the_eval_settings_and_reuses_its_basis(ev):
    out, exp = synthetic(separable=True)
    forget, retain = out.feats_train[exp.forget], out.feats_train[~exp.forget]
    value, basis = alignment(forget, retain, ev)
    reference = dimensional_alignment(forget, retain, energy=ev.energy, k=ev.k or None,
                                      center=ev.center)
    assert value == pytest.approx(reference.value.item()) and basis.k == reference.k
    assert ev.k == 0 or basis.k == ev.k
    again, same = alignment(out.feats_test, retain, ev, basis=basis)
    assert same is basis and again == pytest.approx(
        dimensional_alignment(out.feats_test, retain, center=ev.center, basis=basis).value.item())


@pytest.fixture(scope="module")
def default_evaluation(default_baselines):
    b = default_baselines
    models = {"original": b.original, "retrained": b.retrained}
    return evaluate(models, b.experiment, EvalConfig(), seed=0)


def test_retrained_model_aligns_forget_features_with_the_retain_space_more_than_original(
        default_evaluation):
    """The paper's observation, on digits-class: DA(retrained) > DA(original)."""
    metrics, _ = default_evaluation
    assert metrics["retrained"]["da"] > metrics["original"]["da"]
    assert metrics["retrained"]["cka_retrained"] == pytest.approx(1.0)
    assert metrics["original"]["cka_retrained"] < 1.0
    assert metrics["original"]["avg_gap"] > 0.2  # doing nothing is far from retraining
    assert metrics["retrained"]["acc_test_forgotten"] < 0.05
    # the MIA on the literature's feature (confidence) tells the two apart: issue 17's bar
    assert metrics["original"]["mia"] <= 0.1 and metrics["retrained"]["mia"] >= 0.8
    assert metrics["original"]["mia_sd"] >= 0.0 and metrics["retrained"]["mia_sd"] >= 0.0


def test_effective_rank_is_roy_and_vetterlis_of_the_retain_features_centred_with_eval(
        default_evaluation, default_baselines):
    """The metric is Roy & Vetterli's (singular values), several times the energy form
    dimalign reported before issue 27 (22.3 against 6.2 for the original when written); the
    saved geometry follows eval.center."""
    metrics, outputs = default_evaluation
    exp = default_baselines.experiment
    for name in ("original", "retrained"):
        retain = outputs[name].feats_train[~exp.forget]
        assert metrics[name]["effective_rank"] == pytest.approx(effective_rank(retain))
        assert metrics[name]["effective_rank"] > 3 * eigenspectrum(retain).effective_rank_energy
    centred = geometry_bundle(outputs, exp, EvalConfig(center=True, feature_samples=50), seed=0)
    retain = outputs["original"].feats_train[~exp.forget]
    assert centred["models"]["original"]["effective_rank"]["retain"] == pytest.approx(
        effective_rank(retain, center=True))
    assert effective_rank(retain, center=True) != pytest.approx(effective_rank(retain))


def test_geometry_bundle_round_trips_and_shares_rows_across_models(default_evaluation,
                                                                   default_baselines, tmp_path):
    metrics, outputs = default_evaluation
    ev = EvalConfig(feature_samples=50)
    bundle = geometry_bundle(outputs, default_baselines.experiment, ev, seed=0)
    save_bundle(bundle, tmp_path / "geometry.pt")
    loaded = load_bundle(tmp_path / "geometry.pt")  # weights_only: plain tensors and numbers
    assert loaded["settings"]["feature_samples"] == 50
    for name in ("original", "retrained"):
        g = loaded["models"][name]
        for split in SPLITS:
            n = len(loaded["rows"][split])
            assert g["features"][split].shape[0] == n == len(loaded["labels"][split])
            assert g["spectra"][split]["plain"].sum().item() == pytest.approx(1.0, abs=1e-5)
        assert g["da"] == pytest.approx(metrics[name]["da"], abs=1e-6)
        assert len(g["angles"]) == min(g["k_retain"], g["k_forget"])
    # every model's features are of the same samples, so their manifolds can be aligned
    assert len(loaded["rows"]["retain"]) == 50 and len(loaded["rows"]["forget"]) == 50
    json.dumps(loaded["settings"])  # settings stay plain data


def test_a_warm_process_evaluates_cached_baselines_once_and_gets_the_same_numbers(
        tiny_baselines):
    """What a pooled worker relies on: baselines named by their checkpoint are evaluated (and
    their geometry computed) once per process and settings; the numbers do not change."""
    from dimalign.artifacts import GEOMETRY
    from dimalign.metrics import EVALUATED
    from dimalign.runner import finite

    b = tiny_baselines
    models = {"original": b.original, "retrained": b.retrained}
    ev = EvalConfig(mia_samples=100, nmi_samples=200, cka_samples=200, feature_samples=20)
    plain, outs = evaluate(models, b.experiment, ev, seed=0)
    hits = EVALUATED.hits
    first, _ = evaluate(models, b.experiment, ev, seed=0, ids=b.checkpoints)
    again, _ = evaluate(models, b.experiment, ev, seed=0, ids=b.checkpoints)
    assert EVALUATED.hits == hits + 2  # the second call reused both baselines
    assert finite(first) == finite(again) == finite(plain)  # NaN (e.g. no ASR) as None
    geometry_hits = GEOMETRY.hits
    one = geometry_bundle(outs, b.experiment, ev, 0, ids=b.checkpoints)
    two = geometry_bundle(outs, b.experiment, ev, 0, ids=b.checkpoints)
    assert GEOMETRY.hits == geometry_hits + 2
    assert one["models"]["retrained"]["da"] == two["models"]["retrained"]["da"]


def test_a_model_evaluated_on_two_splits_gets_each_splits_metrics(tiny_baselines):
    """The original model serves every class and random forget set (one checkpoint): in one
    process its metrics on a random split are not the class split's, remembered."""
    from dimalign.config import build_config
    from dimalign.data import build_experiment
    from dimalign.features import forward_all
    from dimalign.metrics import evaluate

    b, ev = tiny_baselines, EvalConfig(mia_samples=100, mia_repeats=1, nmi_samples=100,
                                       cka_samples=100)
    ids = {"original": b.checkpoints["original"]}
    random = build_experiment(build_config("digits-random", ["train.epochs=2"]))
    by_class, _ = evaluate({"original": b.original}, b.experiment, ev, ids=ids)
    by_random, _ = evaluate({"original": b.original}, random, ev, ids=ids)
    assert "acc_test_kept" in by_class["original"]
    assert "acc_test_kept" not in by_random["original"]
    logits = forward_all(b.original, random.x_train[random.forget], random.info)[0]
    right = (logits.argmax(1) == random.y_train[random.forget]).double().mean().item()
    assert by_random["original"]["acc_forget"] == pytest.approx(right)
