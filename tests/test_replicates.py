"""Replicates: mean and sd, gaps paired within a replicate, the noise floor, and what a
replicate changes (initialisation and batches) and keeps (split, forget set, replicate 0's
keys)."""

import json
import math

import pytest
from conftest import TINY

from dimalign.config import build_config
from dimalign.data import build_experiment
from dimalign.errors import ConfigError
from dimalign.metric_table import TIME_FRACTION
from dimalign.replicates import (
    aggregate,
    baseline_rows,
    best_row,
    mean_sd,
    noise_floor,
    setting_rows,
    summarize,
)
from dimalign.runner import result_key
from dimalign.sweep import plan
from dimalign.train import cache_key, experiment_key

RETRAINED_FORGET = [0.0, 0.2, 0.5]  # each replicate's retrained model: far apart on purpose
OFFSETS = [0.01, -0.02, 0.03]  # each unlearned model's gap to its own replicate's retrained


def test_mean_and_sd_are_the_sample_statistics_of_the_values_present():
    assert mean_sd([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, math.sqrt(7 / 3)))
    assert mean_sd([3.0, None, float("nan")]) == (3.0, 0.0)
    assert mean_sd([None]) == (None, None)
    stats = summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}], ["a", "b"])
    assert stats["mean"] == {"a": 2.0, "b": 2.0}
    assert stats["sd"]["a"] == pytest.approx(math.sqrt(2)) and stats["sd"]["b"] == 0.0


def _compare_result(r: int) -> tuple[dict, dict]:
    """A synthetic `compare` result of replicate r and its retrained metrics."""
    retrained = {"acc_forget": RETRAINED_FORGET[r], "acc_retain": 0.9, "acc_test": 0.8,
                 "mia": 0.5}
    unlearned = {**retrained, "acc_forget": RETRAINED_FORGET[r] + OFFSETS[r],
                 "avg_gap": abs(OFFSETS[r]) / 4}
    rows = {"original": {"acc_forget": 1.0, "avg_gap": 0.3, "seconds": 10.0,
                         TIME_FRACTION.name: 1.0 + r},
            "muda": {**unlearned, "seconds": 1.0, TIME_FRACTION.name: 0.1 * (r + 1),
                     "gaps": {"acc_forget": OFFSETS[r]}}}
    return {"preset": "p", "methods": rows, "retrained_seconds": 10.0}, retrained


def test_aggregate_pairs_each_model_with_its_own_replicates_retrained_model():
    results, retrained = zip(*(_compare_result(r) for r in range(3)), strict=True)
    out = aggregate(list(results), list(retrained))
    muda = out["methods"]["muda"]
    assert out["replicates"] == 3
    assert muda["acc_forget"] == results[0]["methods"]["muda"]["acc_forget"]  # today's fields
    values = [RETRAINED_FORGET[r] + OFFSETS[r] for r in range(3)]
    assert muda["mean"]["acc_forget"] == pytest.approx(sum(values) / 3)
    assert muda["sd"]["acc_forget"] == pytest.approx(mean_sd(values)[1])
    assert muda["mean"][TIME_FRACTION.name] == pytest.approx(0.2)
    assert muda["sd"][TIME_FRACTION.name] == pytest.approx(0.1)
    assert muda["mean"]["avg_gap"] == pytest.approx(sum(abs(o) for o in OFFSETS) / 12)
    # paired within its replicate: |offset|, not the distance to another replicate's model
    assert muda["mean_abs_gap"]["acc_forget"] == pytest.approx(0.02)
    floor = out["noise_floor"]
    assert floor["acc_forget"] == pytest.approx((0.2 + 0.5 + 0.3) / 3)
    assert floor["acc_retain"] == 0.0
    assert floor["avg_gap"] == pytest.approx((0.2 + 0.5 + 0.3) / 3 / 4)


