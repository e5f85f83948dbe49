"""The unlearning challenge's forgetting quality, tug-of-war and U-LiRA on synthetic outputs
whose answers are known: identical outputs, separated ones, a hand-computed example and the
bucket rule, and the retrained reference against a perfect and a shifted method."""

import math

import numpy as np
import pytest

from dimalign.challenge import resolution_note, scores
from dimalign.forgetting import (
    DELTA,
    EPSILON_CAP,
    _threshold_eps,
    bucket_points,
    buckets,
    example_epsilons,
    final_score,
    forgetting_quality,
    logit_confidence,
    max_epsilon,
    side_for,
    tow,
)
from dimalign.replicates import with_forgetting
from dimalign.ulira import auc, held_out_scores, ulira_auc

EXAMPLES = 120


def _outputs(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """(n models, EXAMPLES) draws around fixed per-example means and spreads, each example's
    values moved by `shift` of its spread."""
    means = np.random.default_rng(99).normal(0, 3, EXAMPLES)
    spreads = np.random.default_rng(98).uniform(0.5, 2, EXAMPLES)
    noise = np.random.default_rng(seed).normal(size=(n, EXAMPLES))
    return means + spreads * (noise + shift)


def _accuracies(n: int, forget: float = 0.0) -> list[dict]:
    return [{"acc_forget": forget, "acc_retain": 0.99, "acc_test": 0.9} for _ in range(n)]


def test_identical_outputs_give_epsilon_zero_and_forgetting_quality_one():
    outputs = _outputs(8, 0)
    eps = example_epsilons(outputs, outputs.copy())
    assert (eps == 0).all()
    assert forgetting_quality(eps, 8) == 1.0


def test_separated_outputs_give_the_cap_and_one_overlap_the_largest_epsilon_n_allows():
    n = 8
    retrained = _outputs(n, 0)
    eps = example_epsilons(retrained + 100, retrained)
    assert (eps == EPSILON_CAP).all() and forgetting_quality(eps, n) == 0.0
    # one model of each side on the wrong side of the best threshold, none that an interval
    # isolates: FPR = FNR = 1/n, the largest finite ε n models show, log(n − 1 − nδ)
    r = np.array([*range(n - 1), 150.0])[:, None]
    u = np.array([75.0, *range(200, 200 + n - 1)])[:, None]
    assert example_epsilons(u, r)[0] == pytest.approx(math.log(n - 1 - n * DELTA), abs=1e-12)
    assert max_epsilon(n) == pytest.approx(math.log(7 - 8e-5))
    assert side_for(2.0) == 9 and max_epsilon(9) >= 2 > max_epsilon(8)
    # a "peaky" side (spread under 1 % of the other's) gets the cap outright
    assert example_epsilons(np.full((n, 1), 0.3), r)[0] == EPSILON_CAP


def test_one_example_by_hand():
    """Retrained 0, 1, 2, 3 and unlearned 2.5 .. 5.5. One threshold (unlearned positive, the
    larger median) at 3: FPR = 1/4 (retrained 3), FNR = 1/4 (unlearned 2.5); elsewhere one rate
    is 0 and the threshold is dropped. The interval rule (equal spreads: the retrained side
    positive) does as well, [0, 2.5]. ε = log((1 − δ − 1/4) / (1/4)) = log(3 − 4δ) ≈ 1.099:
    the bucket [1, 1.5), worth 1/4."""
    r = np.array([0.0, 1, 2, 3])[:, None]
    u = np.array([2.5, 3.5, 4.5, 5.5])[:, None]
    eps = example_epsilons(u, r)
    assert eps[0] == pytest.approx(math.log(3 - 4 * DELTA))
    assert forgetting_quality(eps, 4) == 0.25
    # the challenge's zeros: both rates 0 is separation, one of them 0 is dropped
    got = _threshold_eps(np.array([0.0, 0.0, 0.25]), np.array([0.0, 0.5, 0.5]), DELTA)
    assert got[0] == np.inf and got[1] == -np.inf
    assert got[2] == pytest.approx(math.log((0.5 - DELTA) / 0.25))


def test_the_bucket_rule_matches_a_hand_computation():
    # 8 a side: buckets to ⌈log 7⌉ = 2, width 0.5, worth 1, 1/2, 1/4, 1/8; 0 from ε = 2
    assert buckets(8) == [(0.0, 0.5, 1.0), (0.5, 1.0, 0.5), (1.0, 1.5, 0.25), (1.5, 2.0, 0.125)]
    eps = np.array([0.0, 0.49, 0.5, 1.2, 1.99, 2.0, EPSILON_CAP])
    assert bucket_points(eps, 8).tolist() == [1, 1, 0.5, 0.25, 0.125, 0, 0]
    assert forgetting_quality(eps, 8) == pytest.approx(2.875 / 7)
    # the challenge's 512 a side: ⌈log 511⌉ = 7, 14 buckets, the last worth 2 / 2^14
    assert len(buckets(512)) == 14 and buckets(512)[-1] == (6.5, 7.0, 2 / 2 ** 14)
    assert buckets(2) == [] and forgetting_quality(np.zeros(3), 2) == 0.0


def test_logit_confidence_is_log_p_over_one_minus_p():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 40.0]])
    labels = np.array([0, 1])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    own = p[[0, 1], labels]
    assert logit_confidence(logits, labels) == pytest.approx(np.log(own / (1 - own)))


