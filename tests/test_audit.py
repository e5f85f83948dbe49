"""The audit (issue 13) on digits-class: a MUDA run and its audit done by real workers, then
the audit's numbers against the run's own, the CLI, and the Audit page."""

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, drain_scheduler
from streamlit.testing.v1 import AppTest

from dimalign.audit import (
    AuditSettings,
    audit_path,
    fold_last_block,
    layer_outputs,
    load_audit,
    membership_auc,
    threshold_attack,
)
from dimalign.config import build_config, config_from_dict
from dimalign.data import build_experiment
from dimalign.errors import ConfigError
from dimalign.features import forward_all
from dimalign.jobs import audit_key, submit, submit_audit
from dimalign.runner import load_result
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import Store, new_owner_key

APP = str(Path(__file__).resolve().parents[1] / "app.py")
OWNER = "auditor"
KEY = new_owner_key()


@pytest.fixture(scope="module")
def audited(tiny_baselines):
    """A MUDA run on the tiny digits-class baselines and its audit, each a worker's job."""
    store = Store()
    run = submit(store, preset="digits-class", overrides=TINY, method="muda", owner=OWNER)
    scheduler = Scheduler(store, slots=[Slot(None)])
    try:
        drain_scheduler(scheduler, lambda: store.get(run).terminal, 300)
        assert store.get(run).status == "done", store.get(run).error
        job = submit_audit(store, run, OWNER)
        assert submit_audit(store, run, OWNER) == job  # one job per run and settings
        drain_scheduler(scheduler, lambda: store.get(job).terminal, 300)
    finally:
        scheduler.close()
    assert store.get(job).status == "done", store.get(job).error
    folder = store.get(run).folder
    path = audit_path(folder, AuditSettings())
    assert store.artifacts(run)[path.stem] == path  # indexed with the run it audits
    return {"store": store, "run": run, "folder": folder, "audit": load_audit(path),
            "result": load_result(folder)}


def test_layers_run_input_to_output_and_the_last_layers_da_is_the_runs(audited):
    audit, result = audited["audit"], audited["result"]
    names = [layer["name"] for layer in audit["layers"]]
    assert names == ["block1", "block2", "penultimate (block3)"]  # block3 pooled = penultimate
    assert [layer["dim"] for layer in audit["layers"]] == [16, 32, 64]
    assert [layer["center"] for layer in audit["layers"]] == [True, True, False]
    for model in ("original", "retrained", "unlearned"):
        last, row = audit["layers"][-1]["models"][model], result["models"][model]
        assert last["da"] == pytest.approx(row["da"], abs=1e-6) and last["da_k"] == row["da_k"]
        assert last["effective_rank"] == pytest.approx(row["effective_rank"], rel=1e-6)
        assert all(0 <= layer["models"][model]["da"] <= 1 for layer in audit["layers"])
        assert all(layer["models"][model]["effective_rank"] >= 1 for layer in audit["layers"])


@pytest.fixture(scope="module")
def default_layers(default_baselines):
    """The audit's layers of the embedded default experiment (digits-class, fully trained) for
    its original, retrained and MUDA-unlearned models: inner layers centred, and not."""
    from dimalign.audit import layer_geometry, model_layers
    from dimalign.methods import get_method
    from dimalign.methods.loop import unlearn

    cfg, b = build_config("digits-class"), default_baselines
    exp = b.experiment
    unlearned = unlearn(cfg, get_method("muda"), exp, b.original, b.device).model
    models = {"original": b.original, "retrained": b.retrained, "unlearned": unlearned}
    train, test = model_layers(models, exp)
    return {center: layer_geometry(train, test, exp, cfg.eval, cfg.seed, inner_center=center)
            for center in (True, False)}


