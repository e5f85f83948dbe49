"""What recording the film costs a run: the whole run (unlearning, evaluation, saving) with and
without a film, and the unlearning loop's own time, alternating in one process.

The film (`eval.film_frames`, 30 by default) measures a fixed sample of 750 points at each of
its frames on a thread beside the run's steps; its cost to a person is how much later the run
is done. Figures: medians of --runs pairs, with their spread; the first pair (warm-up) is left
out.

    .venv/bin/python -m bench film_cost [--preset digits-class] [--runs 5] [--set KEY=VALUE]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import header, median, parser
from dimalign.config import build_config
from dimalign.runner import run_experiment


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class")
    options.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="an override for both runs (e.g. muda.epochs=20)")
    options.add_argument("--frames", type=int, default=30, help="the film's frames")
    args = options.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="dimalign-film-cost-"))
    configs = {frames: build_config(args.preset, [*args.set, f"eval.film_frames={frames}"])
               for frames in (0, args.frames)}
    header("film recording cost", {"preset": args.preset, "method": "muda", "runs": args.runs,
                                   "frames": args.frames, "overrides": args.set or "none",
                                   "sample": "300 forget, 300 retain, 150 test (at most)"})
    rows: dict[int, list[tuple[float, float, float]]] = {0: [], args.frames: []}
    for i in range(args.runs + 1):
        for frames, cfg in configs.items():
            start = time.perf_counter()
            result = run_experiment(cfg, "muda", run_dir=scratch / f"{i}-{frames}",
                                    say=lambda line: None)
            if i:  # the first pair warms caches and threads
                rows[frames].append((time.perf_counter() - start, result["seconds"]["unlearn"],
                                     result.get("film_seconds", 0.0)))
    steps = result["steps"]
    off, on = rows[0], rows[args.frames]
    whole_off, whole_on = median([r[0] for r in off]), median([r[0] for r in on])
    print(f"steps: {steps}  frames recorded: {min(args.frames, steps + 1)}")
    for name, runs in (("without film", off), ("with film", on)):
        whole = sorted(r[0] for r in runs)
        print(f"{name:<13} run {median(whole):.3f} s (min {whole[0]:.3f}, max {whole[-1]:.3f})"
              f"  loop {median([r[1] for r in runs]):.3f} s  waited for frames "
              f"{median([r[2] for r in runs]) * 1000:.1f} ms")
    pairs = sorted(b[0] / a[0] - 1 for a, b in zip(off, on, strict=True))
    print(f"recording cost: {whole_on / whole_off - 1:+.1%} of the run's wall time (medians); "
          f"per pair: median {median(pairs):+.1%}, range {pairs[0]:+.1%} .. {pairs[-1]:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
