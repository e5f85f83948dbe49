"""Every registered method gets the same checks (parametrised over the registry)."""

import copy
import json
import math
import os

import pytest
import torch

from dimalign.config import build_config
from dimalign.errors import ConfigError
from dimalign.methods import BUILTIN, ORDER, REGISTRY
from dimalign.methods.loop import Cancelled, UnlearningFailed, unlearn
from dimalign.methods.muda import phases as muda_phases

TRAINED = [name for name in ORDER if REGISTRY[name].trains]


def short_cfg(name, *extra):
    return build_config("digits-class", ["train.epochs=2", f"{name}.epochs=1",
                                         "unlearn.telemetry_every=1", *extra])


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", ORDER)
def test_every_knob_has_a_group_and_groups_list_every_knob_once(name):
    spec = REGISTRY[name]
    assert all(knob.group.strip() for knob in spec.knobs.values())
    groups = spec.groups()
    assert sorted(k for _, keys in groups for k in keys) == sorted(spec.knobs)
    assert len({g for g, _ in groups}) == len(groups)
    if spec.trains:  # the common knobs come after the method's own groups
        assert [g for g, _ in groups][-2:] == ["Schedule", "Optimiser"] or name == "muda"


def test_muda_shows_its_loss_weights_first_then_schedule_retain_basis_and_optimiser():
    assert REGISTRY["muda"].groups() == [
        ("Loss weights", ["lambda_da", "lambda_sd", "temperature", "sd"]),
        ("Schedule", ["epochs", "ratio_forget", "ratio_recover", "alternate", "alternate_steps"]),
        ("Retain basis", ["energy", "k", "center", "basis", "bank_size", "bank_refresh"]),
        ("Optimiser", ["lr", "batch_size", "optimizer", "momentum", "weight_decay",
                       "retain_fraction", "augment"]),
    ]


@pytest.mark.parametrize("name, extra", [
    ("muda", []),  # a few steps: a point each
    ("ft", ["ft.batch_size=10"]),  # over a hundred steps: every few steps, at least 50 points
])
def test_auto_telemetry_gives_at_least_50_points_or_one_per_step(name, extra, tiny_baselines):
    b = tiny_baselines
    cfg = build_config("digits-class", ["train.epochs=2", f"{name}.epochs=1", *extra])
    assert cfg.unlearn.telemetry_every == "auto"
    points = []
    out = unlearn(cfg, REGISTRY[name], b.experiment, b.original, b.device,
                  telemetry=points.append)
    steps = [p["step"] for p in points]
    assert steps[0] == 0 and steps[-1] == out.steps and steps == sorted(set(steps))
    if out.steps < 50:
        assert steps == list(range(out.steps + 1))
    else:
        assert out.steps >= 100 and len(steps) - 1 >= 50  # and the start point besides
    assert all(any(k.startswith("loss_") for k in p) for p in points[1:])
    assert "acc_forget" in points[0] and "acc_forget" in points[-1]


@pytest.mark.parametrize("every", ["auto", "1000"])  # 1000: phases shorter than the cadence
def test_the_live_curves_shade_forget_and_recover_phases(tiny_baselines, every):
    from dimalign import plots
    from dimalign.store import Store

    b = tiny_baselines
    cfg = build_config("digits-class", ["train.epochs=2", "muda.epochs=3",
                                        f"unlearn.telemetry_every={every}"])
    points = []
    unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device, telemetry=points.append)
    by_epoch = [max(p["step"] for p in points if p["epoch"] == e) for e in (1, 2, 3)]
    # through the run store as a worker writes it: numbers only
    store = Store()
    run_id = store.create_run(owner=f"tess-{every}", kind="unlearn", preset="digits-class",
                              method="muda", config={})
    for p in points:
        store.log_metrics(run_id, p["step"], {k: v for k, v in p.items()
                                              if isinstance(v, int | float) and k != "step"})
    curves = store.curves(run_id)
    assert plots.phase_spans(curves) == [("forget", 0, by_epoch[0]),
                                         ("recover", by_epoch[0], by_epoch[1]),
                                         ("forget", by_epoch[1], by_epoch[2])]
    fig = plots.telemetry_figure(curves, {"retrained": {"da": 0.9}})
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 3 * 4  # a rectangle per span in each of the four panels
    assert {(r.x0, r.x1) for r in rects} == {(0, by_epoch[0]), (by_epoch[0], by_epoch[1]),
                                             (by_epoch[1], by_epoch[2])}
    assert all(r.yref.endswith("domain") and r.layer == "below" for r in rects)
    assert [r.label.text for r in rects if r.label.text] == ["forget", "recover", "forget"]
    assert len({r.fillcolor for r in rects}) == 2
    assert not [s for s in plots.telemetry_figure({"da": curves["da"]}).layout.shapes
                if s.type == "rect"]  # no phases given, nothing shaded


def test_the_registry_holds_the_baselines_then_muda_with_described_valid_knobs():
    # registration order: the baselines module, then muda (plugins, if any, after them)
    assert tuple(REGISTRY) == ORDER and ORDER[: len(BUILTIN)] == BUILTIN
    assert BUILTIN[0] == "retrain" and BUILTIN[-1] == "muda" and len(BUILTIN) > 2
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
    assert all(p[f"phase_{p['phase']}"] == 1.0 for p in points)  # the phase as a number too
    losses = [v for p in points for k, v in p.items() if k.startswith("loss_")]
    assert losses and all(math.isfinite(v) for v in losses)
    probed = [p for p in points if "acc_forget" in p]  # the probe may skip middle points
    assert probed[0] is points[0] and probed[-1] is points[-1]
    for key in ("acc_retain", "acc_forget", "acc_test", "da", "angle_1"):
        assert all(0 <= p[key] <= (90 if key == "angle_1" else 1) for p in probed), key
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


def test_a_new_method_is_one_new_file(tmp_path, tiny_baselines):
    """A copy of the package plus one module in methods/: the method is listed, configurable
    and runs, with no other file touched."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import dimalign

    copy_root = tmp_path / "src"
    shutil.copytree(Path(dimalign.__file__).parent, copy_root / "dimalign",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy_root / "dimalign" / "methods" / "zz_echo.py").write_text(
        "import torch.nn.functional as F\n"
        "from dimalign.methods.base import Knob, MethodSpec, Phase, common_knobs, register\n\n"
        "register(MethodSpec('echo', 'Echo', 'fine-tune on D_r, scaled', '-',\n"
        "    {'scale': Knob(float, 1.0, 'loss scale', 0.0, 10.0, group='Loss weights'),\n"
        "     **common_knobs(lr=0.01, epochs=1)},\n"
        "    lambda ctx, e: [Phase('train', 'retain', 2)],\n"
        "    lambda ctx, ph, b: {'ce': ctx.params['scale'] * F.cross_entropy(ctx.model(b.xr),"
        " b.yr)}))\n")
    env = {**os.environ, "PYTHONPATH": str(copy_root)}
    listed = subprocess.run([sys.executable, "-m", "dimalign", "methods", "--json"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    methods = json.loads(listed.stdout)
    assert list(methods)[-1] == "echo" and methods["echo"]["knobs"]["scale"]["default"] == 1.0
    ran = subprocess.run([sys.executable, "-m", "dimalign", "run", "--preset", "digits-class",
                          "--method", "echo", "--set", "train.epochs=2", "--set",
                          "echo.scale=0.5", "--json"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["params"]["scale"] == 0.5
