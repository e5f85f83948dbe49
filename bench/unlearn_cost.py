"""Each unlearning method's wall time as a fraction of retraining, and live telemetry's cost.

Wall time of every unlearning method as a fraction of retraining time on the same preset,
and the cost of live telemetry (the same run with and without it), medians of several runs in
one process.

    .venv/bin/python -m bench unlearn_cost [--preset digits-class] [--runs 5] [--methods a,b]

On a CIFAR-10 preset without CIFAR-10 on the machine, CIFAR-shaped synthetic data stands in
(the header says so) and models are cached in a throw-away DIMALIGN_HOME, never beside real ones.
"""

from __future__ import annotations

import os
import tempfile

from bench.common import cifar10_arrays, header, median, parser, use_arrays
from dimalign.config import build_config
from dimalign.methods import ORDER, REGISTRY
from dimalign.methods.loop import unlearn
from dimalign.train import get_baselines, train_classifier


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class")
    options.add_argument("--retrain-runs", type=int, default=3)
    options.add_argument("--methods", default=",".join(ORDER))
    options.add_argument("--baseline-epochs", type=int,
                         help="train the cached original/retrained models for this many epochs "
                              "(their quality does not change the timings); the timed "
                              "retraining always uses the preset's epochs")
    args = options.parse_args(argv)
    cfg = build_config(args.preset)
    baseline_cfg = cfg if args.baseline_epochs is None else build_config(
        args.preset, [f"train.epochs={args.baseline_epochs}"])
    data = cfg.dataset
    if cfg.dataset == "cifar10":
        arrays, data = cifar10_arrays()
        if data != "CIFAR-10":
            os.environ["DIMALIGN_HOME"] = tempfile.mkdtemp(prefix="dimalign-bench-")
        use_arrays("cifar10", arrays)
    b = get_baselines(baseline_cfg)
    exp = b.experiment
    header("unlearning cost", {"preset": args.preset, "data": data, "device": b.device,
                               "runs": args.runs, "retrain epochs": cfg.train.epochs,
                               "baseline epochs": baseline_cfg.train.epochs,
                               "telemetry_every": cfg.unlearn.telemetry_every,
                               "telemetry_samples": cfg.unlearn.telemetry_samples})
    keep = exp.retain_idx
    retrain = median([train_classifier(cfg, exp.info, exp.x_train[keep], exp.y_train[keep],
                                       b.device, "retrained")[1]
                      for _ in range(args.retrain_runs)])
    print(f"retraining (baseline, same process): median {retrain:.2f} s "
          f"over {args.retrain_runs} runs")
    print("overhead = median wall time with telemetry / without - 1; inside = the loop's own "
          "clock of time spent in telemetry / the rest of that run")
    print(f"{'method':<14}{'steps':>6}{'median s':>10}{'/ retrain':>10}"
          f"{'with telemetry s':>18}{'overhead':>10}{'inside':>8}{'points':>8}")
    for name in args.methods.split(","):
        spec = REGISTRY[name]
        if not spec.trains:
            print(f"{name:<14}{'-':>6}{retrain:>10.3f}{1.0:>10.3f}")
            continue
        plain, watched, inside, steps, points = [], [], [], 0, 0
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            out = unlearn(cfg, spec, exp, b.original, b.device)
            plain.append(out.seconds)
            steps = out.steps
            seen = unlearn(cfg, spec, exp, b.original, b.device, telemetry=lambda p: None)
            watched.append(seen.seconds)
            inside.append(seen.telemetry_seconds / (seen.seconds - seen.telemetry_seconds))
            points = len(seen.telemetry)
        p, w = median(plain), median(watched)
        print(f"{name:<14}{steps:>6}{p:>10.3f}{p / retrain:>10.3f}{w:>18.3f}"
              f"{(w / p - 1):>10.1%}{median(inside):>8.1%}{points:>8}")
    return 0
