"""The metric table: every entry well-formed, exactly what `evaluate` reports in each scenario
(so the table cannot drift from the computation), one gap to retrained, avg-gap from the
table, and the places that read it."""

import dataclasses
import math

import pytest

from dimalign import metric_table
from dimalign.config import SCENARIO_KINDS, EvalConfig, build_config
from dimalign.metric_table import (
    METRICS,
    PLACES,
    SCENARIOS,
    TABLE,
    TIME_FRACTION,
    Metric,
    avg_gap_keys,
    for_scenario,
    gap_to_retrained,
    ordered,
    per_stratum,
    shown,
)
from dimalign.metrics import GAP_KEYS, avg_gap, evaluate, evaluate_strata

SMALL = EvalConfig(mia_samples=100, nmi_samples=200, cka_samples=200, feature_samples=20)
NAN = float("nan")


@pytest.mark.parametrize("metric", [*METRICS, TIME_FRACTION], ids=lambda m: m.name)
def test_every_entry_has_a_title_a_one_line_description_a_range_and_places(metric):
    assert metric.name.isidentifier() and metric.title.strip()
    assert metric.description.strip() and "\n" not in metric.description
    low, high = metric.range
    assert low is None or high is None or low < high
    assert metric.better in ("higher", "lower", None)
    assert set(metric.shown) <= set(PLACES) and set(metric.scenarios) <= SCENARIOS
    assert not (metric.distance and metric.in_avg_gap)  # avg-gap averages gaps, not distances


def test_the_table_knows_the_config_scenarios_and_every_place_shows_something():
    assert set(SCENARIO_KINDS) == SCENARIOS
    assert len(TABLE) == len(METRICS) and list(TABLE) == [m.name for m in METRICS]
    assert all(shown(place) for place in PLACES)
    assert TIME_FRACTION.name not in TABLE  # computed by the runner, not by evaluate


@pytest.mark.parametrize("change, words", [
    ({"better": "up"}, "better must be"),
    ({"shown": frozenset({"nowhere"})}, "unknown places"),
    ({"group": "misc"}, "group 'misc'"),
    ({"low": 1.0, "high": 0.0}, "range low"),
    ({"scenarios": frozenset({"subset"})}, "unknown scenarios"),
])
def test_a_malformed_entry_is_refused_with_a_readable_error(change, words):
    with pytest.raises(ValueError, match=words):
        dataclasses.replace(TABLE["acc_forget"], **change)
    with pytest.raises(ValueError, match="unknown place"):
        shown("sidebar")


@pytest.fixture(scope="module", params=["digits-class", "digits-random", "digits-backdoor"])
def evaluated(request, tiny_baselines):
    """Every metric of the tiny baselines of one scenario, with small subsamples."""
    from dimalign.train import get_baselines

    cfg = build_config(request.param, ["train.epochs=2"])
    b = tiny_baselines if request.param == "digits-class" else get_baselines(cfg)
    metrics, outputs = evaluate({"original": b.original, "retrained": b.retrained},
                                b.experiment, SMALL, seed=0)
    return cfg.scenario.kind, metrics, evaluate_strata(outputs, metrics, b.experiment, SMALL)


def test_evaluate_reports_exactly_the_table_entries_of_its_scenario_in_table_order(evaluated):
    kind, metrics, strata = evaluated
    # a random forget set's strata: exactly the table's per-stratum entries
    if kind == "random":
        assert list(strata["original"]["hard"]) == list(per_stratum())
        assert set(strata["retrained"]["easy"]) == set(per_stratum()) - {"avg_gap"}
    else:
        assert strata is None
    # the original model has every metric (CKA to both, avg-gap to the retrained model)
    assert list(metrics["original"]) == list(for_scenario(kind))
    assert set(metrics["retrained"]) == set(for_scenario(kind)) - {"avg_gap"}


def test_evaluated_values_lie_in_their_table_ranges(evaluated):
    _, metrics, _ = evaluated
    for row in metrics.values():
        for key, value in row.items():
            low, high = TABLE[key].range
            if not math.isnan(value):
                assert low is None or value >= low - 1e-9, (key, value)
                assert high is None or value <= high + 1e-9, (key, value)


def test_gap_to_retrained_is_signed_and_none_where_a_side_is_missing():
    assert gap_to_retrained("acc_forget", 0.3, 0.1) == pytest.approx(0.2)
    assert gap_to_retrained("acc_test", 0.7, 0.9) == pytest.approx(-0.2)
    assert gap_to_retrained("acc_test", 0.9, 0.9) == 0.0
    for value, ref in ((None, 0.5), (0.5, None), (NAN, 0.5), (0.5, NAN), (None, None)):
        assert gap_to_retrained("mia", value, ref) is None
    assert gap_to_retrained("loss_total", 2.0, 0.5) == 1.5  # a key the table does not know
    assert gap_to_retrained("mia_sd", 0.02, 0.01) is None  # a spread has no gap


def test_a_spread_is_shown_beside_its_metric_wherever_that_is_shown_on_the_dashboard():
    spread = TABLE["mia_sd"]
    assert spread.spread_of == "mia" and not spread.in_avg_gap
    dashboard = {"compare", "experiment", "unlearn"}
    assert dashboard & TABLE["mia"].shown == dashboard & spread.shown
    for place in dashboard:
        keys = shown(place)
        assert keys.index("mia_sd") == keys.index("mia") + 1


