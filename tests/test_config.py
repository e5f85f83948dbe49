import dataclasses

import pytest

from dimalign.config import (
    DEFAULT_PRESET,
    Config,
    build_config,
    config_from_dict,
    load_preset,
    preset_names,
)
from dimalign.errors import ConfigError

REQUIRED_PRESETS = {"digits-class", "digits-random", "digits-backdoor", "mnist-class",
                    "cifar10-class", "cifar10-random", "cifar100-class"}


def test_every_required_preset_exists_validates_and_is_described():
    assert set(preset_names()) >= REQUIRED_PRESETS
    for name in preset_names():
        description, _ = load_preset(name)
        assert len(description) > 20, name
        assert isinstance(build_config(name), Config)


def test_default_preset_forgets_one_digit_of_the_embedded_data():
    cfg = build_config(DEFAULT_PRESET)
    assert (cfg.dataset, cfg.scenario.kind, len(cfg.scenario.classes)) == ("digits", "class", 1)
    assert cfg.model_name == "cnn"
    assert build_config("cifar10-class").model_name == "resnet18"


def test_overrides_are_parsed_by_type_and_config_is_frozen():
    cfg = build_config("digits-class", ["scenario.classes=3,5", "train.epochs=4", "seed=7",
                                        "train.augment=false", "train.lr=0.1"])
    assert cfg.scenario.classes == (3, 5)
    assert (cfg.train.epochs, cfg.seed, cfg.train.augment, cfg.train.lr) == (4, 7, False, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


@pytest.mark.parametrize("overrides, key, words", [
    (["scenario.classes=10"], "scenario.classes", "0..9"),
    (["scenario.classes=-1"], "scenario.classes", "0..9"),
    (["scenario.classes=" + ",".join(map(str, range(10)))], "scenario.classes", "retain set"),
    (["scenario.classes="], "scenario.classes", "forget set is empty"),
    (["scenario.kind=random", "scenario.fraction=0"], "scenario.fraction", "(0, 1)"),
    (["scenario.kind=random", "scenario.fraction=1"], "scenario.fraction", "(0, 1)"),
    (["scenario.kind=random", "scenario.fraction=1.5"], "scenario.fraction", "(0, 1)"),
    (["scenario.kind=random", "scenario.fraction=0.0001"], "scenario.fraction", "empty"),
    (["scenario.kind=backdoor", "scenario.target=12"], "scenario.target", "0..9"),
    (["scenario.kind=forgetful"], "scenario.kind", "class, random, backdoor"),
    (["scenario.colour=red"], "scenario.colour", "scenario.kind"),
    (["colour=red"], "colour", "dataset"),
    (["dataset=imagenet"], "dataset", "cifar10"),
    (["train.epochs=ten"], "train.epochs", "expected int"),
    (["train.epochs=0"], "train.epochs", "at least 1"),
    (["train.augment=maybe"], "train.augment", "true or false"),
    (["scenario=class"], "scenario", "scenario.kind"),
    (["seed"], "--set", "key=value"),
    (["unlearn.telemetry_every=often"], "unlearn.telemetry_every", "'auto'"),
    (["unlearn.telemetry_every=-1"], "unlearn.telemetry_every", "0 (no telemetry)"),
])
def test_bad_values_are_rejected_naming_the_key_and_what_is_allowed(overrides, key, words):
    with pytest.raises(ConfigError) as info:
        build_config("digits-class", overrides)
    assert info.value.key == key
    assert words in str(info.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="digits-class"):
        build_config("no-such-preset")


def test_settings_files_are_checked_like_overrides():
    with pytest.raises(ConfigError, match="train.epochz"):
        config_from_dict({"train": {"epochz": 3}})
    with pytest.raises(ConfigError, match="expected float"):
        config_from_dict({"train": {"lr": "fast"}})
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_telemetry_cadence_is_auto_by_default_and_a_fixed_number_of_steps_when_set():
    auto = build_config("digits-class").unlearn
    assert auto.telemetry_every == "auto"
    assert [auto.cadence(n) for n in (1, 16, 49, 50, 99, 100, 1000)] == [1, 1, 1, 1, 1, 2, 20]
    assert all(n // auto.cadence(n) >= min(n, 50) for n in range(1, 2000))  # >= 50 points
    fixed = build_config("digits-class", ["unlearn.telemetry_every=7"]).unlearn
    assert (fixed.telemetry_every, fixed.cadence(1000)) == (7, 7)
    assert build_config("digits-class", ["unlearn.telemetry_every=0"]).unlearn.cadence(100) == 0
    assert build_config("digits-class", ["unlearn.telemetry_every=auto"]).unlearn == auto
    # saved configs (a number) and settings files (either) load as before
    assert config_from_dict({"unlearn": {"telemetry_every": 10}}).unlearn.cadence(5) == 10
    assert config_from_dict({"unlearn": {"telemetry_every": "auto"}}).unlearn == auto
    for bad in (True, 2.5, "sometimes"):
        with pytest.raises(ConfigError, match="unlearn.telemetry_every"):
            config_from_dict({"unlearn": {"telemetry_every": bad}})


def test_method_knobs_are_read_and_checked_by_the_method_spec_alone():
    from dimalign.methods import REGISTRY

    spec = REGISTRY["muda"]
    # text from --set and values from a settings file end up the same, coerced by the spec
    by_text = build_config("digits-class", ["muda.lambda_da=2", "muda.center=yes"])
    by_value = config_from_dict({**load_preset("digits-class")[1],
                                 "muda": {"lambda_da": 2, "center": True}})
    assert by_text.methods == by_value.methods == {"muda": {"lambda_da": 2.0, "center": True}}
    assert by_text.method_params("muda") == {**spec.defaults(), "lambda_da": 2.0, "center": True}
    assert spec.parse("k", "7") == 7 and spec.check({"lambda_da": 3}) == {"lambda_da": 3.0}
    for bad, words in ((["muda.lambda_da=lots"], "expected float"),
                       (["muda.nope=1"], "allowed knobs are muda.lambda_da")):
        with pytest.raises(ConfigError, match=words):
            build_config("digits-class", bad)
    with pytest.raises(ConfigError, match="muda.lambda_da: expected float"):  # files stay typed
        config_from_dict({"muda": {"lambda_da": "2"}})