def test_centred_inner_layer_da_tells_the_three_models_apart_on_digits(default_layers):
    """Uncentred, an inner layer's shared positive mean is the one retain direction: k = 1 and
    DA about 0.99 for every model (issue 27). Centred (the audit's default), block2 separates
    them (0.872, 0.960, 0.932 when written)."""
    def da(center: bool, layer: int) -> list[float]:
        row = default_layers[center][layer]["models"]
        return [row[m]["da"] for m in ("original", "retrained", "unlearned")]

    assert [layer["name"] for layer in default_layers[True]][:2] == ["block1", "block2"]
    for layer in (0, 1):
        assert {r["da_k"] for r in default_layers[False][layer]["models"].values()} == {1}
        assert min(da(False, layer)) > 0.98
    assert max(da(True, 1)) - min(da(True, 1)) > 0.05, da(True, 1)
    assert da(True, 1)[0] < min(da(True, 1)[1:])  # the original least aligned, as at the top
    assert default_layers[True][-1] == default_layers[False][-1]  # the penultimate: the run's


def test_cka_of_the_retrained_model_to_itself_is_one_at_every_layer(audited):
    layers = audited["audit"]["layers"]
    assert [layer["models"]["retrained"]["cka_retrained"] for layer in layers] == \
        pytest.approx([1.0] * len(layers), abs=1e-9)
    assert all(layer["models"]["unlearned"]["cka_retrained"] < 1 - 1e-6 for layer in layers)


def test_the_original_model_relearns_in_fewer_steps_than_the_retrained_model(audited):
    audit = audited["audit"]
    relearn, settings = audit["relearn"], audit["settings"]
    n_forget = audited["result"]["data"]["forget"]
    assert settings["m"] == max(5, round(0.1 * n_forget))  # the default m
    assert settings["relearn_seeds"] == [0, 1, 2, 3, 4] and settings["nesterov"]
    assert settings["relearn_batch"] == {"forget": settings["m"],
                                         "retain": 64 - settings["m"]}  # digits' batch: 64
    for entry in relearn.values():
        assert [p["step"] for p in entry["curve"]] == list(range(51))  # s = 50, and step 0
        assert {"acc_forget", "acc_test_forgotten"} <= set(entry["curve"][0])
        assert len(entry["subsets"]) == 5 and entry["subsets"][0] == entry["steps_to_relearn"]
        done = [s for s in entry["subsets"] if s is not None]
        assert entry["relearnt"] == len(done)
        if len(done) > 1:
            assert entry["steps_mean"] == pytest.approx(sum(done) / len(done))
            assert entry["steps_sd"] >= 0
    assert relearn["original"]["subsets"] == [0] * 5 and relearn["original"]["steps_sd"] == 0
    original = relearn["original"]["steps_to_relearn"]
    retrained = relearn["retrained"]["steps_to_relearn"]
    assert original is not None and (retrained is None or original < retrained)
    assert settings["relearn_threshold"] == pytest.approx(
        0.9 * relearn["original"]["curve"][0]["acc_forget"])
    assert relearn["retrained"]["curve"][0]["acc_forget"] < settings["relearn_threshold"]


def test_the_relearn_attack_probes_the_trained_original_without_wrecking_it(default_baselines):
    """One step on each of 5 seeded draws of the m = 13 forget samples leaves the fully trained
    original's accuracy on the other forget samples where it was. Before issue 27 a batch
    was the 13 alone (one class), BatchNorm in train mode: one step took it from 0.99 to 0.0
    on draws 5 and 6, to 0.35 and 0.54 on 7 and 8."""
    from dimalign.audit import relearn, relearn_sets

    b, tc = default_baselines, build_config("digits-class").train
    exp = b.experiment
    for seed in range(5, 10):
        fit, sets, _ = relearn_sets(exp, AuditSettings(), seed)
        rest = sets["forget"]
        curve = relearn(b.original, exp.x_train, exp.y_train, fit, exp.retain_idx,
                        {"forget": (exp.x_train[rest], exp.y_train[rest])}, exp.info, tc, 1,
                        seed)
        before, after = curve[0]["acc_forget"], curve[1]["acc_forget"]
        assert before > 0.95 and after >= before - 0.05, (seed, before, after)


