"""Resume is exact: for every registered method, in every mode that keeps state of its own, a
run stopped at an epoch boundary (or in the middle of an epoch) and resumed from its last
checkpoint ends with the very weights of the run left alone."""

import dataclasses
import io

import pytest
import torch

from dimalign.config import build_config
from dimalign.methods import ORDER, REGISTRY
from dimalign.methods.base import MethodSpec
from dimalign.methods.loop import Cancelled, unlearn

# Each trained method with its defaults, plus the modes whose state is not in the weights:
# MUDA's retain bank (refreshed across an epoch boundary), its step-wise alternation, feature
# self-distillation with centring, and Adam's moments on a method that defaults to SGD.
CASES = [(name, ()) for name in ORDER if REGISTRY[name].trains] + [
    ("muda", ("muda.basis=bank", "muda.bank_refresh=3", "muda.bank_size=64")),
    ("muda", ("muda.alternate=steps", "muda.alternate_steps=2", "muda.ratio_recover=2")),
    ("muda", ("muda.sd=mse", "muda.center=true", "muda.k=4")),
    ("ft", ("ft.optimizer=adam",)),
]


def resume_cfg(name: str, *extra: str):
    # a small retain_fraction: a few steps an epoch, three epochs for two boundaries
    return build_config("digits-class", ["train.epochs=2", f"{name}.epochs=3",
                                         f"{name}.retain_fraction=0.1", "eval.film_frames=30",
                                         *extra])


def through_a_file(state: dict) -> dict:
    """A checkpoint as a worker writes and reads it (weights_only: plain data only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(("name", "extra"), CASES,
                         ids=[f"{n}-{'-'.join(e) or 'defaults'}" for n, e in CASES])
def test_a_run_resumed_at_an_epoch_boundary_is_bit_identical(name, extra, tiny_baselines):
    b = tiny_baselines
    cfg = resume_cfg(name, *extra)
    saved: list[dict] = []
    whole = unlearn(cfg, REGISTRY[name], b.experiment, b.original, b.device,
                    checkpoint=lambda state: saved.append(through_a_file(state)),
                    retrained=b.retrained)
    assert [s["epoch"] for s in saved] == [1, 2, 3]
    for boundary in saved[:2]:
        resumed = unlearn(cfg, REGISTRY[name], b.experiment, b.original, b.device,
                          resume=boundary, retrained=b.retrained)
        assert resumed.steps == whole.steps
        assert same_weights(whole.model, resumed.model), f"resumed after epoch " \
            f"{boundary['epoch']} differs"
        assert same_film(whole.film, resumed.film), f"the film resumed after epoch " \
            f"{boundary['epoch']} differs"


def same_film(a: dict, b: dict) -> bool:
    """The same frames at the same steps: those before the checkpoint kept, the rest recorded
    as the uninterrupted run recorded them."""
    return (a["steps"] == b["steps"] and len(a["steps"]) >= 2 and a["rows"] == b["rows"]
            and torch.equal(a["features"], b["features"])
            and torch.equal(a["confidence"], b["confidence"])
            and all(torch.equal(a["view"][k], b["view"][k]) for k in a["view"]))


def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint(tiny_baselines):
    b = tiny_baselines
    cfg = resume_cfg("muda", "muda.basis=bank", "muda.bank_refresh=3", "muda.bank_size=64",
                     "muda.batch_size=32", "unlearn.telemetry_every=1")
    spec = REGISTRY["muda"]
    points: list[dict] = []
    ends: list[int] = []
    whole = unlearn(cfg, spec, b.experiment, b.original, b.device, telemetry=points.append,
                    checkpoint=lambda state: ends.append(state["step"]))
    saved: list[dict] = []
    steps = iter(range(10**6))
    stop_at = ends[0] + (ends[1] - ends[0]) // 2  # steps done: mid second epoch
    assert ends[0] < stop_at < ends[1]
    with pytest.raises(Cancelled):
        unlearn(cfg, spec, b.experiment, b.original, b.device,
                checkpoint=lambda state: saved.append(through_a_file(state)),
                cancel=lambda: next(steps) >= stop_at)
    assert [s["epoch"] for s in saved] == [1]  # the second epoch never saved
    later: list[dict] = []
    resumed = unlearn(cfg, spec, b.experiment, b.original, b.device, resume=saved[-1],
                      telemetry=later.append)
    assert same_weights(whole.model, resumed.model)
    # the probe after the resume sees the very models the uninterrupted run saw (at the points
    # both probed: the probe skips points to stay within its share of the time)
    probe_keys = ("acc_retain", "acc_forget", "acc_test", "da")
    at = {p["step"]: p for p in points if "da" in p}
    assert later and all(p["step"] > saved[-1]["step"] for p in later)
    both = [p for p in later if "da" in p and p["step"] in at]
    assert both and both[-1]["step"] == whole.steps
    for point in both:
        assert {k: point[k] for k in probe_keys} == {k: at[point["step"]][k] for k in probe_keys}


def test_method_state_that_cannot_be_saved_is_named_at_the_first_checkpoint(tiny_baselines):
    b = tiny_baselines

    def keep_a_set(ctx):
        ctx.state["seen"] = {1, 2}

    spec = dataclasses.replace(REGISTRY["ft"], name="ft", setup=keep_a_set)
    cfg = resume_cfg("ft")
    with pytest.raises(TypeError, match=r"ctx.state\['seen'\] is a set"):
        unlearn(cfg, spec, b.experiment, b.original, b.device, checkpoint=lambda s: None)
    assert isinstance(spec, MethodSpec)


def test_a_checkpoint_without_method_state_is_refused_with_a_reason(tiny_baselines):
    b = tiny_baselines
    cfg = resume_cfg("ft")
    saved: list[dict] = []
    unlearn(cfg, REGISTRY["ft"], b.experiment, b.original, b.device, checkpoint=saved.append)
    old = {k: v for k, v in saved[0].items() if k not in ("format", "method")}
    with pytest.raises(ValueError, match="older dimalign"):
        unlearn(cfg, REGISTRY["ft"], b.experiment, b.original, b.device, resume=old)
