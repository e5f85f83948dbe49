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
from dimalign.config import config_from_dict
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
    for model in ("original", "retrained", "unlearned"):
        assert audit["layers"][-1]["models"][model]["da"] == pytest.approx(
            result["models"][model]["da"], abs=1e-6)
        assert all(0 <= layer["models"][model]["da"] <= 1 for layer in audit["layers"])
        assert all(layer["models"][model]["effective_rank"] >= 1 for layer in audit["layers"])


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
    for entry in relearn.values():
        assert [p["step"] for p in entry["curve"]] == list(range(51))  # s = 50, and step 0
        assert {"acc_forget", "acc_test_forgotten"} <= set(entry["curve"][0])
    original = relearn["original"]["steps_to_relearn"]
    retrained = relearn["retrained"]["steps_to_relearn"]
    assert original is not None and (retrained is None or original < retrained)
    assert settings["relearn_threshold"] == pytest.approx(
        0.9 * relearn["original"]["curve"][0]["acc_forget"])
    assert relearn["retrained"]["curve"][0]["acc_forget"] < settings["relearn_threshold"]


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
    assert set(audit["layers"][0]["models"]["original"]) == {"da", "cka_retrained",
                                                             "effective_rank"}
    assert set(audit["relearn"]["unlearned"]) == {"steps_to_relearn", "curve"}
    assert {"auc", "histograms"} <= set(audit["mia"]["retrained"])
    assert audit == audited["audit"]  # the cached file, not a second computation
    table = cli("audit", audited["run"])
    assert "penultimate (block3)" in table.stdout and "steps to relearn" in table.stdout
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
    assert [(link.proto.page, link.proto.label) for link in links] == [
        ("audit", "Open the Audit page")]
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
    from dimalign.config import build_config

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
