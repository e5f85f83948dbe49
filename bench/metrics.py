"""Every metric of one model, and the UMAP of its features, cold and warm.

Time of every metric of one model on a preset (default digits-class), median of several runs,
next to a baseline run in the same process: one forward pass over the train and test data.
Then the UMAP of that model's features, cold (first call in the process) and warm: one model
(fit), and the aligned frame the Manifolds page draws (fit + transform of two more models).

    .venv/bin/python -m bench metrics [--runs 5] [--preset digits-class] [--umap-points 2000]
                                      [--cold-numba]

The first run is reported apart as "cold" (imports, first sklearn and eigh calls). UMAP's cold
call depends on NUMBA_CACHE_DIR: --cold-numba points it at an empty folder first (the very first
UMAP on a machine); without it a kept cache makes the first call cost only the imports.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from bench.common import header, median, parser
from dimalign.artifacts import geometry_bundle
from dimalign.config import build_config
from dimalign.geometry import eigenspectrum
from dimalign.metrics import (
    alignment,
    linear_probe,
    mia_efficacy,
    mia_sets,
    model_outputs,
    nmi,
    split_accuracies,
)
from dimalign.train import get_baselines


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
    clock(f"mia ({ev.mia_repeats} draws)", lambda: mia_efficacy(
        **mia_sets(out, exp), feature=ev.mia_feature, samples=ev.mia_samples,
        repeats=ev.mia_repeats, seed=seed))

    def da():
        _, basis = alignment(out.feats_train[f], out.feats_train[r], ev)
        alignment(out.feats_test, out.feats_train[r], ev, basis=basis)

    clock("da + da_test", da)
    clock("linear probe + f1", lambda: linear_probe(out, exp, seed))
    clock("nmi", lambda: nmi(out, exp, ev.nmi_samples, seed))
    clock("effective rank", lambda: eigenspectrum(out.feats_train[r]))
    clock("geometry artifacts", lambda: geometry_bundle({"m": out}, exp, ev, seed))
    times["total"] = sum(times.values())
    return times


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class")
    options.add_argument("--umap-points", type=int, default=2000)
    options.add_argument("--cold-numba", action="store_true",
                         help="UMAP's cold call with an empty NUMBA_CACHE_DIR")
    args = options.parse_args(argv)
    if args.cold_numba:  # numba reads NUMBA_CACHE_DIR once, when it is first imported
        if "numba" in sys.modules:
            raise SystemExit("--cold-numba: numba was imported before the cache could be set")
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")
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
    umap_bench(baselines, exp, args.runs, args.umap_points, total)
    return 0


def umap_bench(baselines, exp, runs: int, points: int, metrics_seconds: float) -> None:
    """UMAP of the models' features on train + test (as many of `points` as there are)."""
    import torch

    from dimalign.embed import aligned_embedding, backend, numba_cache_dir
    from dimalign.features import forward_all

    feats = {}
    for name, model in (("retrained", baselines.retrained), ("original", baselines.original)):
        both = torch.cat([forward_all(model, x, exp.info)[1] for x in (exp.x_train, exp.x_test)])
        feats[name] = both[torch.randperm(len(both), generator=torch.Generator().manual_seed(0))
                           [:points]]
    feats["unlearned"] = feats["original"] + 0.01 * feats["original"].std()  # a third model
    n = len(feats["retrained"])
    print(f"\n# UMAP ({backend()}), {n} points of {feats['retrained'].shape[1]}-d features "
          f"(train + test of the preset), NUMBA_CACHE_DIR={numba_cache_dir()}")
    parts = {"one model (fit)": {"retrained": feats["retrained"]}, "aligned frame of 3 models "
             "(fit + 2 transforms)": feats}
    cold = {}
    for part, data in parts.items():
        start = time.perf_counter()
        aligned_embedding(data)
        cold[part] = time.perf_counter() - start
    print(f"{'part':<48}{'cold s':>9}{'warm median s':>15}")
    for part, data in parts.items():
        warm = []
        for _ in range(runs):
            start = time.perf_counter()
            aligned_embedding(data)
            warm.append(time.perf_counter() - start)
        print(f"{part:<48}{cold[part]:>9.2f}{median(warm):>15.2f}")
    print(f"aligned frame warm / all metrics of one model warm: "
          f"{median(warm) / metrics_seconds:.1f}x  (target: UMAP of 2,000 points warm <= 5 s)")