def _stored(run: str, r: int, knob: float = 1.0) -> tuple[str, str, dict, dict]:
    """A synthetic finished store run on replicate r: id, method, config, result."""
    result, retrained = _compare_result(r)
    config = {"seed": 0, "muda": {"lambda_da": knob}} | ({"replicate": r} if r else {})
    return run, "muda", config, {"params": {"lambda_da": knob},
            "models": {"original": {"acc_forget": 1.0}, "retrained": retrained,
                       "unlearned": {k: v for k, v in result["methods"]["muda"].items()
                                     if k not in ("seconds", TIME_FRACTION.name, "gaps")}},
            "seconds": {"original": 10.0, "retrained": 10.0, "unlearn": 1.0 * (r + 1)}}


def test_stored_runs_group_by_setting_and_pair_within_their_replicate():
    runs = [_stored("c2", 2), _stored("a0", 0), _stored("b1", 1), _stored("x0", 0, knob=2.0)]
    rows = setting_rows(runs, ["acc_forget", "avg_gap"])
    one = next(r for r in rows if r["params"]["lambda_da"] == 1.0)
    two = next(r for r in rows if r["params"]["lambda_da"] == 2.0)
    assert one["runs"] == {0: "a0", 1: "b1", 2: "c2"} and one["run"] == "a0"
    assert one["replicates"] == 3 and two["replicates"] == 1
    assert one["gap_mean"]["acc_forget"] == pytest.approx(sum(OFFSETS) / 3)
    assert one["gap_sd"]["acc_forget"] == pytest.approx(mean_sd(OFFSETS)[1])
    assert one["abs_gap"]["acc_forget"] == pytest.approx(0.02)
    assert one["mean"][TIME_FRACTION.name] == pytest.approx(0.2)
    assert two["sd"]["acc_forget"] == 0.0
    baselines, floor = baseline_rows([(r[2], r[3]) for r in runs], ["acc_forget"])
    retrained = next(b for b in baselines if b["method"] == "retrained")
    assert retrained["replicates"] == 3 and retrained["gap_mean"]["acc_forget"] == 0.0
    assert floor["acc_forget"] == pytest.approx(1.0 / 3)


def test_the_noise_floor_is_zero_for_identical_replicates_and_positive_otherwise():
    model = {"acc_forget": 0.1, "acc_retain": 0.9, "acc_test": 0.8, "mia": 0.4, "da": 0.9}
    same = noise_floor([model, dict(model), dict(model)], list(model))
    assert same and all(v == 0.0 for v in same.values())
    other = noise_floor([model, {**model, "mia": 0.6}], list(model))
    assert other["mia"] == pytest.approx(0.2) and other["avg_gap"] == pytest.approx(0.05)
    assert all(v is None for v in noise_floor([model], list(model)).values())


def test_a_replicate_keeps_the_split_and_changes_the_seeds_replicate_0_keeps_its_keys():
    cfg = build_config("digits-random", TINY)
    again = build_config("digits-random", [*TINY, "replicate=0"])
    one = cfg.with_replicate(1)
    assert "replicate" not in cfg.to_dict() and one.to_dict()["replicate"] == 1
    assert cache_key(again, "retrained") == cache_key(cfg, "retrained")
    assert "replicate" not in cache_key(cfg, "retrained")
    assert result_key(again, "muda") == result_key(cfg, "muda")
    assert experiment_key(one) != experiment_key(cfg)
    assert one.train_seed != cfg.train_seed == cfg.seed
    a, b = build_experiment(cfg), build_experiment(one)
    assert (a.forget == b.forget).all() and (a.y_test == b.y_test).all()


def test_sweep_plans_every_combination_on_every_replicate():
    combos, configs = plan("digits-class", "muda", ["muda.lambda_da=1,2"], TINY, replicates=2)
    assert [(c.replicate, c.methods["muda"]["lambda_da"]) for c in configs] == [
        (0, 1.0), (0, 2.0), (1, 1.0), (1, 2.0)]
    assert all(c[: len(TINY)] == TINY for c in combos)


