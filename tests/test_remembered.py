"""Which forget samples are still remembered (`dimalign.remembered`): per-sample values and
their scores against retraining, on synthetic values with known answers."""

import math

import numpy as np
import pytest

from dimalign.remembered import (
    against_one,
    against_replicates,
    fixed_sd,
    output_values,
    ranked,
    verdicts,
)


def test_output_values_are_the_margin_confidence_and_logit_scaled_confidence_on_the_label():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    out = output_values(logits, np.array([0, 2]))
    assert out["margin"] == pytest.approx([1.0, -2.0])
    p0 = math.exp(2) / (math.exp(2) + 1 + math.e)
    p1 = math.e / (1 + math.exp(3) + math.e)
    assert out["confidence"] == pytest.approx([p0, p1])
    assert out["membership"] == pytest.approx([math.log(p0 / (1 - p0)),
                                               math.log(p1 / (1 - p1))])


def test_a_hand_computed_z_and_percentile_point_toward_the_original():
    # two retrained models, two samples: means (1, 2), variances (2, 2): sd √2 for both
    retrained = np.array([[0.0, 1.0], [2.0, 3.0]])
    unlearned = np.array([1 + 2 * math.sqrt(2), 2.0])
    original = np.array([5.0, 0.0])  # sample 0: the original above; sample 1: below
    out = against_replicates(unlearned, original, retrained)
    assert out["sd"] == pytest.approx(math.sqrt(2)) and list(out["mean"]) == [1.0, 2.0]
    assert out["z"] == pytest.approx([2.0, 0.0])
    # sample 0 lies beyond both toward the original; sample 1 between them (one less far)
    assert list(out["percentile"]) == [1.0, 0.5]
    # an unlearned value equal to one of them ties it: half a model
    tie = against_replicates(np.array([2.0, 3.0]), original, retrained)["percentile"]
    assert list(tie) == [0.75, 0.25]
    with pytest.raises(ValueError, match="at least 2"):
        against_replicates(unlearned, original, retrained[:1])


def test_an_unlearned_model_like_retraining_scores_about_zero_and_a_shifted_one_its_shift():
    rng = np.random.default_rng(0)
    n, samples = 16, 4000
    centre = rng.normal(size=samples)
    retrained = centre + rng.normal(size=(n, samples))  # sd 1 around each sample's centre
    original = centre + 5.0  # every sample: the original far above
    like = against_replicates(centre + rng.normal(size=samples), original, retrained)
    assert abs(like["z"].mean()) < 0.1 and abs(like["z"].std() - 1) < 0.1
    assert abs(like["percentile"].mean() - 0.5) < 0.03
    assert like["sd"] == pytest.approx(1.0, abs=0.05)
    toward = against_replicates(centre + 3 + rng.normal(size=samples), original, retrained)
    assert toward["z"].mean() == pytest.approx(3.0, abs=0.15)
    assert (toward["percentile"] > 0.9).mean() > 0.8
    past = against_replicates(centre - 3 + rng.normal(size=samples), original, retrained)
    assert past["z"].mean() == pytest.approx(-3.0, abs=0.15)  # overshoot: not remembered


def test_identical_retrained_models_still_give_a_finite_z_and_one_run_gives_a_signed_gap():
    same = np.zeros((3, 2))
    assert fixed_sd(same) == pytest.approx(1e-6)
    assert against_replicates(np.zeros(2), np.ones(2), same)["z"] == pytest.approx([0, 0])
    gap = against_one(np.array([0.4, 0.4, 0.1]), np.array([0.9, 0.0, 0.9]),
                      np.array([0.2, 0.2, 0.2]))
    assert gap == pytest.approx([0.2, -0.2, -0.1])  # toward the original: positive


def values(u, o, r) -> dict:
    def model(x):
        x = np.asarray(x, dtype=float)
        return {"residual": x, "margin": x, "confidence": x, "membership": -x}

    return {"original": model(o), "retrained": model(r), "unlearned": model(u)}


def test_verdicts_and_the_ranking_most_remembered_first_missing_scores_last():
    vals = values([0.5, 0.9, math.nan, 0.3], [1.0, 1.0, 1.0, 1.0], [0.2, 0.2, 0.2, 0.2])
    one = verdicts(vals, [])
    assert one["kind"] == "single" and one["retrained_models"] == 1
    assert one["residual"]["score"][:2] == pytest.approx([0.3, 0.7])
    rows = ranked([10, 11, 12, 13], [3, 3, 3, 3], vals, one)
    assert [r["id"] for r in rows] == [11, 10, 13, 12]  # NaN (no score) last
    assert rows[0]["score"] == pytest.approx(0.7) and rows[-1]["score"] is None
    assert rows[0]["models"]["unlearned"] == {"residual": 0.9, "margin": 0.9,
                                              "confidence": 0.9, "membership": -0.9}
    assert rows[0]["percentile"] is None and "reference" not in rows[0]
    assert rows[0]["scores"]["membership"] == pytest.approx(0.7)  # toward the original's −1
    other = values([0, 0, 0, 0], [0, 0, 0, 0], [0.4, 0.4, 0.4, 0.4])["retrained"]
    many = verdicts(vals, [other])
    assert many["kind"] == "replicates" and many["retrained_models"] == 2
    rows = ranked([10, 11, 12, 13], [3, 3, 3, 3], vals, many)
    assert rows[0]["id"] == 11 and rows[0]["reference"]["residual"] == pytest.approx(0.3)
    assert rows[0]["percentile"] == 1.0
    assert rows[-1]["id"] == 12 and rows[-1]["percentile"] is None  # no value, no percentile
    no_unlearned = {k: v for k, v in vals.items() if k != "unlearned"}
    assert verdicts(no_unlearned, [])["kind"] is None
    assert ranked([10], [3], {m: {q: v[q][:1] for q in v} for m, v in no_unlearned.items()},
                  verdicts(no_unlearned, []))[0]["score"] is None