def test_relearn_batches_mix_the_forget_samples_with_retain_samples_and_steps_summarise():
    from dimalign.audit import mixed_batches, steps_summary

    batches = mixed_batches(13, 100, 64, 3, seed=0)
    assert all(len(f) == 13 and len(r) == 51 for f, r in batches)
    assert all(sorted(f.tolist()) == list(range(13)) for f, _ in batches)  # every one a step
    assert all(len(set(r.tolist())) == 51 and max(r) < 100 for _, r in batches)
    cycled = mixed_batches(10, 100, 8, 5, seed=0)  # 4 forget samples a batch, cycled
    assert [len(f) for f, _ in cycled] == [4] * 5
    assert len(set(torch.cat([cycled[0][0], cycled[1][0]]).tolist())) == 8  # no repeats yet
    assert steps_summary([3, None, 5, 4]) == {"subsets": [3, None, 5, 4], "relearnt": 3,
                                              "steps_mean": 4.0, "steps_sd": 1.0}
    assert steps_summary([None, None])["steps_mean"] is None
    assert steps_summary([7, None])["steps_sd"] is None


def test_confusion_matrix_rows_sum_to_the_class_counts(audited):
    classwise = audited["audit"]["classwise"]
    exp = build_experiment(config_from_dict(audited["result"]["config"]))
    counts = torch.bincount(exp.y_test, minlength=10).tolist()
    assert classwise["counts"] == counts and classwise["forgotten"] == [3]
    for model, entry in classwise["models"].items():
        assert [sum(row) for row in entry["confusion"]] == counts, model
        assert entry["accuracy"][3] == pytest.approx(entry["confusion"][3][3] / counts[3])
    # the run's own test accuracy of the forgotten class, from the same predictions
    unlearned = audited["result"]["models"]["unlearned"]
    assert classwise["models"]["unlearned"]["accuracy"][3] == pytest.approx(
        unlearned["acc_test_forgotten"])


def test_auc_is_one_half_on_identical_distributions_and_threshold_rates_follow(audited):
    gen = torch.Generator().manual_seed(0)
    same = [membership_auc(torch.rand(800, generator=gen), torch.rand(800, generator=gen))
            for _ in range(3)]
    assert all(abs(a - 0.5) <= 0.1 for a in same), same
    apart = membership_auc(torch.rand(300, generator=gen) + 0.5, torch.rand(300, generator=gen))
    assert apart > 0.85
    # the retrained model saw neither the forget class's training nor its test samples
    mia = audited["audit"]["mia"]
    assert abs(mia["retrained"]["auc"] - 0.5) <= 0.1
    assert mia["unlearned"]["mia"] == audited["result"]["models"]["unlearned"]["mia"]
    assert threshold_attack([0.2, 0.6, 0.9], [0.1, 0.95], 0.5) == (pytest.approx(2 / 3), 0.5)
    assert threshold_attack([0.2, 0.6], [0.1], 0.3, higher_is_member=False) == (0.5, 1.0)
    scores = mia["original"]["scores"]
    assert threshold_attack(scores["forget"]["confidence"],
                            scores["nonmembers"]["confidence"], 0.0) == (1.0, 1.0)
    hist = mia["original"]["histograms"]["entropy"]
    assert len(hist["edges"]) == 31 and sum(hist["forget"]) == audited["result"]["data"]["forget"]