def test_tow_and_the_final_score_by_hand():
    u = {"acc_forget": 0.1, "acc_retain": 0.9, "acc_test": 0.8}
    r = {"acc_forget": 0.0, "acc_retain": 0.95, "acc_test": 0.85}
    assert tow(u, r) == pytest.approx(0.9 * 0.95 * 0.95)
    assert tow(r, r) == 1.0
    assert final_score(0.5, [u, u], [r, r]) == pytest.approx(0.5 * 0.9 / 0.95 * 0.8 / 0.85)


def test_ulira_auc_is_a_half_for_identical_and_one_for_separated_outputs():
    assert auc(np.array([2.0, 3.0]), np.array([1.0, 2.0])) == 0.875  # a tie counts half
    retrained = _outputs(8, 1)
    same = ulira_auc(*held_out_scores(_outputs(8, 2), retrained))
    apart = ulira_auc(*held_out_scores(_outputs(8, 2, shift=4.0), retrained))
    assert abs(same - 0.5) < 0.05 and apart > 0.97
    with pytest.raises(ValueError, match="at least 3"):
        held_out_scores(retrained[:2], retrained[:2])


def test_a_perfect_method_meets_the_retrained_reference_and_a_shifted_one_falls_below():
    n = 8
    retrained = _outputs(n, 3)
    acc = _accuracies(n)
    ref = scores(retrained, retrained, acc, acc, reference=True, boots=30)
    perfect = scores(_outputs(n, 4), retrained, acc, acc, boots=30)
    shifted = scores(_outputs(n, 4, shift=1.5), retrained, _accuracies(n, 0.2), acc, boots=30)
    fq = {name: s["forgetting_quality"] for name, s in
          (("ref", ref), ("perfect", perfect), ("shifted", shifted))}
    assert abs(fq["perfect"]["value"] - fq["ref"]["value"]) < 2 * fq["ref"]["sd"] + 0.01
    assert fq["shifted"]["value"] + 3 * fq["shifted"]["sd"] < fq["ref"]["value"]
    assert ref["tow"]["value"] == 1.0 and shifted["tow"]["value"] == pytest.approx(0.8)
    assert ref["final_score"]["value"] == ref["forgetting_quality"]["value"]  # utility ratio 1
    assert abs(ref["ulira_auc"]["value"] - 0.5) < 0.1 < shifted["ulira_auc"]["value"] - 0.5
    assert all(s[k]["sd"] is not None for s in (ref, shifted) for k in ("tow", "ulira_auc"))
    assert ref["models_per_side"] == 4 and "--replicates 18" in ref["note"]
    assert resolution_note(9) is None


def test_too_few_replicates_give_reasons_not_numbers():
    few = scores(_outputs(4, 0), _outputs(4, 1), _accuracies(4), _accuracies(4), boots=5)
    assert few["forgetting_quality"]["value"] is None
    assert "6 replicates" in few["forgetting_quality"]["reason"]
    assert few["tow"]["value"] == 1.0  # ToW needs a pair, not a distribution
    assert "8 replicates" in few["ulira_auc"]["reason"]
    broken = _outputs(6, 0)
    broken[0, 0] = np.nan  # a diverged model
    bad = scores(broken, _outputs(6, 1), _accuracies(6), _accuracies(6), boots=5)
    assert "not finite" in bad["forgetting_quality"]["reason"]
    empty = scores(np.zeros((8, 0)), np.zeros((8, 0)), _accuracies(8), _accuracies(8), boots=5)
    assert empty["forgetting_quality"]["reason"] == empty["ulira_auc"]["reason"] == (
        "no forget examples")


