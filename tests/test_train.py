import os
import time

import pytest
import torch

from dimalign import paths
from dimalign.config import build_config
from dimalign.data import build_experiment
from dimalign.metrics import accuracies
from dimalign.train import (
    TrainingDiverged,
    cache_key,
    cache_path,
    get_baselines,
    pick_device,
    train_classifier,
)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_second_request_loads_identical_weights_from_cache_in_well_under_a_second(
        tiny_cfg, tiny_baselines):
    start = time.perf_counter()
    again = get_baselines(tiny_cfg)
    elapsed = time.perf_counter() - start
    assert again.cached == {"original": True, "retrained": True}
    assert elapsed < 1.0
    assert _same_weights(again.original, tiny_baselines.original)
    assert _same_weights(again.retrained, tiny_baselines.retrained)
    assert again.seconds == pytest.approx(tiny_baselines.seconds)  # recorded training time
    leftovers = [p for p in os.listdir(paths.models_dir()) if p.endswith(".tmp")]
    assert leftovers == []


def test_checkpoints_are_plain_state_dicts_loadable_with_weights_only(tiny_cfg, tiny_baselines):
    state = torch.load(cache_path(cache_key(tiny_cfg, "original")), weights_only=True)
    assert set(state) == set(tiny_baselines.original.state_dict())


def test_one_original_serves_every_class_and_random_scenario_but_not_backdoor():
    three = build_config("digits-class")
    five = build_config("digits-class", ["scenario.classes=5"])
    rand = build_config("digits-random")
    back = build_config("digits-backdoor")
    shared = cache_key(three, "original")
    assert shared == cache_key(five, "original") == cache_key(rand, "original")
    assert cache_key(three, "original") != cache_key(back, "original")
    assert cache_key(three, "retrained") != cache_key(five, "retrained")
    # settings a scenario does not use do not split the cache
    assert cache_key(three, "retrained") == cache_key(
        build_config("digits-class", ["scenario.fraction=0.3"]), "retrained")
    assert cache_key(three, "original") != cache_key(
        build_config("digits-class", ["train.epochs=5"]), "original")


def test_progress_reports_every_step_in_order_with_finite_losses(tiny_cfg):
    exp = build_experiment(tiny_cfg)
    events = []
    train_classifier(tiny_cfg, exp.info, exp.x_train[:300], exp.y_train[:300],
                     torch.device("cpu"), "original", events.append)
    steps_per_epoch = -(-300 // tiny_cfg.train.batch_size)
    assert len(events) == tiny_cfg.train.epochs * steps_per_epoch
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    losses = [e.loss for e in events if e.loss is not None]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_diverging_training_fails_with_the_step_and_caches_nothing():
    cfg = build_config("digits-class", ["train.epochs=1", "train.lr=1e6"])
    with pytest.raises(TrainingDiverged, match=r"cross-entropy loss became nan at epoch 1, step"):
        get_baselines(cfg)
    assert not os.path.exists(cache_path(cache_key(cfg, "original")))


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected is None:
        with pytest.raises(RuntimeError, match="device=auto"):
            pick_device("cuda")
    assert pick_device("auto").type in ("cuda", "mps", "cpu")


def test_default_preset_original_is_accurate_and_retrained_has_forgotten(default_baselines):
    exp = default_baselines.experiment
    original = accuracies(default_baselines.original, exp)
    retrained = accuracies(default_baselines.retrained, exp)
    assert original["acc_test"] >= 0.95
    assert original["acc_forget"] >= 0.95
    assert retrained["acc_forget"] <= 0.05
    assert retrained["acc_retain"] >= 0.95


def test_compiled_training_learns_the_same_weights_and_shares_the_cache(monkeypatch):
    """train.compile wraps the step in torch.compile (aot_eager here: the same graph capture
    as inductor without its minute-long C++ build on a CPU); the model keeps plain weights."""
    monkeypatch.setenv("DIMALIGN_COMPILE_BACKEND", "aot_eager")
    plain = build_config("digits-class", ["train.epochs=1"])
    fast = build_config("digits-class", ["train.epochs=1", "train.compile=true"])
    assert fast.train.compile and cache_key(plain, "original") == cache_key(fast, "original")
    exp = build_experiment(plain)
    x, y = exp.x_train[:256], exp.y_train[:256]
    a, _ = train_classifier(plain, exp.info, x, y, torch.device("cpu"), "original")
    torch._dynamo.reset()
    b, _ = train_classifier(fast, exp.info, x, y, torch.device("cpu"), "original")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    assert a.state_dict().keys() == b.state_dict().keys()  # no "_orig_mod." prefixes
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, atol=1e-4, rtol=1e-3)
