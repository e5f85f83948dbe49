"""Forget-set difficulty (dimalign/strata.py): a random forget set split into easy, medium and
hard thirds by the original model's margin (or the original-retrained confidence gap), every
forget metric per stratum in a run's result and in `compare`, and the challenge's scores per
stratum."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from dimalign.config import build_config
from dimalign.errors import ConfigError
from dimalign.metric_table import per_stratum
from dimalign.runner import FORGET_SCORED
from dimalign.strata import STRATA, difficulty, tertiles, with_strata
from dimalign.train import get_baselines

# the tiny baselines, and an evaluation that costs little (eval settings key no model)
RANDOM = ["--preset", "digits-random",
          *(a for v in (*TINY, "ga.epochs=1", "eval.mia_repeats=2", "eval.nmi_samples=100",
                        "eval.cka_samples=100") for a in ("--set", v))]


def test_tertiles_partition_by_rank_hardest_last_ties_by_position():
    hardness = np.array([5.0, 1.0, 3.0, 3.0, 9.0, 0.0, 7.0])
    strata = tertiles(hardness)
    assert strata.tolist() == [1, 0, 0, 1, 2, 0, 2]  # sizes 3, 2, 2: the first ones larger
    assert strata[2] < strata[3]  # tied: the earlier one is the easier
    assert max(hardness[strata == 0]) <= min(hardness[strata == 1])
    assert max(hardness[strata == 1]) <= min(hardness[strata == 2])


def test_difficulty_is_the_negated_margin_or_the_confidence_gap():
    original = np.array([[4.0, 1.0, 0.0], [0.5, 0.0, 0.2], [0.0, 2.0, 3.0]])
    retrained = np.array([[3.0, 1.0, 0.0], [0.0, 0.0, 0.2], [0.0, 2.0, 3.0]])
    labels = np.array([0, 0, 1])
    assert difficulty("margin", original, labels) == pytest.approx([-3.0, -0.3, 1.0])
    def p(z):  # softmax probability of each row's label
        e = np.exp(z - z.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True))[np.arange(len(z)), labels]

    gap = p(original) - p(retrained)
    assert difficulty("gap", original, labels, retrained) == pytest.approx(gap)
    assert gap[2] == 0 and gap[0] > 0  # the same logits: nothing memorised
    with pytest.raises(ValueError, match="retrained"):
        difficulty("gap", original, labels)


def test_stratify_by_is_a_random_scenario_setting_left_out_of_the_identity_by_default():
    plain = build_config("digits-random")
    assert plain.scenario.stratify_by == "margin"
    assert "stratify_by" not in plain.to_dict()["scenario"]  # older runs keep their keys
    gap = build_config("digits-random", ["scenario.stratify_by=gap"])
    assert gap.to_dict()["scenario"]["stratify_by"] == "gap"
    with pytest.raises(ConfigError, match="margin, gap"):
        build_config("digits-random", ["scenario.stratify_by=loss"])
    with pytest.raises(ConfigError, match="random only"):
        build_config("digits-class", ["scenario.stratify_by=gap"])


def test_compare_replicates_json_gives_every_forget_metric_and_score_per_stratum(cli):
    ran = cli("compare", *RANDOM, "--methods", "retrain,ga", "--replicates", "2", "--json")
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    block = out["strata"]
    assert block["by"] == "margin" and block["replicate"] == 0 and block["names"] == list(STRATA)
    assert sum(block["sizes"].values()) == round(0.1 * 1253)  # digits: 1253 training images
    keys = set(per_stratum())
    for name, row in out["methods"].items():
        assert set(row["strata"]) == set(STRATA)
        for cell in row["strata"].values():
            assert set(cell["mean"]) == set(cell["sd"]) == keys
            assert cell["mean"]["acc_forget"] is not None and cell["sd"]["mia"] is not None
            assert cell["forgetting_quality"]["value"] is None  # 1 model a side: a reason
            assert "6 replicates" in cell["forgetting_quality"]["reason"]
            assert 0 <= cell["tow"]["value"] <= 1 and cell["tow"]["sd"] is not None
        if name == "retrain":  # retraining paired with its own replicate's retraining
            assert all(c["mean_abs_gap"]["acc_forget"] == 0 for c in row["strata"].values())
    for name in STRATA:
        assert block["noise_floor"][name]["acc_forget"] is not None
        assert set(block["between_methods"][name]) >= {"acc_forget", "avg_gap", "tow"}
        assert block["between_methods"][name]["avg_gap"] is None  # one unlearning method


def test_the_strata_partition_the_forget_set_by_margin_and_are_replicate_0s():
    """The strata of every replicate are replicate 0's: its original model's margin splits
    the forget set into three thirds, hard the smallest margins. (After the compare above,
    replicate 1's baselines are cached.)"""
    from dimalign.features import forward_all
    from dimalign.remembered import output_values

    cfg = build_config("digits-random", TINY)
    b = get_baselines(cfg)
    exp, strata = b.experiment, b.experiment.strata
    f = exp.forget
    assert (strata[~f] == -1).all() and set(strata[f].tolist()) == {0, 1, 2}
    sizes = [int((strata == s).sum()) for s in range(3)]
    assert sum(sizes) == int(f.sum()) and max(sizes) - min(sizes) <= 1
    logits = forward_all(b.original, exp.x_train[f], exp.info)[0].double().numpy()
    margin = output_values(logits, exp.y_train[f].numpy())["margin"]
    s = strata[f].numpy()
    assert margin[s == 2].max() <= margin[s == 1].min() <= margin[s == 1].max() \
        <= margin[s == 0].min()
    other = get_baselines(cfg.with_replicate(1))
    assert other.original is not b.original
    assert (other.experiment.strata == strata).all()  # the seed's strata, like D_f
    # by the gap, hard is where the original's confidence most exceeds the retrained model's
    gap_cfg = build_config("digits-random", [*TINY, "scenario.stratify_by=gap"])
    by_gap = get_baselines(gap_cfg).experiment.strata[f].numpy()
    retrained = forward_all(b.retrained, exp.x_train[f], exp.info)[0].double().numpy()
    labels = exp.y_train[f].numpy()
    gap = (output_values(logits, labels)["confidence"]
           - output_values(retrained, labels)["confidence"])
    assert gap[by_gap == 0].max() <= gap[by_gap == 1].min() <= gap[by_gap == 1].max() \
        <= gap[by_gap == 2].min()
    assert (by_gap != s).any()  # another criterion, other strata
    assert (get_baselines(gap_cfg.with_replicate(1)).experiment.strata[f].numpy()
            == by_gap).all()


def test_a_runs_result_splits_each_forget_metric_into_strata_that_add_up_to_it(cli):
    """Per stratum, accuracy and MIA (the same shadow draws and SVCs) weighted by size give
    the whole forget set's; the strata of the result's scored examples are the experiment's;
    `dimalign run` prints them."""
    ran = cli("run", *RANDOM, "--method", "ga", "--json")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    block = result["strata"]
    sizes = np.array([block["sizes"][s] for s in STRATA])
    for model, row in result["models"].items():
        strata = block["models"][model]
        assert set(strata) == set(STRATA)
        expected = set(per_stratum()) - ({"avg_gap"} if model == "retrained" else set())
        assert all(set(strata[s]) == expected for s in STRATA)
        for key in ("acc_forget", "mia"):
            parts = np.array([strata[s][key] for s in STRATA])
            assert (parts * sizes).sum() / sizes.sum() == pytest.approx(row[key], abs=1e-9)
    exp = get_baselines(build_config("digits-random", TINY)).experiment
    assert len(block["forget"]) == min(FORGET_SCORED, int(exp.forget.sum()))
    assert sorted(block["forget"]) == sorted(exp.strata[exp.forget].tolist())
    text = cli("run", *RANDOM, "--method", "ga")
    assert "strata by the original model's margin" in text.stdout and "hard" in text.stdout


def test_per_stratum_forgetting_quality_scores_retraining_at_the_top():
    """Synthetic replicates (3 models a side): `ga` matches retraining on the easy and medium
    examples and sits far from it on the hard ones, `ft` matches it everywhere. ga's
    forgetting quality is retraining's on the easy stratum and 0 on the hard one, where the
    two methods lie apart by retraining's whole score."""
    rng = np.random.default_rng(0)
    n, per = 6, 10
    forget = [0] * per + [1] * per + [2] * per
    retrained = rng.normal(0, 1, (n, 3 * per))
    unlearned = retrained + np.array([0.0] * per + [0.0] * per + [40.0] * per)
    far = retrained + 40.0
    confidences = [{"retrained": retrained[r].tolist(), "ga": unlearned[r].tolist(),
                    "ft": retrained[r].tolist(), "original": far[r].tolist()} for r in range(n)]
    accuracy = {"acc_retain": 1.0, "acc_test": 0.9}
    stratum = {"acc_forget": 0.9, "mia": 0.5, "mia_sd": 0.1, "da": 0.9, "lp_forget": 0.9}
    models = {m: {s: dict(stratum, avg_gap=0.0) for s in STRATA}
              for m in ("original", "ga", "ft")}
    models["retrained"] = {s: dict(stratum) for s in STRATA}
    block = {"by": "margin", "replicate": 0, "names": list(STRATA),
             "sizes": dict.fromkeys(STRATA, per), "range": dict.fromkeys(STRATA),
             "models": models, "forget": forget}
    names = ("original", "retrain", "ga", "ft")
    rows = [{m: dict(accuracy) for m in names}] * n
    out = with_strata({"methods": {m: {} for m in names}}, [block] * n, rows, [accuracy] * n,
                      confidences)
    fq = {m: {s: out["methods"][m]["strata"][s]["forgetting_quality"]["value"] for s in STRATA}
          for m in ("retrain", "ga", "original")}
    assert fq["ga"]["easy"] == fq["retrain"]["easy"] > 0  # the same numbers as retraining
    assert fq["ga"]["hard"] == 0 and fq["original"]["easy"] == 0
    assert all(fq["retrain"][s] >= fq["ga"][s] for s in STRATA)
    apart = out["strata"]["between_methods"]
    assert apart["easy"]["forgetting_quality"] == 0  # ga and ft: both retraining's numbers
    assert apart["hard"]["forgetting_quality"] == fq["retrain"]["hard"] > 0


def test_the_audit_names_each_samples_stratum_and_averages_its_scores_per_stratum():
    import torch

    from dimalign.audit import strata_scores

    strata = torch.tensor([-1, 0, 2, 2, 1, -1])  # training rows; -1: retain
    samples = [{"id": i, "scores": {"residual": score, "membership": None}}
               for i, score in ((2, 3.0), (3, 1.0), (1, -1.0), (4, None))]
    summary = strata_scores(samples, strata)
    assert [s["stratum"] for s in samples] == ["hard", "hard", "easy", "medium"]
    assert summary["hard"] == {"samples": 2, "mean_residual": 2.0, "mean_membership": None}
    assert summary["medium"]["samples"] == 1 and summary["medium"]["mean_residual"] is None


def stored(acc: dict[str, dict[str, float]], replicate: int, mia: float = 0.5) -> dict:
    """A stored result of a random forget set: whole-set metrics per model, and per stratum
    each model's forget accuracy `acc[model][stratum]` (a mia of `mia` everywhere)."""
    whole = {"acc_retain": 0.9, "acc_test": 0.8, "acc_forget": 0.7, "mia": 0.5}
    block = {"by": "margin", "replicate": 0, "names": list(STRATA),
             "sizes": {s: 4 for s in STRATA}, "range": {s: [0.0, 1.0] for s in STRATA},
             "forget": [0, 1, 2] * 4,
             "models": {m: {s: {"acc_forget": v, "mia": mia} for s, v in row.items()}
                        for m, row in acc.items()}}
    return {"models": {m: dict(whole) for m in acc}, "strata": block,
            "seconds": {"original": 2.0, "retrained": 2.0, "unlearn": 0.5},
            "params": {}, "config": {"replicate": replicate}}


def test_strata_rows_are_the_compare_table_per_stratum_with_its_noise_floor():
    from dimalign.strata import strata_csv, strata_rows, stratum_result

    def acc(hard_u: float, hard_r: float) -> dict:
        return {"original": {"easy": 1.0, "medium": 1.0, "hard": 1.0},
                "retrained": {"easy": 0.9, "medium": 0.8, "hard": hard_r},
                "unlearned": {"easy": 0.9, "medium": 0.7, "hard": hard_u}}

    results = [("b1", "ga", {"replicate": 1}, stored(acc(0.6, 0.3), 1)),
               ("b0", "ga", {"replicate": 0}, stored(acc(0.4, 0.5), 0))]
    rows, floors = strata_rows(results, ["acc_forget", "mia", "avg_gap"])
    assert [r["run"] for r in rows] == ["original", "retrained", "b0"]  # lowest replicate
    ga = rows[2]
    assert ga["replicates"] == 2 and set(ga["strata"]) == set(STRATA)
    hard = ga["strata"]["hard"]
    assert hard["mean"]["acc_forget"] == pytest.approx(0.5)  # (0.4 + 0.6) / 2
    assert hard["abs_gap"]["acc_forget"] == pytest.approx(0.2)  # |0.4-0.5|, |0.6-0.3|: 0.1, 0.3
    assert ga["strata"]["easy"]["abs_gap"]["acc_forget"] == pytest.approx(0.0)
    assert floors["hard"]["acc_forget"] == pytest.approx(0.2)  # |0.5 - 0.3|
    assert floors["easy"]["acc_forget"] == pytest.approx(0.0)
    # the whole-set retain and test accuracies stand beside the stratum's forget metrics
    view = stratum_result(results[1][3], "hard")
    assert view["models"]["unlearned"] == {"acc_retain": 0.9, "acc_test": 0.8,
                                           "acc_forget": 0.4, "mia": 0.5}
    assert stratum_result({"models": {}, "seconds": {}}, "hard") is None  # no strata kept
    lines = strata_csv(rows, ["acc_forget"])
    assert len(lines) == 3 * len(STRATA)
    assert {"run": "b0", "method": "ga", "stratum": "hard", "replicates": 2,
            "acc_forget": pytest.approx(0.5), "acc_forget_sd": pytest.approx(0.1414, abs=1e-3),
            "acc_forget_abs_gap": pytest.approx(0.2)} in lines


def test_the_compare_page_shows_a_random_forget_sets_runs_per_stratum():
    """Runs of digits-random keep their strata in the store, and Compare draws every setting
    per stratum of the forget set, the picked metric in each cell, with a CSV of it."""
    from conftest import drain_scheduler
    from streamlit.testing.v1 import AppTest

    from dimalign.jobs import submit
    from dimalign.scheduler import Scheduler, Slot
    from dimalign.store import Store, new_owner_key

    store = Store()
    settings = [RANDOM[i + 1] for i in range(2, len(RANDOM), 2)]
    ids = [submit(store, preset="digits-random", overrides=settings, method=m, owner="strata")
           for m in ("retrain", "ga")]
    scheduler = Scheduler(store, slots=[Slot(None)])
    drain_scheduler(scheduler, lambda: all(store.get(i).terminal for i in ids), 300)
    assert all(store.get(i).status == "done" for i in ids), [store.get(i).error for i in ids]
    assert store.get(ids[1]).result["strata"]["names"] == list(STRATA)

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"),
                           default_timeout=60)
    at.query_params.update(owner="strata", key=new_owner_key(), preset="digits-random")
    at.session_state["overrides"] = settings
    at.session_state["overrides_for"] = "digits-random"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    assert any(s.value == "Forget-set difficulty" for s in at.subheader)
    (fig,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
              if "strata" in c.proto.config]
    heat = fig["data"][0]
    assert heat["type"] == "heatmap" and heat["x"] == list(STRATA)
    assert heat["y"][:2] == ["original", "retrained"] and f"ga · {ids[1]}" in heat["y"]
    hard = store.get(ids[1]).result["strata"]["models"]["unlearned"]["hard"]["acc_forget"]
    assert heat["text"][heat["y"].index(f"ga · {ids[1]}")][2] == f"{hard:.3f}"
    assert heat["z"][1] == [0.0, 0.0, 0.0]  # retrained against itself
    assert "by the original model's margin" in " ".join(c.value for c in at.caption)
    at.segmented_control(key="strata_metric").set_value("mia").run()
    (fig,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart")
              if "strata" in c.proto.config]
    assert fig["layout"]["title"]["text"].startswith("MIA")
    assert any(b.proto.label == "Download per-stratum CSV" for b in at.get("download_button"))
