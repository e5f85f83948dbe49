"""Plugin methods: an outside package's entry point in group `dimalign.methods` adds a method to
the registry, `dimalign methods` and `dimalign run`; a broken plugin only warns."""

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from dimalign.config import build_config
from dimalign.methods import BUILTIN, ORDER, REGISTRY, PluginWarning, _load_plugin

pytest.importorskip("setuptools")  # builds the plugin without network (no build isolation)

ROOT = Path(__file__).resolve().parent.parent

NOISY_FT = '''
"""Noisy fine-tune: fine-tune on D_r with Gaussian noise added to the inputs."""
import torch
import torch.nn.functional as F

from dimalign.methods.base import Knob, MethodSpec, Phase, common_knobs, register

KNOBS = {
    "noise": Knob(float, 0.1, "std of the Gaussian noise on the inputs", 0.0, 10.0,
                  group="Noise"),
    **common_knobs(lr=0.01, epochs=1, retain_fraction=0.3),
}


def phases(ctx, epoch):
    return [Phase("train", "retain", ctx.steps_for(ctx.n_retain))]


def loss(ctx, phase, batch):
    x = batch.xr + ctx.params["noise"] * torch.randn_like(batch.xr)
    return {"ce": F.cross_entropy(ctx.model(x), batch.yr)}


register(MethodSpec("noisy_ft", "Noisy FT", "fine-tune on D_r with noisy inputs",
                    "none (a test plugin)", KNOBS, phases, loss))
'''


