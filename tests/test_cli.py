import json
from pathlib import Path

import pytest

from dimalign.methods import ORDER
from dimalign.metric_table import TABLE, TIME_FRACTION, for_scenario, shown


def per_model(kind: str) -> set[str]:
    """What every model of a run reports in a scenario (avg-gap: all but the retrained)."""
    return set(for_scenario(kind)) - {"avg_gap"}


def in_range(key: str, value: float) -> bool:
    low, high = TABLE[key].range
    return (low is None or value >= low - 1e-9) and (high is None or value <= high + 1e-9)


def test_presets_lists_every_preset_with_a_description(cli):
    proc = cli("presets")
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    names = {line.split()[0] for line in lines}
    assert {"digits-class", "digits-random", "digits-backdoor", "cifar100-class"} <= names
    assert all(len(line.split(maxsplit=1)[1]) > 20 for line in lines)


def test_top_level_help_lists_every_command_with_its_help(cli):
    import argparse

    from dimalign import cli as module

    parser = module.build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help for c in commands._choices_actions}
    assert set(helps) == set(commands.choices) and all(helps.values())
    # every cmd_* function is reachable from a command
    wired = {p.get_default("func") for p in commands.choices.values()}
    assert wired == {getattr(module, n) for n in dir(module) if n.startswith("cmd_")}
    proc = cli("--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps long help lines
    for name, text_of in helps.items():
        assert f" {name} " in text and " ".join(text_of.split()) in text, name


@pytest.fixture(scope="module")
def json_runs(tmp_path_factory, cli_process):
    """`run --json` twice on an empty home: the first trains, the second loads from cache."""
    home = tmp_path_factory.mktemp("cli-home")
    args = ("run", "--preset", "digits-backdoor", "--set", "train.epochs=2", "--json")
    # as processes: what reaches the real stdout is the contract
    return cli_process(*args, home=home), cli_process(*args, home=home)


def test_run_json_prints_exactly_one_object_with_the_contract_keys(json_runs):
    first, _ = json_runs
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)  # fails if anything else is on stdout
    assert {"preset", "config", "device", "models", "seconds"} <= set(result)
    assert result["preset"] == "digits-backdoor"
    assert result["config"]["train"]["epochs"] == 2
    for model in ("original", "retrained"):
        row = result["models"][model]
        assert per_model("backdoor") <= set(row)  # a backdoor run reports the attack success
        assert all(in_range(k, v) for k, v in row.items() if v is not None)
        assert result["seconds"][model] > 0
    assert "avg_gap" in result["models"]["original"]
    assert result["samples"]["mia_per_side"] > 0 and result["samples"]["lp_fit"] > 0
    assert "epoch 2/2" in first.stderr  # progress went to stderr
    assert (Path(result["artifacts"]) / "geometry.pt").exists()


def test_second_run_comes_from_the_cache_with_the_same_numbers(json_runs):
    first, second = json_runs
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["cached"] == {"original": False, "retrained": False}
    assert b["cached"] == {"original": True, "retrained": True, "result": True}
    assert a["models"] == b["models"] and a["seconds"] == b["seconds"]
    assert "evaluating" in first.stderr and "evaluating" not in second.stderr  # reused


def test_readable_table_without_json(tiny_baselines, cli):
    proc = cli("run", "--set", "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split() == ["metric", "original", "retrained"]
    names = [r.split()[0] for r in rows]
    assert names[:len(for_scenario("class"))] == list(for_scenario("class"))  # table order
    assert "seconds" in names


@pytest.mark.parametrize("args, words", [
    (("--set", "scenario.classes=42"), "scenario.classes: class 42 out of range; allowed 0..9"),
    (("--set", "train.bogus=1"), "train.bogus: unknown key"),
    (("--method", "magic"), "--method"),
    (("--preset", "nope"), "preset: unknown preset 'nope'"),
])
def test_bad_input_exits_2_with_one_clear_line_and_nothing_on_stdout(args, words, cli_process):
    proc = cli_process("run", *args)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_compare_methods_list_ignores_a_trailing_comma_and_refuses_an_empty_one(cli):
    proc = cli("compare", "--methods", " , ")
    assert proc.returncode == 2 and "--methods: names no method" in proc.stderr
    assert "unknown method 'nope'" in cli("compare", "--methods", ",nope").stderr  # not ''



@pytest.fixture(scope="module")
def muda_run(tmp_path_factory, cli):
    home = tmp_path_factory.mktemp("cli-muda")
    return home, cli("run", "--set", "train.epochs=2", "--method", "muda", "--json",
                          "--umap", "90", home=home)


def test_run_with_a_method_adds_the_unlearned_model_and_its_time(muda_run):
    home, proc = muda_run
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["models"]) == {"original", "retrained", "unlearned"}
    assert set(for_scenario("class")) == set(result["models"]["unlearned"])
    assert result["seconds"]["unlearn"] > 0
    assert result["method"] == "muda" and result["params"]["lambda_da"] == 5.0
    run_dir = Path(result["artifacts"])
    assert {"result.json", "geometry.pt", "telemetry.json", "unlearned.pt"} <= {
        p.name for p in run_dir.iterdir()}
    points = json.loads((run_dir / "telemetry.json").read_text())
    assert len(points) >= 2 and any("loss_da" in p for p in points) and "da" in points[-1]


