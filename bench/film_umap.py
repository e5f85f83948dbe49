"""The film_umap job's time: a finished digits-class MUDA run's film in aligned UMAP.

Wall time of `film_umap.umap_saved_run` (what the worker's "film_umap" job runs: load film.pt,
fit UMAP on the two ghosts, transform every frame, write film-umap.pt) on the default preset's
film (30 frames), median of several repeats in one process, with the torch threads of the
worker that runs the job (half the cores). The first call is reported apart: it imports
umap-learn and loads its numba kernels from NUMBA_CACHE_DIR, or compiles them when that cache
is empty (a throw-away home's is, unless NUMBA_CACHE_DIR is set: `make` keeps one).

    .venv/bin/python -m bench film_umap [--preset P] [--method M] [--set K=V] [--runs 5]

Baselines and the run are made once in a throw-away DIMALIGN_HOME (not timed) unless --home is
given.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import header, median, parser, timed


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=5, preset="digits-class", home=True)
    options.add_argument("--method", default="muda")
    options.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a setting of the run (e.g. muda.epochs=16 for 30 frames)")
    args = options.parse_args(argv)
    os.environ["DIMALIGN_HOME"] = args.home or tempfile.mkdtemp(prefix="dimalign-bench-")
    import torch

    from dimalign.scheduler import worker_threads

    torch.set_num_threads(worker_threads(1))  # as the worker that runs the job has

    from dimalign import checked
    from dimalign.config import build_config
    from dimalign.embed import backend, is_warm, numba_cache_dir
    from dimalign.film_umap import umap_saved_run
    from dimalign.run_files import FILM
    from dimalign.runner import run_experiment

    cfg = build_config(args.preset, args.set)
    result = run_experiment(cfg, args.method, preset=args.preset, say=lambda text: None)
    folder = Path(result["artifacts"])
    frames, points = checked.load_torch(folder / FILM)["features"].shape[:2]
    cache = f"{numba_cache_dir()} ({'warm' if is_warm() else 'empty or not marked warm'})"
    header("film_umap job: a run's film in aligned UMAP", {
        "preset": args.preset, "method": args.method, "set": " ".join(args.set) or "none",
        "frames": frames, "points": points,
        "fitted on": f"{2 * points} (both ghosts)", "backend": backend(), "runs": args.runs,
        "numba cache": cache})
    parts: list[dict] = []

    def once() -> None:
        parts.append(umap_saved_run(folder)[1]["seconds"])

    first = timed(once)
    print(f"first call (umap-learn import, numba kernels loaded or compiled): {first:.2f} s "
          f"(fit {parts[0]['fit']:.2f} s, transform {parts[0]['transform']:.2f} s)")
    times = [timed(once) for _ in range(args.runs)]
    later = parts[1:]
    print(f"film_umap job (umap_saved_run, wall): median {median(times):.3f} s  spread "
          f"{min(times):.3f}..{max(times):.3f}  runs {', '.join(f'{t:.3f}' for t in times)}")
    print(f"parts, median s: fit {median([p['fit'] for p in later]):.3f}, transform of "
          f"{frames} frames {median([p['transform'] for p in later]):.3f} "
          f"({median([p['transform'] for p in later]) / frames * 1000:.0f} ms a frame)")
    return 0
