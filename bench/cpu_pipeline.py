"""`digits-class` end to end as a new user meets it, in fresh `dimalign run` processes.

Original + retrained + MUDA + every metric + the aligned UMAP, median of several runs.

    .venv/bin/python -m bench cpu_pipeline [--runs 3] [--points 2000] [--preset digits-class]

- cold: an empty DIMALIGN_HOME and an empty NUMBA_CACHE_DIR (the very first run on a machine);
- cold home, kept numba cache: a new experiment on a machine that has drawn a manifold before;
- warm: cached baselines, a new MUDA run with every metric (`--fresh`, no UMAP).
Baseline in the same session: the process floor (interpreter + torch + dimalign imports).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import header, median, parser


def timed_run(env: dict, *args: str) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dimalign", *args, "--json"], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"dimalign {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def env_for(home: str, numba: str) -> dict:
    return {**os.environ, "DIMALIGN_HOME": home, "NUMBA_CACHE_DIR": numba,
            "PYTHONWARNINGS": "ignore"}


def breakdown(result: dict) -> str:
    s = result["seconds"]
    parts = [f"original {s['original']:.1f}", f"retrained {s['retrained']:.1f}",
             f"muda {s['unlearn']:.2f}"]
    if "umap" in result:
        parts.append(f"umap {result['umap']['seconds']:.1f} ({result['umap']['points']} pts)")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=3, preset="digits-class")
    options.add_argument("--points", type=int, default=2000)
    args = options.parse_args(argv)
    header("digits-class end to end", {"preset": args.preset, "runs": args.runs,
                                       "umap points asked": args.points})
    run = ["run", "--preset", args.preset, "--method", "muda"]
    floor = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, dimalign.runner"], check=True)
        floor.append(time.perf_counter() - start)
    rows: dict[str, list[float]] = {"cold": [], "cold home, kept numba cache": [], "warm": []}
    notes: dict[str, str] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            numba = f"{tmp}/numba"
            wall, result = timed_run(env_for(f"{tmp}/home1", numba), *run, "--umap",
                                     str(args.points))
            rows["cold"].append(wall)
            notes["cold"] = breakdown(result)
            wall, result = timed_run(env_for(f"{tmp}/home2", numba), *run, "--umap",
                                     str(args.points))
            rows["cold home, kept numba cache"].append(wall)
            notes["cold home, kept numba cache"] = breakdown(result)
            wall, result = timed_run(env_for(f"{tmp}/home2", numba), *run, "--fresh")
            rows["warm"].append(wall)
            notes["warm"] = breakdown(result) + " (baselines from the cache)"
    base = median(floor)
    print(f"process floor (python -c 'import torch, dimalign.runner'): median {base:.2f} s")
    print(f"{'pipeline':<30}{'median s':>10}{'/ floor':>9}  runs; last run's parts (s)")
    for name, walls in rows.items():
        print(f"{name:<30}{median(walls):>10.1f}{median(walls) / base:>9.1f}  "
              f"{[round(w, 1) for w in walls]}; {notes[name]}")
    print("targets: cold <= 60 s (original + retrained + MUDA + all metrics + UMAP); "
          "warm MUDA run with metrics <= 15 s")
    return 0