def test_run_with_umap_saves_the_aligned_frame_the_manifolds_page_reads(muda_run):
    import torch

    _, proc = muda_run
    umap = json.loads(proc.stdout)["umap"]
    assert umap["points"] == 90 and umap["backend"] == "umap-learn" and umap["seconds"] > 0
    bundle = torch.load(umap["path"], weights_only=True)
    assert set(bundle["coords"]) == {"original", "retrained", "unlearned"}
    assert all(c.shape == (90, 2) and torch.isfinite(c).all() for c in bundle["coords"].values())
    assert bundle["split"].count("forget") == 30


def test_warm_compiles_umap_once_and_says_where(cli):
    from dimalign.embed import numba_cache_dir

    forced = cli("warm", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "compiled into" in forced.stdout and str(numba_cache_dir()) in forced.stdout
    again = cli("warm")
    assert again.returncode == 0 and "UMAP is warm" in again.stdout


def test_a_diverging_run_fails_naming_the_term_and_leaves_no_result(muda_run, cli_process):
    """An injected NaN in the cached original: the run stops, nothing half-written stays."""
    import torch

    from dimalign import checked

    home, _ = muda_run
    (original,) = (home / "models").glob("original-*.pt")
    state = torch.load(original, weights_only=True)
    state["head.bias"][0] = float("nan")
    torch.save(state, original)
    checked.reseal(original)  # a deliberate edit, not damage: the run must use these weights
    runs_before = set((home / "runs").iterdir())
    # its own process: this one keeps the loaded original in memory (train.LOADED)
    proc = cli_process("run", "--set", "train.epochs=2", "--set", "muda.lr=0.02", "--method",
                       "muda", home=home)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "loss term 'sd' became nan at step 1" in proc.stderr
    assert set((home / "runs").iterdir()) == runs_before


def test_methods_lists_the_registry_with_defaults(cli):
    proc = cli("methods", "--json")
    assert proc.returncode == 0
    listed = json.loads(proc.stdout)
    assert list(listed) == list(ORDER) and listed["muda"]["knobs"]["lambda_da"]["default"] == 5.0
    assert "Seo" in listed["muda"]["paper"]
    text = cli("methods").stdout
    assert "muda.lambda_sd" in text and "salun.mask_ratio" in text


def test_compare_reports_every_method_with_gaps_and_time_fractions(tiny_baselines, cli):
    proc = cli("compare", "--set", "train.epochs=2", "--methods", "retrain,ga,muda",
                    "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["methods"]
    assert list(rows) == ["original", "retrain", "ga", "muda"]
    assert rows["retrain"][TIME_FRACTION.name] == 1.0
    assert rows["retrain"]["gaps"]["acc_forget"] == 0.0
    assert rows["muda"]["gaps"]["acc_forget"] == pytest.approx(
        rows["muda"]["acc_forget"] - rows["retrain"]["acc_forget"])
    assert rows["muda"]["gaps"]["avg_gap"] == rows["muda"]["avg_gap"]  # its own gap
    assert rows["muda"][TIME_FRACTION.name] > 0
    table = cli("compare", "--set", "train.epochs=2", "--methods", "ft,muda").stdout
    assert "gap to retrained" in table and table.count("\n") >= 5
    header = table.splitlines()[1]
    shown_here = [k for k in shown("cli") if k in for_scenario("class")]
    assert header.split()[1:len(shown_here) + 1] == shown_here and TIME_FRACTION.title in header
