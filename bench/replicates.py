"""What replicates cost: `compare --replicates 3` against three single-replicate compares.

`dimalign compare --methods all --replicates 3` against three times a single-replicate compare,
measured in one session, alternated when repeated.

    .venv/bin/python -m bench replicates [--runs 1] [--preset digits-class] [--replicates 3]
                                         [--save-json FILE]

Each timing is a fresh `python -m dimalign compare ... --json` process on a fresh, empty
DIMALIGN_HOME (baselines trained inside the timing, as a first compare trains them), wall time
from start to exit. `--save-json` keeps the replicated run's JSON (`python -m bench
noise_floor_table FILE` turns it into the noise-floor table in docs/cli.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import header, median, parser


def timed_compare(preset: str, replicates: int) -> tuple[float, str]:
    home = tempfile.mkdtemp(prefix="dimalign-bench-")
    env = {**os.environ, "DIMALIGN_HOME": home}
    try:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dimalign", "compare", "--preset", preset,
                               "--methods", "all", "--replicates", str(replicates), "--json"],
                              capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"compare failed:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, runs=1, preset="digits-class")
    options.add_argument("--replicates", type=int, default=3)
    options.add_argument("--save-json", type=Path)
    args = options.parse_args(argv)
    header("compare --methods all: N replicates vs N x one replicate",
           {"preset": args.preset, "replicates": args.replicates, "runs": args.runs,
            "home": "fresh per timing (baselines trained inside it)"})
    single, many = [], []
    for i in range(args.runs):
        s, _ = timed_compare(args.preset, 1)
        m, out = timed_compare(args.preset, args.replicates)
        single.append(s)
        many.append(m)
        print(f"run {i + 1}: 1 replicate {s:.1f} s, {args.replicates} replicates {m:.1f} s",
              flush=True)
        if args.save_json is not None:
            args.save_json.write_text(out)
    n = args.replicates
    print(f"1 replicate: median {median(single):.1f} s ({', '.join(f'{v:.1f}' for v in single)})")
    print(f"{n} x 1 replicate: {n * median(single):.1f} s")
    print(f"--replicates {n}: median {median(many):.1f} s ({', '.join(f'{v:.1f}' for v in many)})"
          f" = {median(many) / (n * median(single)):.2f} x ({n} x 1 replicate)")
    return 0
