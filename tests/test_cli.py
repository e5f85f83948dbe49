import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PER_MODEL = ("acc_retain", "acc_forget", "acc_test", "mia", "da", "da_test", "lp_forget",
             "lp_test", "nmi", "effective_rank", "cka_retrained", "cka_original")


def dimalign(*args, home=None, timeout=300):
    env = dict(os.environ)
    if home is not None:
        env["DIMALIGN_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "dimalign", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_presets_lists_every_preset_with_a_description():
    proc = dimalign("presets")
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    names = {line.split()[0] for line in lines}
    assert {"digits-class", "digits-random", "digits-backdoor", "cifar100-class"} <= names
    assert all(len(line.split(maxsplit=1)[1]) > 20 for line in lines)


@pytest.fixture(scope="module")
def json_runs(tmp_path_factory):
    """`run --json` twice on an empty home: the first trains, the second loads from cache."""
    home = tmp_path_factory.mktemp("cli-home")
    args = ("run", "--preset", "digits-backdoor", "--set", "train.epochs=2", "--json")
    return dimalign(*args, home=home), dimalign(*args, home=home)


def test_run_json_prints_exactly_one_object_with_the_contract_keys(json_runs):
    first, _ = json_runs
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)  # fails if anything else is on stdout
    assert {"preset", "config", "device", "models", "seconds"} <= set(result)
    assert result["preset"] == "digits-backdoor"
    assert result["config"]["train"]["epochs"] == 2
    for model in ("original", "retrained"):
        row = result["models"][model]
        assert set(PER_MODEL) <= set(row)
        assert all(0.0 <= row[k] <= 1.0 for k in PER_MODEL if k != "effective_rank")
        assert result["seconds"][model] > 0
    assert "asr" in result["models"]["original"]  # a backdoor run reports the attack success
    assert "avg_gap" in result["models"]["original"]
    assert result["samples"]["mia_per_side"] > 0 and result["samples"]["lp_fit"] > 0
    assert "epoch 2/2" in first.stderr  # progress went to stderr
    assert (Path(result["artifacts"]) / "geometry.pt").exists()


def test_second_run_comes_from_the_cache_with_the_same_numbers(json_runs):
    first, second = json_runs
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["cached"] == {"original": False, "retrained": False}
    assert b["cached"] == {"original": True, "retrained": True}
    assert a["models"] == b["models"] and a["seconds"] == b["seconds"]
    assert "evaluating" in first.stderr and "evaluating" not in second.stderr  # reused


def test_readable_table_without_json(tiny_baselines):
    proc = dimalign("run", "--set", "train.epochs=2")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split() == ["metric", "original", "retrained"]
    names = [r.split()[0] for r in rows]
    assert {"acc_forget", "da", "mia", "acc_test_forgotten", "f1_forget", "seconds"} <= set(names)


@pytest.mark.parametrize("args, words", [
    (("--set", "scenario.classes=42"), "scenario.classes: class 42 out of range; allowed 0..9"),
    (("--set", "train.bogus=1"), "train.bogus: unknown key"),
    (("--method", "magic"), "--method"),
    (("--preset", "nope"), "preset: unknown preset 'nope'"),
])
def test_bad_input_exits_2_with_one_clear_line_and_nothing_on_stdout(args, words):
    proc = dimalign("run", *args)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
