"""Every registered method gets the same checks (parametrised over the registry)."""

import copy
import math

import pytest
import torch

from dimalign.config import ConfigError, build_config
from dimalign.methods import ORDER, REGISTRY
from dimalign.methods.loop import Cancelled, UnlearningFailed, unlearn
from dimalign.methods.muda import phases as muda_phases

TRAINED = [name for name in ORDER if REGISTRY[name].trains]


def short_cfg(name, *extra):
    return build_config("digits-class", ["train.epochs=2", f"{name}.epochs=1",
                                         "unlearn.telemetry_every=1", *extra])


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_registry_holds_muda_and_nine_baselines_with_described_valid_knobs():
    assert set(ORDER) == set(REGISTRY) and len(ORDER) == 10 and "muda" in ORDER
    for name, spec in REGISTRY.items():
        assert spec.title and spec.description and spec.paper
        for key, knob in spec.knobs.items():
            assert knob.check(f"{name}.{key}", knob.default) == knob.default
            assert knob.help


@pytest.mark.parametrize("name", TRAINED)
def test_method_runs_a_short_epoch_with_finite_losses_and_live_telemetry(name, tiny_baselines):
    b = tiny_baselines
    before = params_of(b.original)
    points = []
    out = unlearn(short_cfg(name), REGISTRY[name], b.experiment, b.original, b.device,
                  telemetry=points.append)
    assert out.steps > 0 and out.seconds > 0
    assert points[0]["phase"] == "start" and points[-1]["step"] == out.steps
    losses = [v for p in points for k, v in p.items() if k.startswith("loss_")]
    assert losses and all(math.isfinite(v) for v in losses)
    for key in ("acc_retain", "acc_forget", "acc_test", "da", "angle_1"):
        assert all(0 <= p[key] <= (90 if key == "angle_1" else 1) for p in points), key
    after = params_of(out.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # it learned something
    assert all(torch.equal(before[n], p) for n, p in params_of(b.original).items())  # in a copy


def test_salun_changes_only_the_weights_its_saliency_mask_frees(tiny_baselines):
    b = tiny_baselines
    cfg = short_cfg("salun", "salun.mask_ratio=0.3")
    out = unlearn(cfg, REGISTRY["salun"], b.experiment, b.original, b.device)
    mask, before, after = out.state["mask"], params_of(b.original), params_of(out.model)
    frozen = sum(int((m == 0).sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert frozen / total == pytest.approx(0.7, abs=0.02)
    changed_outside = sum(int(((before[n] != after[n]) & (mask[n] == 0)).sum()) for n in mask)
    changed_inside = sum(int(((before[n] != after[n]) & (mask[n] == 1)).sum()) for n in mask)
    assert changed_outside == 0 and changed_inside > 0


@pytest.mark.parametrize("name", TRAINED)
def test_method_honours_cancellation(name, tiny_baselines):
    b = tiny_baselines
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled, match="at step 1 of"):
        unlearn(short_cfg(name), REGISTRY[name], b.experiment, b.original, b.device,
                cancel=cancel)


@pytest.mark.parametrize("name", TRAINED)
def test_method_fails_cleanly_naming_step_and_term_on_an_injected_nan(name, tiny_baselines):
    b = tiny_baselines
    poisoned = copy.deepcopy(b.original)
    with torch.no_grad():
        poisoned.head.bias[0] = float("nan")  # every logit row now holds a NaN
    with pytest.raises(UnlearningFailed, match=r"loss term '\w+' became nan at step 1 "):
        unlearn(short_cfg(name), REGISTRY[name], b.experiment, poisoned, b.device)


def test_telemetry_only_observes(tiny_baselines):
    b = tiny_baselines
    cfg = short_cfg("muda")
    quiet = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device)
    watched = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                      telemetry=lambda p: None)
    q, w = params_of(quiet.model), params_of(watched.model)
    assert all(torch.equal(q[n], w[n]) for n in q)
    assert quiet.telemetry == [] and len(watched.telemetry) == watched.steps + 1