def test_every_scored_forget_sample_has_each_models_values_and_the_most_remembered_come_first(
        audited):
    """The audit's samples: the forget samples the run's result scores (all, on digits), each
    with its residual, margin, confidence and membership under every model (the membership
    is the logit-scaled confidence the result keeps), sorted by score."""
    from dimalign.audit import sample_table, scored_rows

    audit, result = audited["audit"], audited["result"]
    exp = build_experiment(config_from_dict(result["config"]))
    samples, how = audit["samples"], audit["sample_verdict"]
    rows = scored_rows(exp, result["config"]["seed"]).tolist()
    assert len(samples) == how["scored"] == result["data"]["forget"] == how["forget"]
    assert sorted(s["id"] for s in samples) == rows
    assert all(s["label"] == exp.y_train[s["id"]].item() == 3 for s in samples)
    scores = [s["score"] for s in samples]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert how["kind"] in ("single", "replicates")  # other tests may cache replicates
    assert how["retrained_models"] == len(how["replicates"]) and 0 in how["replicates"]
    position = {row: j for j, row in enumerate(rows)}
    for s in samples:
        assert set(s["models"]) == {"original", "retrained", "unlearned"}
        for model, v in s["models"].items():
            assert 0 <= v["residual"] <= 1 and 0 <= v["confidence"] <= 1
            assert v["membership"] == pytest.approx(
                result["forget_confidence"][model][position[s["id"]]], abs=2e-4)
            assert v["confidence"] <= 0.5 or v["margin"] > 0  # p > 1/2: the top logit
    if how["kind"] == "single":  # the residual's gap toward the original
        top = samples[0]["models"]
        gap = top["unlearned"]["residual"] - top["retrained"]["residual"]
        toward = 1 if top["original"]["residual"] >= top["retrained"]["residual"] else -1
        assert samples[0]["score"] == pytest.approx(toward * gap, abs=2e-6)
    table = sample_table(audit, top=10)
    assert [r["sample"] for r in table] == [s["id"] for s in samples[:10]]
    assert {"score", "membership score", "residual (unlearned)", "confidence (original)"} <= \
        set(table[0])


def test_the_unlearned_model_scored_against_replicates_has_a_known_score_and_percentile(
        tiny_baselines, tiny_cfg):
    """Retrained models of two "replicates", the run's own and the original standing in for
    another, and an unlearned model that is the retrained one: every sample's score is at most
    0 (the unlearned value is the retrained mean's far side from the original) and its
    percentile 1/4 (it ties its own retrained model, lies short of the other)."""
    from dimalign.audit import model_layers, sample_scores

    b = tiny_baselines
    models = {"original": b.original, "retrained": b.retrained, "unlearned": b.retrained}
    train, _ = model_layers(models, b.experiment)
    samples, how = sample_scores(train, b.experiment, tiny_cfg, {7: b.original})
    assert how["kind"] == "replicates" and how["replicates"] == [0, 7]
    assert how["retrained_models"] == 2 and how["sd"]["residual"] > 0
    moved = [s for s in samples
             if s["models"]["original"]["residual"] != s["models"]["retrained"]["residual"]]
    assert len(moved) > 0.9 * len(samples)
    assert all(s["score"] <= 1e-9 for s in samples)
    assert all(s["percentile"] == 0.25 for s in moved)
    for s in moved[:20]:
        m = s["models"]
        assert s["reference"]["residual"] == pytest.approx(
            (m["original"]["residual"] + m["retrained"]["residual"]) / 2, abs=2e-6)


def test_the_audit_finds_the_cached_retrained_models_of_the_other_replicates(tiny_baselines):
    """Retrained models cached for replicates 0, 2 and 5 of a setting: an audit of replicate
    2 scores against 0 and 5, lowest first."""
    import time as clock

    from dimalign.audit import replicate_retrained
    from dimalign.train import cache_key, cache_path, save_checkpoint

    cfg = build_config("digits-class", [*TINY, "seed=4242"])  # a setting no other test trains
    for r in (0, 2, 5):
        save_checkpoint(tiny_baselines.retrained,
                        cache_path(cache_key(cfg.with_replicate(r), "retrained")),
                        {"seconds": 1.0, "created": clock.time()})
    found = replicate_retrained(cfg.with_replicate(2), torch.device("cpu"))
    assert list(found) == [0, 5]
    assert all(isinstance(m, torch.nn.Module) for m in found.values())


def test_blocks_of_a_torchvision_model_and_the_penultimate_entry_is_forward_all(tiny_baselines):
    from dimalign.datasets import dataset_info
    from dimalign.models import build_model

    info = dataset_info("cifar10")
    net = build_model("torchvision:resnet18", 3, 10).eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert list(layer_outputs(net, x, info).layers) == ["layer1", "layer2", "layer3", "layer4",
                                                         "penultimate"]
    (out,) = fold_last_block([layer_outputs(net, x, info)])  # layer4 -> pool -> head
    assert list(out.layers) == ["layer1", "layer2", "layer3", "penultimate (layer4)"]
    logits, feats = forward_all(net, x, info)
    assert torch.equal(out.layers["penultimate (layer4)"], feats)
    assert torch.equal(out.logits, logits)
    exp = tiny_baselines.experiment
    small = layer_outputs(tiny_baselines.original, exp.x_test[:8], exp.info)
    assert [f.shape[1] for f in small.layers.values()] == [16, 32, 64, 64]
    vgg = build_model("torchvision:vgg11", 3, 10).eval()  # an MLP follows its features
    (out,) = fold_last_block([layer_outputs(vgg, x, info)])
    assert list(out.layers)[-1] == "penultimate" and len(out.layers) == 9


