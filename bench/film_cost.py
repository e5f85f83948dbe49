"""What recording the film costs a run: the whole run (unlearning, evaluation, saving) with and
without a film, and the unlearning loop's own time, alternating in one process.

The film (`eval.film_frames`, 30 by default) measures a fixed sample of 750 points at each of
its frames; its cost to a person is how much later the run is done. Three ways, alternating:
without a film; with one as a worker records it (frames past `methods.film.BUDGET` of the run
left to the film job, timed apart: "film job after"); and every frame measured inline, as the
film was first built. Figures: medians of --runs rounds, with their spread; the first round
(warm-up) is left out.

    .venv/bin/python -m bench film_cost [--preset digits-class] [--runs 5] [--set KEY=VALUE]
    .venv/bin/python -m bench film_cost --preset cifar10-class --images 3000 --runs 3 \
        --set train.epochs=1 --loop-only   # ResNet-18, CIFAR-shaped: the loop alone

A frame's cost is also given in steps of the run, and projected onto a run of --project steps
with 30 frames (default 580: MUDA on CIFAR-10 at the paper's settings): the film's share of a
run falls as runs get longer, since its frames are fixed in number. On a CIFAR-10 preset without
CIFAR-10 on the machine, CIFAR-shaped synthetic data stands in (--images of them, in a
throw-away DIMALIGN_HOME).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import cifar10_arrays, header, median, parser, use_arrays
from dimalign.config import build_config
from dimalign.methods import REGISTRY
from dimalign.methods.film import BUDGET, finish_saved
from dimalign.methods.loop import unlearn
from dimalign.run_files import FILM_PENDING
from dimalign.runner import run_experiment
from dimalign.scheduler import worker_threads
from dimalign.train import get_baselines


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class")
    options.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="an override for both runs (e.g. muda.epochs=20)")
    options.add_argument("--frames", type=int, default=30, help="the film's frames")
    options.add_argument("--images", type=int, default=3000,
                         help="CIFAR presets: training images of the stand-in data")
    options.add_argument("--loop-only", action="store_true",
                         help="time the unlearning loop alone (no evaluation): for models "
                              "whose evaluation takes minutes on this machine")
    options.add_argument("--home", help="a DIMALIGN_HOME whose cached baselines to use")
    options.add_argument("--project", type=int, default=580,
                         help="steps of the run the frame cost is projected onto")
    args = options.parse_args(argv)
    data = build_config(args.preset).dataset
    if data == "cifar10":
        arrays, data = cifar10_arrays(args.images, args.images // 3)
        if data != "CIFAR-10":
            os.environ["DIMALIGN_HOME"] = args.home or tempfile.mkdtemp(prefix="dimalign-bench-")
        use_arrays("cifar10", arrays)
    torch.set_num_threads(worker_threads(1))  # as a dashboard's worker runs it (half the cores)
    scratch = Path(tempfile.mkdtemp(prefix="dimalign-film-cost-"))
    off = build_config(args.preset, [*args.set, "eval.film_frames=0"])
    on = build_config(args.preset, [*args.set, f"eval.film_frames={args.frames}"])
    # as a worker runs it (frames past the budget left to the film job), every frame at once
    # (the film as it was first built), and no film at all
    modes = {"without film": (off, 1.0), "with film": (on, BUDGET), "every frame inline": (on, 1.0)}
    header("film recording cost", {"preset": args.preset, "data": data, "method": "muda",
                                   "runs": args.runs, "budget": f"{BUDGET:.0%} of the run",
                                   "frames": args.frames, "overrides": args.set or "none",
                                   "sample": "300 forget, 300 retain, 150 test (at most)"})
    rows: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in modes}
    for i in range(args.runs + 1):
        for mode, (cfg, budget) in modes.items():
            folder = scratch / f"{i}-{len(rows[mode])}-{mode.replace(' ', '-')}"
            start = time.perf_counter()
            if args.loop_only:
                b = get_baselines(cfg)
                out = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                              retrained=b.retrained, film_budget=budget)
                result = {"seconds": {"unlearn": out.seconds}, "steps": out.steps,
                          "film_seconds": out.film_seconds}
                kept = out.film_kept
            else:
                result = run_experiment(cfg, "muda", run_dir=folder, say=lambda line: None,
                                        film_budget=budget)
                kept = (folder / FILM_PENDING).exists()
            done = time.perf_counter() - start
            later = 0.0
            if kept and not args.loop_only:  # the film job, after the run is done
                t0 = time.perf_counter()
                finish_saved(folder)
                later = time.perf_counter() - t0
            if i:  # the first round warms caches and threads
                rows[mode].append((done, result["seconds"]["unlearn"],
                                   result.get("film_seconds", 0.0), later))
    steps = result["steps"]
    print(f"steps: {steps}  frames: {min(args.frames, steps + 1)}")
    for mode, runs in rows.items():
        whole = sorted(r[0] for r in runs)
        print(f"{mode:<19} done {median(whole):.3f} s (min {whole[0]:.3f}, max {whole[-1]:.3f})"
              f"  loop {median([r[1] for r in runs]):.3f} s  recording in the run "
              f"{median([r[2] for r in runs]) * 1000:.1f} ms  film job after "
              f"{median([r[3] for r in runs]) * 1000:.0f} ms")
    frames = min(args.frames, steps + 1)
    step = median([r[1] for r in rows["without film"]]) / steps
    frame = (median([r[1] for r in rows["every frame inline"]])
             - median([r[1] for r in rows["without film"]])) / frames
    print(f"a frame costs {frame * 1000:.1f} ms = {frame / step:.2f} steps of {step * 1000:.1f} "
          f"ms; 30 frames in a run of {args.project} such steps: "
          f"{30 * frame / (args.project * step):.1%} of its loop")
    base = rows["without film"]
    for mode in ("with film", "every frame inline"):
        pairs = sorted(b[0] / a[0] - 1 for a, b in zip(base, rows[mode], strict=True))
        whole = median([r[0] for r in rows[mode]]) / median([r[0] for r in base]) - 1
        print(f"{mode}: recording cost {whole:+.1%} of the run's wall time (medians); per "
              f"round: median {median(pairs):+.1%}, range {pairs[0]:+.1%} .. {pairs[-1]:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