def test_with_forgetting_scores_every_method_and_retrain_is_the_reference():
    n = 8
    retrained = _outputs(n, 5)
    confidences = [{"retrained": retrained[i].tolist(), "original": (retrained[i] + 9).tolist(),
                    "ga": _outputs(n, 6)[i].tolist()} for i in range(n)]
    rows = [{name: dict(_accuracies(1)[0]) for name in ("original", "retrain", "ga")}
            for _ in range(n)]
    out = {"methods": {name: {} for name in ("original", "retrain", "ga")}}
    got = with_forgetting(out, rows, _accuracies(n), confidences)
    fq = {name: row["forgetting_quality"]["value"] for name, row in got["methods"].items()}
    assert fq["original"] == 0.0 and fq["retrain"] > 0
    assert got["methods"]["retrain"] == {**got["forgetting"]["reference"]}
    assert got["forgetting"]["models_per_side"] == 4 and len(got["forgetting"]["buckets"]) == 4


def _stored(r: int, run: str, method_shift: float) -> tuple[str, str, dict, dict]:
    """A finished store run of replicate r whose unlearned outputs are the retrained ones'
    distribution moved by `method_shift`."""
    retrained = _outputs(6, 7)[r]
    acc = _accuracies(1)[0]
    config = {"seed": 0, "ga": {"lr": method_shift}} | ({"replicate": r} if r else {})
    return run, "ga", config, {
        "params": {"lr": method_shift}, "config": config, "checkpoints": {"replicate": r},
        "models": {"original": acc, "retrained": acc, "unlearned": acc},
        "seconds": {"original": 1.0, "retrained": 1.0, "unlearn": 0.1},
        "forget_confidence": {"retrained": retrained.tolist(),
                              "original": (retrained + 20).tolist(),
                              "unlearned": _outputs(6, 8, method_shift)[r].tolist()}}


def test_stored_runs_carry_the_scores_of_each_setting_and_of_the_baselines():
    from dimalign.replicates import baseline_rows, setting_rows

    runs = [_stored(r, f"{shift}-{r}", shift) for shift in (0.0, 3.0) for r in range(6)]
    rows = {row["params"]["lr"]: row["forgetting"] for row in setting_rows(runs, ["acc_forget"])}
    baselines, _ = baseline_rows([(run[2], run[3]) for run in runs], ["acc_forget"])
    ref = next(b for b in baselines if b["method"] == "retrained")["forgetting"]
    original = next(b for b in baselines if b["method"] == "original")["forgetting"]
    fq = ref["forgetting_quality"]["value"]
    assert rows[3.0]["forgetting_quality"]["value"] < fq
    assert abs(rows[0.0]["forgetting_quality"]["value"] - fq) < 0.05
    assert original["forgetting_quality"]["value"] == 0.0
    older = {**runs[0][3]}
    older.pop("forget_confidence")  # saved before results kept them
    assert setting_rows([(*runs[0][:3], older)], ["acc_forget"])[0]["forgetting"] is None


def test_two_experiments_baselines_never_share_their_memoised_scores():
    """Results as the store keeps them (`job._summary`: no checkpoints, no config): the
    baselines of two experiments are scored apart. The memo's key was once made of those
    missing fields, so the second experiment drew the first one's scores."""
    from dimalign.job import _summary
    from dimalign.replicates import baseline_rows

    def experiment(shift: float) -> list[tuple[dict, dict]]:
        runs = [_stored(r, f"{shift}-{r}", 0.0) for r in range(6)]
        for _, _, _, result in runs:  # another experiment: its original forgets otherwise
            result["forget_confidence"]["original"] = [
                v - shift for v in result["forget_confidence"]["original"]]
        return [(config, _summary(result)) for _, _, config, result in runs]

    first, second = experiment(0.0), experiment(19.5)
    assert "checkpoints" not in second[0][1] and "config" not in second[0][1]
    fq = [baseline_rows(p, ["acc_forget"])[0][0]["forgetting"]["forgetting_quality"]["value"]
          for p in (first, second)]
    assert fq[0] == 0.0 and fq[1] > fq[0]  # the second's original is near the retrained one


def test_a_run_keeps_each_models_forget_confidences(tiny_cfg, tiny_baselines):
    from dimalign.metrics import model_outputs
    from dimalign.runner import run_experiment

    result = run_experiment(tiny_cfg, "retrain")
    kept = result["forget_confidence"]
    exp = tiny_baselines.experiment
    assert set(kept) == {"original", "retrained"} and len(kept["retrained"]) == exp.forget.sum()
    logits = model_outputs(tiny_baselines.retrained, exp).logits_train[exp.forget].numpy()
    direct = logit_confidence(logits, exp.y_train[exp.forget].numpy())
    assert kept["retrained"] == pytest.approx(direct, abs=1e-4)