def test_a_sweep_over_another_methods_knob_is_refused_before_anything_is_queued(cli):
    from dimalign.store import Store

    before = len(Store().runs())
    ran = cli("sweep", "--method", "ga", "--set", *TINY, "--grid", "muda.lambda_da=1,2")
    assert ran.returncode == 2 and "muda.lambda_da" in ran.stderr and "ga" in ran.stderr
    assert len(Store().runs()) == before
    with pytest.raises(ConfigError, match="knob of salun"):  # a plain key still sweeps
        plan("digits-class", "rl", ["seed=1,2", "salun.epochs=1,2"], TINY)
    assert len(plan("digits-class", "rl", ["seed=1,2", "rl.epochs=1,2"], TINY)[1]) == 4


def test_compare_replicates_json_adds_mean_sd_and_a_positive_noise_floor(cli, capsys,
                                                                         tiny_baselines):
    from dimalign.cli import _print_replicates

    args = ("compare", "--set", *TINY, "--set", "ga.epochs=1", "--methods", "retrain,ga")
    bad = cli(*args, "--replicates", "0")
    assert bad.returncode == 2 and "--replicates" in bad.stderr
    ran = cli(*args, "--replicates", "2", "--json")
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    ga = out["methods"]["ga"]
    assert out["replicates"] == 2 and "replicate" not in out["config"]  # replicate 0's
    assert {"acc_forget", "gaps", TIME_FRACTION.name} <= set(ga)  # today's fields stay
    for key in ("acc_forget", "avg_gap", TIME_FRACTION.name):
        assert ga["mean"][key] is not None and ga["sd"][key] is not None
    floor = out["noise_floor"]
    assert floor["avg_gap"] > 0 and floor["acc_retain"] > 0  # two retrainings differ
    assert out["methods"]["retrain"]["mean_abs_gap"]["acc_retain"] == 0  # its own replicate's
    # the challenge's scores: two replicates make one model a side, too few for its ε (a
    # reason, not a number) but a pair for ToW; retrain is the reference
    assert out["forgetting"]["models_per_side"] == 1
    assert ga["forgetting_quality"]["value"] is None
    assert "6 replicates" in ga["forgetting_quality"]["reason"]
    assert "8 replicates" in ga["ulira_auc"]["reason"]
    assert 0 <= ga["tow"]["value"] <= 1 and ga["tow"]["sd"] is not None
    assert out["methods"]["retrain"]["tow"] == out["forgetting"]["reference"]["tow"]
    _print_replicates(out)
    table = capsys.readouterr().out
    assert "noise floor" in table and "±" in table
    assert "forgetting_quality" in table and "needs at least 6 replicates" in table



def test_sweep_replicates_queues_each_combination_on_each_replicate(cli):
    from dimalign.jobs import cancel
    from dimalign.store import Store

    ran = cli("sweep", "--method", "ga", "--set", *TINY, "--grid", "ga.lr=0.001,0.01",
              "--replicates", "2", "--owner", "replicator")
    assert ran.returncode == 0, ran.stderr
    ids = ran.stdout.split()
    store = Store()
    runs = [store.get(i) for i in ids]
    for run in runs:  # what is queued is the point here, not the runs: stop them
        cancel(store, run.id)
    assert sorted((r.config.get("replicate", 0), r.config["ga"]["lr"]) for r in runs) == [
        (0, 0.001), (0, 0.01), (1, 0.001), (1, 0.01)]
    assert len({r.experiment for r in runs}) == 2  # each replicate its own baselines
    bad = cli("sweep", "--method", "ga", "--grid", "ga.lr=0.1", "--replicates", "0")
    assert bad.returncode == 2 and "--replicates" in bad.stderr


def test_the_best_setting_is_the_lowest_avg_gap_or_the_highest_final_score():
    def row(name, gap, final):
        forgetting = None if final is None else {"final_score": {"value": final, "sd": 0.01}}
        return {"method": name, "mean": {"avg_gap": gap}, "forgetting": forgetting}

    rows = [row("a", 0.10, 0.20), row("b", 0.05, None), row("c", None, 0.30), row("d", 0.2, 0.1)]
    assert best_row(rows)["method"] == "b"  # lowest avg-gap; one without it cannot be best
    assert best_row(rows, "final_score")["method"] == "c"  # highest final score
    assert best_row([row("x", None, None)]) is None
    assert best_row([row("x", 0.1, None)], "final_score") is None