def test_cli_prints_the_audit_as_json_and_refuses_bad_input_in_one_line(audited, cli):
    ran = cli("audit", audited["run"], "--json")
    assert ran.returncode == 0, ran.stderr
    audit = json.loads(ran.stdout)
    assert set(audit) >= {"layers", "relearn", "mia", "classwise"}
    assert set(audit["layers"][0]["models"]["original"]) == {"da", "da_k", "cka_retrained",
                                                             "effective_rank"}
    assert set(audit["relearn"]["unlearned"]) == {"steps_to_relearn", "curve", "subsets",
                                                  "relearnt", "steps_mean", "steps_sd"}
    assert {"auc", "histograms"} <= set(audit["mia"]["retrained"])
    assert audit == audited["audit"]  # the cached file, not a second computation
    table = cli("audit", audited["run"])
    assert "penultimate (block3)" in table.stdout and "steps to relearn" in table.stdout
    assert "mean ± sd (5 draws)" in table.stdout and "inner layers centred" in table.stdout
    for args, says in ((("audit", audited["run"], "--relearn-samples", "100000"),
                        "relearn_samples"),
                       (("audit", "0123456789ab"), "no run 0123456789ab"),
                       (("audit", "nowhere"), "not a run")):
        bad = cli(*args)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def page(run_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["owner"] = OWNER
    at.query_params["key"] = KEY
    at.query_params["run"] = run_id
    at.session_state["overrides"] = TINY
    at.session_state["overrides_for"] = "digits-class"
    at.run()
    at.switch_page("pages/audit.py").run()
    assert not at.exception, at.exception
    return at


def test_audit_page_draws_four_panels_and_the_threshold_slider_moves_the_rates(audited):
    at = page(audited["run"])
    assert [h.value for h in at.subheader][:4] == [
        "1. Where in the network does the representation change?",
        "2. What does a membership attacker see?",
        "3. Does the forgotten come back? (relearn attack)",
        "4. What does each class get?"]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 5
    names = {t.get("name") for t in charts[0]["data"]}
    assert names == {"original", "retrained", "unlearned"}
    rates = at.dataframe[0].value
    assert list(rates["model"]) == ["original", "retrained", "unlearned"]
    at.slider(key="audit_threshold_confidence").set_value(0.11).run()
    low = at.dataframe[0].value
    assert (low["TPR (forget called member)"] >= rates["TPR (forget called member)"]).all()
    assert low["FPR (non-members called member)"].iloc[1] == 1.0
    at.radio(key="audit_score").set_value("entropy").run()
    assert not at.exception and at.slider(key="audit_threshold_entropy") is not None
    assert at.subheader[4].value == "5. Which forget samples are still remembered?"
    samples = at.dataframe[2].value  # attack rates, steps to relearn, then the samples
    assert len(samples) == min(100, audited["result"]["data"]["forget"])
    assert list(samples["sample"]) == [s["id"] for s in audited["audit"]["samples"][:100]]
    assert samples["image"].str.startswith("data:image/png;base64,").all()


def test_audit_page_offers_a_button_that_queues_the_job_and_then_shows_the_audit(audited):
    store, run = audited["store"], audited["run"]
    at = page(run)
    at.number_input(key="audit_s").set_value(3).run()
    assert any("no audit with these settings" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    at.button(key="audit_start").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    (job,) = store.runs(kind="audit", share_key=audit_key(run, AuditSettings(relearn_steps=3)))
    end = time.monotonic() + 180
    while not store.get(job.id).terminal:  # the page started the background scheduler
        assert time.monotonic() < end, f"the audit job is still {store.get(job.id).status}"
        time.sleep(0.2)
    assert store.get(job.id).status == "done", store.get(job.id).error
    at.run()
    assert not at.exception and len(at.get("plotly_chart")) == 5
    steps = load_audit(audit_path(audited["folder"], AuditSettings(relearn_steps=3)))
    assert len(steps["relearn"]["original"]["curve"]) == 4


def test_learn_page_links_to_the_audit_and_its_reading_guide(audited):
    at = page(audited["run"])
    at.switch_page("pages/learn.py").run()
    assert not at.exception
    links = at.get("page_link")
    assert [(link.proto.page, link.proto.label) for link in links if link.proto.page == "audit"] \
        == [("audit", "Open the Audit page")]  # the exercises' links go to Unlearn
    assert any("docs/dashboard.md#audit" in m.value for m in at.markdown)


def test_a_forget_set_too_small_for_the_automatic_m_names_the_m_that_fits():
    """Five forget samples: the automatic m (at least 5) leaves none to score, but m = 1..4
    does; the refusal says so rather than calling the forget set too small."""
    with pytest.raises(ConfigError, match=r"set relearn_samples to 1\.\.4"):
        AuditSettings().check(5)
    assert AuditSettings(relearn_samples=4).check(5).samples(5) == 4
    with pytest.raises(ConfigError, match="too few"):
        AuditSettings().check(1)


def test_backdoor_and_random_scenarios_pick_their_own_non_members_and_relearn_sets():
    from dimalign.audit import classwise, nonmember_rows, relearn_sets

    exp = build_experiment(build_config("digits-backdoor", TINY))
    what, source, rows = nonmember_rows(exp)
    assert source == "trigger" and len(rows) == len(exp.x_trigger) and "stamped" in what
    fit, sets, second = relearn_sets(exp, AuditSettings(relearn_samples=7), 0)
    assert second == "test" and len(fit) == 7 and bool(exp.forget[fit].all())
    assert len(sets["forget"]) == int(exp.forget.sum()) - 7 and not set(fit.tolist()) & set(
        sets["forget"].tolist())
    target = exp.y_train[exp.forget][0].item()
    trigger = torch.zeros(len(exp.x_trigger), 10)
    trigger[:, (target + 1) % 10] = 0.5
    trigger[: len(trigger) // 4, target] = 1.0  # a quarter of stamped samples go to the target
    logits = {"train": torch.zeros(len(exp.y_train), 10), "test": torch.zeros(len(exp.y_test), 10),
              "trigger": trigger}
    out = classwise({"unlearned": logits}, exp, target)
    assert out["target"] == target and out["forgotten"] == []
    assert out["models"]["unlearned"]["asr"] == pytest.approx((len(trigger) // 4) / len(trigger))
    random = build_experiment(build_config("digits-random", TINY))
    assert nonmember_rows(random)[1] == "test" and relearn_sets(random, AuditSettings(), 0)[2] \
        == "test"


def test_a_damaged_audit_is_one_line_on_the_page_and_in_the_cli_then_computed_again(audited,
                                                                                     cli):
    settings = AuditSettings(relearn_steps=2)
    path = audit_path(audited["folder"], settings)
    path.write_text('{"layers": []}')  # parses, but is no audit
    at = page(audited["run"])
    at.number_input(key="audit_s").set_value(2).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"The audit of run {audited['run']} was damaged and set aside; reload the page to "
        "compute it again."]
    assert not path.exists() and list(path.parent.glob(f"{path.name}.damaged-*"))
    at.run()
    assert at.button(key="audit_start") is not None  # offered again
    path.write_bytes(b"\x00garbage")
    ran = cli("audit", audited["run"], "--relearn-steps", "2", "--json")
    assert ran.returncode == 0 and "computing the audit again" in ran.stderr
    assert len(json.loads(ran.stdout)["relearn"]["retrained"]["curve"]) == 3
    assert load_audit(path)["settings"]["relearn_steps"] == 2  # cached