def test_a_distance_passes_through_as_its_own_gap():
    assert gap_to_retrained("avg_gap", 0.25, None) == 0.25  # the retrained row has none
    assert gap_to_retrained("avg_gap", 0.25, 0.1) == 0.25
    assert gap_to_retrained("avg_gap", None, 0.1) is None
    assert gap_to_retrained("avg_gap", NAN, None) is None


def test_gaps_of_saved_rows_use_the_one_gap_function():
    from dimalign.runner import gaps_to_retrained

    keys = ["acc_forget", "da", "avg_gap", "mia_sd"]
    rows = [{"run": "original", "method": "original", "acc_forget": 1.0, "da": None,
             "avg_gap": 0.4, "time_fraction": 1.5, "mia_sd": 0.01},
            {"run": "retrained", "method": "retrained", "acc_forget": 0.0, "da": 0.9,
             "avg_gap": None, "time_fraction": 1.0, "mia_sd": 0.0},
            {"run": "r1", "method": "muda", "acc_forget": 0.25, "da": 0.95, "avg_gap": 0.05,
             "time_fraction": 0.1, "mia_sd": 0.03}]
    gaps = gaps_to_retrained(rows, keys)
    assert [g["acc_forget"] for g in gaps] == [1.0, 0.0, 0.25]
    assert gaps[0]["da"] is None and gaps[1]["da"] == 0.0
    assert gaps[2]["da"] == pytest.approx(0.05)
    assert [g["avg_gap"] for g in gaps] == [0.4, None, 0.05]
    assert [g["time_fraction"] for g in gaps] == [1.5, 1.0, 0.1]  # not a metric: unchanged
    assert [g["mia_sd"] for g in gaps] == [0.01, 0.0, 0.03]  # the gap's spread too


def test_avg_gap_averages_exactly_the_table_entries_marked_for_it():
    assert GAP_KEYS == avg_gap_keys() == tuple(m.name for m in METRICS if m.in_avg_gap)
    reference = {m.name: 0.5 for m in METRICS if not m.distance}
    row = {k: 0.9 for k in reference}  # far off on everything ...
    offsets = {k: 0.01 * (i + 1) * (-1) ** i for i, k in enumerate(GAP_KEYS)}
    row.update({k: 0.5 + d for k, d in offsets.items()})  # ... but the avg-gap entries
    expected = sum(abs(d) for d in offsets.values()) / len(offsets)
    assert avg_gap(row, reference) == pytest.approx(expected)
    row[GAP_KEYS[0]] = NAN  # a missing entry is skipped
    rest = [abs(d) for k, d in offsets.items() if k != GAP_KEYS[0]]
    assert avg_gap(row, reference) == pytest.approx(sum(rest) / len(rest))
    assert math.isnan(avg_gap({}, reference))


def test_ordered_puts_table_keys_in_display_order_and_keeps_the_others_after():
    assert ordered(["avg_gap", "seconds", "da", "acc_retain", "da"]) == [
        "acc_retain", "da", "avg_gap", "seconds"]


def test_the_time_fraction_has_one_key_and_one_title_in_rows_and_the_chart():
    from dimalign.plots import tradeoff_figure
    from dimalign.runner import comparison_rows

    def result(acc_forget, seconds):
        return {"models": {"original": {"acc_forget": 1.0, "avg_gap": 0.5},
                           "retrained": {"acc_forget": 0.0},
                           "unlearned": {"acc_forget": acc_forget, "avg_gap": 0.1}},
                "seconds": {"original": 10.0, "retrained": 8.0, "unlearn": seconds}}

    rows = comparison_rows([("r1", "muda", result(0.1, 2.0))], ["acc_forget", "avg_gap"])
    assert [r[TIME_FRACTION.name] for r in rows] == [1.25, 1.0, 0.25]
    fig = tradeoff_figure(rows, ["acc_forget", "avg_gap"], rows[1])
    assert fig.layout.xaxis2.title.text == TIME_FRACTION.title
    points = [(t.x[0], t.y[0]) for t in fig.data if t.mode == "markers+text"]
    assert points == [(1.25, 0.5), (1.0, 0.0), (0.25, 0.1)]
    profile = next(t for t in fig.data if t.name == "muda r1")
    assert list(profile.x) == ["acc_forget"]  # avg-gap is a distance: not on the profile
    assert profile.y[0] == pytest.approx(0.1)


def test_a_new_table_entry_reaches_the_places_that_show_it(monkeypatch):
    """What docs/architecture.md promises: adding a metric touches the table, its computation and
    its test; the effect panel, the tables and the gaps pick it up from the table."""
    from dimalign.steer import effect

    toy = Metric("toy", "Toy", "a metric only this test computes", "representation",
                 better="lower", shown=frozenset({"effect", "compare", "cli"}))
    monkeypatch.setattr(metric_table, "METRICS", (*METRICS, toy))
    monkeypatch.setitem(TABLE, "toy", toy)
    assert shown("compare")[-1] == shown("cli")[-1] == "toy"
    row = next(r for r in effect({"toy": 0.2}, {"toy": 0.3}) if r["key"] == "toy")
    assert row["title"] == "Toy" and row["better"] is True
    assert ordered(["toy", "acc_retain"]) == ["acc_retain", "toy"]


def test_the_effect_panel_takes_titles_and_directions_from_the_table():
    from dimalign.steer import effect

    before = {k: 0.5 for k in shown("effect")}
    after = {k: 0.6 for k in shown("effect")}
    rows = effect(after, before)
    assert [r["key"] for r in rows] == list(shown("effect"))
    for r in rows:
        metric = TABLE[r["key"]]
        assert r["title"] == metric.title
        assert r["better"] is {"higher": True, "lower": False, None: None}[metric.better]
