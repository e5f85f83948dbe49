"""Time of every metric of one model on a preset (default digits-class), median of several runs,
next to a baseline run in the same process: one forward pass over the train and test data.

    .venv/bin/python bench/metrics.py [--runs 5] [--preset digits-class]

The first run is reported apart as "cold" (imports, first sklearn and eigh calls).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, median  # noqa: E402

from dimalign.artifacts import geometry_bundle  # noqa: E402
from dimalign.config import build_config  # noqa: E402
from dimalign.geometry import dimensional_alignment, eigenspectrum  # noqa: E402
from dimalign.metrics import (  # noqa: E402
    linear_probe,
    mia_efficacy,
    model_outputs,
    nmi,
    retain_basis,
    split_accuracies,
)
from dimalign.train import get_baselines  # noqa: E402


def one_model(model, exp, ev, seed) -> dict[str, float]:
    """Every metric of one model, each timed."""
    times = {}

    def clock(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - start
        return value

    out = clock("forward (train+test)", lambda: model_outputs(model, exp))
    f, r = exp.forget, ~exp.forget
    clock("accuracies", lambda: split_accuracies(out, exp))
    clock("mia", lambda: mia_efficacy(out.logits_train[r], out.logits_test, out.logits_train[f],
                                      ev.mia_samples, seed))

    def da():
        basis = retain_basis(out.feats_train[r], ev)
        for feats in (out.feats_train[f], out.feats_test):
            dimensional_alignment(feats, out.feats_train[r], center=ev.center, basis=basis)

    clock("da + da_test", da)
    clock("linear probe + f1", lambda: linear_probe(out, exp, seed))
    clock("nmi", lambda: nmi(out, exp, ev.nmi_samples, seed))
    clock("effective rank", lambda: eigenspectrum(out.feats_train[r]))
    clock("geometry artifacts", lambda: geometry_bundle({"m": out}, exp, ev, seed))
    times["total"] = sum(times.values())
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--preset", default="digits-class")
    args = parser.parse_args()
    cfg = build_config(args.preset)
    baselines = get_baselines(cfg)
    exp = baselines.experiment
    header("all metrics of one model", {"preset": args.preset, "runs": args.runs,
                                        "model": cfg.model_name, **exp.summary(),
                                        **{f"eval.{k}": v for k, v in
                                           cfg.to_dict()["eval"].items()}})
    cold = one_model(baselines.original, exp, cfg.eval, cfg.seed)
    warm = [one_model(baselines.original, exp, cfg.eval, cfg.seed) for _ in range(args.runs)]
    print(f"{'part':<24}{'cold s':>9}{'warm median s':>15}")
    for part in cold:
        print(f"{part:<24}{cold[part]:>9.3f}{median([w[part] for w in warm]):>15.3f}")
    total = median([w["total"] for w in warm])
    forward = median([w["forward (train+test)"] for w in warm])
    print(f"all metrics, one model: median {total:.2f} s (target <= 10 s); "
          f"{total / forward:.1f}x one forward pass over the data")


if __name__ == "__main__":
    main()