def test_muda_alternates_by_epoch_or_by_steps_with_the_set_ratio(tiny_baselines):
    b = tiny_baselines
    cfg = short_cfg("muda", "muda.ratio_forget=2", "muda.ratio_recover=1")
    by_epoch = [muda_phases(_ctx(cfg, b), e)[0].name for e in range(6)]
    assert by_epoch == ["forget", "forget", "recover"] * 2
    cfg = short_cfg("muda", "muda.alternate=steps", "muda.alternate_steps=2")
    names = [(p.name, p.steps) for p in muda_phases(_ctx(cfg, b), 0)]
    assert names[:2] == [("forget", 2), ("recover", 2)]
    out = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device)
    assert out.steps == sum(s for _, s in names)


def test_muda_retain_bank_and_feature_distillation_run(tiny_baselines):
    b = tiny_baselines
    cfg = short_cfg("muda", "muda.basis=bank", "muda.bank_refresh=2", "muda.bank_size=100",
                    "muda.sd=mse", "muda.center=true", "muda.k=4")
    points = []
    unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device, telemetry=points.append)
    assert all(math.isfinite(p["loss_da"]) for p in points if "loss_da" in p)


def _ctx(cfg, b):
    from dimalign.methods.base import Context

    params = cfg.method_params("muda")
    return Context(b.original, b.original, params, 10, int(b.experiment.forget.sum()),
                   int((~b.experiment.forget).sum() * params["retain_fraction"]), b.device,
                   torch.Generator())


@pytest.mark.parametrize("override, words", [
    ("muda.lambda_da=-1", "muda.lambda_da: must lie in [0, 1000]"),
    ("muda.lr=0", "muda.lr: must lie in (0, 10]"),
    ("muda.nope=1", "muda.lambda_da"),
    ("muda.basis=cloud", "batch, bank"),
    ("muda.epochs=two", "expected int"),
    ("salun.mask_ratio=1.5", "salun.mask_ratio"),
])
def test_bad_knobs_are_refused_naming_the_key_and_range(override, words):
    with pytest.raises(ConfigError) as info:
        build_config("digits-class", [override])
    assert words in str(info.value)


def test_default_muda_on_digits_class_forgets_like_retraining(default_baselines):
    """Issue #4's bar, on the default preset with default settings (time: bench/)."""
    from dimalign.config import build_config as build
    from dimalign.metrics import evaluate

    b = default_baselines
    cfg = build("digits-class")
    out = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device)
    m, _ = evaluate({"original": b.original, "retrained": b.retrained, "muda": out.model},
                    b.experiment, cfg.eval)
    assert m["muda"]["acc_forget"] <= 0.05
    assert abs(m["muda"]["acc_retain"] - m["retrained"]["acc_retain"]) <= 0.02
    assert abs(m["muda"]["acc_test_kept"] - m["retrained"]["acc_test_kept"]) <= 0.02
    assert abs(m["muda"]["da"] - m["retrained"]["da"]) < abs(
        m["original"]["da"] - m["retrained"]["da"])


@pytest.mark.parametrize("name", ["muda", "salun", "scrub"])
def test_a_run_resumed_from_an_epoch_checkpoint_ends_where_an_uninterrupted_one_does(
        name, tiny_baselines, tmp_path):
    b = tiny_baselines
    cfg = build_config("digits-class", ["train.epochs=2", f"{name}.epochs=3"])
    whole = unlearn(cfg, REGISTRY[name], b.experiment, b.original, b.device)
    saved = []

    def stop_after_first_epoch(state):
        torch.save(state, tmp_path / "ckpt.pt")  # through a file, as a worker does
        saved.append(state["epoch"])
        raise Cancelled("simulated crash")

    with pytest.raises(Cancelled):
        unlearn(cfg, REGISTRY[name], b.experiment, b.original, b.device,
                checkpoint=stop_after_first_epoch)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed = unlearn(cfg, REGISTRY[name], b.experiment, b.original, b.device, resume=state)
    assert saved == [1] and resumed.steps == whole.steps
    w, r = params_of(whole.model), params_of(resumed.model)
    assert all(torch.allclose(w[n], r[n], atol=1e-6) for n in w)