def build_plugin(src: Path, target: Path, name: str, entry_points: dict[str, str],
                 modules: dict[str, str]) -> Path:
    """Write a one-file-per-module distribution into src and pip-install it into target."""
    src.mkdir(parents=True)
    eps = "\n".join(f'{k} = "{v}"' for k, v in entry_points.items())
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.1"

        [project.entry-points."dimalign.methods"]
        """) + eps + f"\n\n[tool.setuptools]\npy-modules = {json.dumps(list(modules))}\n")
    for module, code in modules.items():
        (src / f"{module}.py").write_text(code)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--no-build-isolation", "--quiet", "--target", str(target),
                           str(src)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def dimalign(*args, path: Path, timeout=300):
    env = dict(os.environ)  # DIMALIGN_HOME: the session's home (conftest)
    env["PYTHONPATH"] = os.pathsep.join([str(path), str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "dimalign", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def noisy_ft(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    return build_plugin(tmp / "src", tmp / "site", "dimalign-noisy-ft",
                        {"noisy_ft": "noisy_ft"}, {"noisy_ft": NOISY_FT})


def test_a_plugin_appears_in_methods_after_the_builtins(noisy_ft):
    proc = dimalign("methods", "--json", path=noisy_ft)
    assert proc.returncode == 0, proc.stderr
    assert "PluginWarning" not in proc.stderr
    methods = json.loads(proc.stdout)
    assert list(methods) == [*BUILTIN, "noisy_ft"]
    spec = methods["noisy_ft"]
    assert spec["title"] == "Noisy FT"
    assert spec["groups"] == ["Noise", "Schedule", "Optimiser"]
    assert spec["knobs"]["noise"] == {**spec["knobs"]["noise"], "default": 0.1, "group": "Noise",
                                      "range": "[0, 10]"}
    assert {"lr", "epochs", "batch_size", "retain_fraction"} <= set(spec["knobs"])
    text = dimalign("methods", path=noisy_ft)
    assert text.returncode == 0 and "noisy_ft.noise = 0.1" in text.stdout


def test_a_plugin_runs_from_the_cli_with_its_knobs_set(noisy_ft, tiny_baselines):
    proc = dimalign("run", "--preset", "digits-class", "--method", "noisy_ft", "--set",
                    "train.epochs=2", "--set", "noisy_ft.lr=0.02", "--set",
                    "noisy_ft.noise=0.3", "--json", path=noisy_ft)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["method"] == "noisy_ft"
    assert result["cached"] == {"original": True, "retrained": True}  # only unlearning ran
    assert result["params"]["lr"] == 0.02 and result["params"]["noise"] == 0.3
    assert "acc_forget" in result["models"]["unlearned"]
    bad = dimalign("run", "--method", "noisy_ft", "--set", "noisy_ft.noise=-1", "--json",
                   path=noisy_ft, timeout=60)
    assert bad.returncode != 0 and "noisy_ft.noise" in bad.stderr


def test_a_broken_or_clashing_plugin_warns_and_dimalign_still_works(tmp_path):
    site = build_plugin(tmp_path / "src", tmp_path / "site", "dimalign-broken",
                        {"broken": "broken_plugin", "clash": "clash_plugin"},
                        {"broken_plugin": "raise RuntimeError('boom at import')\n",
                         "clash_plugin": "import dataclasses\n"
                                         "from dimalign.methods import REGISTRY, register\n"
                                         "register(dataclasses.replace(REGISTRY['ft'], "
                                         "title='Hijacked'))\n"})
    proc = dimalign("methods", "--json", path=site, timeout=120)
    assert proc.returncode == 0, proc.stderr
    methods = json.loads(proc.stdout)
    assert list(methods) == list(BUILTIN) and methods["ft"]["title"] == "FT"
    warned = [line for line in proc.stderr.splitlines() if "PluginWarning" in line]
    assert len(warned) == 2, proc.stderr
    broken, clash = sorted(warned)
    assert "'broken'" in broken and "broken_plugin" in broken and "boom at import" in broken
    assert "'clash'" in clash and "'ft' is already registered" in clash


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A module on sys.path holding a MethodSpec object; the registry is restored afterwards."""
    (tmp_path / "spec_plugin.py").write_text(textwrap.dedent("""\
        import dataclasses
        from dimalign.methods import REGISTRY
        SPEC = dataclasses.replace(REGISTRY["ft"], name="ft_again", title="FT again")
        CLASH = dataclasses.replace(REGISTRY["ft"], title="FT clash")
        NOT_A_SPEC = 3
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dict(REGISTRY)
    yield "spec_plugin"
    REGISTRY.clear()
    REGISTRY.update(before)
    sys.modules.pop("spec_plugin", None)


def test_an_entry_point_naming_a_method_spec_registers_it(plugin_module):
    _load_plugin(EntryPoint("ft_again", f"{plugin_module}:SPEC", "dimalign.methods"))
    assert list(REGISTRY)[-1] == "ft_again" and REGISTRY["ft_again"].title == "FT again"
    cfg = build_config("digits-class", ["ft_again.lr=0.01"])  # --set finds it by the registry
    assert cfg.method_params("ft_again")["lr"] == 0.01
    for value, reason in ((f"{plugin_module}:CLASH", "'ft' is already registered"),
                          (f"{plugin_module}:NOT_A_SPEC", "neither a module nor a MethodSpec")):
        before = dict(REGISTRY)
        with pytest.warns(PluginWarning, match=reason):
            _load_plugin(EntryPoint("bad", value, "dimalign.methods"))
        assert before == REGISTRY and REGISTRY["ft"].title == "FT"


def test_the_order_is_the_registration_order_builtins_first():
    assert tuple(REGISTRY) == ORDER
    assert ORDER[: len(BUILTIN)] == BUILTIN and BUILTIN[-1] == "muda"


def test_a_plugin_whose_knob_default_breaks_its_own_rules_is_skipped(tmp_path, monkeypatch):
    """A default outside its knob's range, or a text knob without choices, would break the
    Unlearn page's widget (or run unchecked): the plugin is skipped with a warning naming it."""
    (tmp_path / "bad_default.py").write_text(textwrap.dedent("""\
        import dataclasses
        from dimalign.methods import REGISTRY
        from dimalign.methods.base import Knob
        ft = REGISTRY["ft"]
        WIDE = dataclasses.replace(ft, name="wide", knobs={
            **ft.knobs, "noise": Knob(float, 20.0, "noise", 0.0, 10.0, group="Noise")})
        FREE = dataclasses.replace(ft, name="free", knobs={
            **ft.knobs, "mode": Knob(str, "a", "a mode", group="Noise")})
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = dict(REGISTRY)
    try:
        for value, reason in (("bad_default:WIDE", r"wide\.noise: must lie in \[0, 10\]"),
                              ("bad_default:FREE", r"free\.mode: .*choices")):
            with pytest.warns(PluginWarning, match=reason):
                _load_plugin(EntryPoint("bad", value, "dimalign.methods"))
            assert before == REGISTRY
    finally:
        REGISTRY.clear()
        REGISTRY.update(before)
        sys.modules.pop("bad_default", None)
