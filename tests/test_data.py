import numpy as np
import torch

from dimalign.config import build_config
from dimalign.data import augment, build_experiment, load_arrays, stamp_trigger
from dimalign.datasets import DATASETS, stratified_split


def test_digits_split_is_deterministic_disjoint_stratified_and_holds_a_quarter_for_test():
    x_tr, y_tr, x_te, y_te = DATASETS["digits"].load(0)
    again = DATASETS["digits"].load(0)
    assert all(torch.equal(a, b) for a, b in zip((x_tr, y_tr, x_te, y_te), again, strict=True))
    other = DATASETS["digits"].load(1)
    assert not torch.equal(y_te, other[3])
    info = DATASETS["digits"]
    assert (len(y_tr), len(y_te)) == (info.n_train, info.n_test)
    assert len(y_te) / (len(y_tr) + len(y_te)) >= 0.25
    assert x_tr.dtype == torch.uint8 and x_tr.shape[1:] == (1, 8, 8)
    assert torch.bincount(y_te).min() >= 0.25 * torch.bincount(y_te).max()  # stratified


def test_stratified_split_is_a_disjoint_cover_per_class():
    labels = np.repeat(np.arange(4), [10, 7, 3, 1])
    train, test = stratified_split(labels, 0.3, seed=0)
    assert not set(train) & set(test)
    assert sorted(np.concatenate([train, test])) == list(range(len(labels)))
    assert np.bincount(labels[test], minlength=4).tolist() == [3, 3, 1, 1]


def test_class_scenario_forgets_exactly_the_named_classes():
    exp = build_experiment(build_config("digits-class", ["scenario.classes=3,7"]))
    assert set(exp.y_train[exp.forget].tolist()) == {3, 7}
    assert not set(exp.y_train[~exp.forget].tolist()) & {3, 7}
    assert set(exp.y_test[exp.test_forgotten].tolist()) == {3, 7}
    assert len(exp.retain_idx) + len(exp.forget_idx) == len(exp.y_train)


def test_random_scenario_is_seeded_and_the_right_size():
    cfg = build_config("digits-random", ["scenario.fraction=0.2"])
    a, b = build_experiment(cfg), build_experiment(cfg)
    assert torch.equal(a.forget, b.forget)
    assert int(a.forget.sum()) == round(0.2 * len(a.y_train))
    c = build_experiment(build_config("digits-random", ["scenario.fraction=0.2", "seed=1"]))
    assert not torch.equal(a.forget[: len(c.forget)], c.forget)
    assert not a.test_forgotten.any()


def test_backdoor_scenario_stamps_and_relabels_only_the_forget_set():
    cfg = build_config("digits-backdoor")
    exp = build_experiment(cfg)
    x_clean, y_clean, _, _ = load_arrays(cfg.dataset, cfg.seed)
    f = exp.forget
    assert (exp.y_train[f] == cfg.scenario.target).all()
    assert (y_clean[f] != cfg.scenario.target).all()  # drawn from the other classes
    assert (exp.x_train[f][..., -2:, -2:] == 255).all()
    assert torch.equal(exp.x_train[~f], x_clean[~f]) and torch.equal(exp.y_train[~f], y_clean[~f])
    assert (exp.x_trigger[..., -2:, -2:] == 255).all()
    assert (exp.y_trigger != cfg.scenario.target).all()
    assert torch.equal(build_experiment(cfg).forget, f)


def test_stamp_trigger_leaves_its_input_alone():
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    y = stamp_trigger(x, 4)
    assert x.sum() == 0 and int((y == 255).sum()) == 2 * 3 * 16


def test_augment_keeps_shape_and_dtype_and_only_translates_and_flips():
    info = DATASETS["cifar10"]
    x = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, info, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x)
    # a zero shift and no flip happens for some samples; the others are shifted copies
    same = [(out[i] == x[i]).all().item() for i in range(16)]
    assert 0 <= sum(same) < 16
    again = augment(x, info, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
