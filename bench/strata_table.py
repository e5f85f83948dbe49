"""Forget-set difficulty: where methods differ, per stratum of a random forget set (README table).

Runs `dimalign compare --preset digits-random --methods all --replicates N --json` (or reads
its saved output) and prints markdown tables, methods × strata (easy, medium, hard by the
original model's margin; docs/method.md, "Forget-set difficulty"): per stratum each
method's avg-gap to its own replicate's retrained model, its forget accuracy and MIA (mean ±
sd over the replicates), the challenge's ToW and, from 6 replicates, forgetting quality
(value ± bootstrap sd); the last row of each, how far the unlearning methods lie apart there
(max − min over the methods: of their mean |gap|, or of their score).

    .venv/bin/python -m bench strata_table --replicates 4 [--methods all] [--home DIR]
                                           [--set KEY=VALUE ...] [--save-json FILE]
    .venv/bin/python -m bench strata_table --from-json FILE    # tables of a saved compare

The compare runs as its own process in --home (default: a throw-away one; a kept home reuses
the replicates' baselines), and its wall time is printed with the header.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import header, parser

KEYS = ("avg_gap", "acc_forget", "mia")  # mean ± sd over replicates, per stratum
SCORES = ("tow", "forgetting_quality")  # the challenge's, value ± bootstrap sd


def run_compare(preset: str, methods: str, replicates: int, home: str | None,
                overrides: list[str]) -> tuple[float, dict]:
    folder = home or tempfile.mkdtemp(prefix="dimalign-bench-")
    env = {**os.environ, "DIMALIGN_HOME": folder}
    sets = [a for value in overrides for a in ("--set", value)]
    try:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dimalign", "compare", "--preset", preset,
                               "--methods", methods, "--replicates", str(replicates), *sets,
                               "--json"], capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - start
    finally:
        if home is None:
            shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"compare failed:\n{proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout)


def _cell(value, sd) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if sd is None else f"{value:.3f} ± {sd:.3f}"


def tables(result: dict) -> str:
    """One markdown table per metric and score: a row per model, a column per stratum."""
    block, rows = result["strata"], result["methods"]
    names = block["names"]
    sizes = ", ".join(f"{n} {block['sizes'][n]}" for n in names)
    out = [f"{result['replicates']} replicates; strata by {block['by']} of replicate "
           f"{block['replicate']}'s original model ({sizes} forget samples)"]
    keys = [*KEYS, *(k for k in SCORES if any(
        (row["strata"][n].get(k) or {}).get("value") is not None
        for row in rows.values() for n in names))]
    for key in keys:
        out += ["", f"**{key}**" + (" (mean ± sd over replicates)" if key in KEYS
                                     else " (value ± bootstrap sd)"), "",
                "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for name, row in rows.items():
            cells = []
            for n in names:
                cell = row["strata"][n]
                if key in KEYS:
                    cells.append(_cell(cell["mean"].get(key), cell["sd"].get(key)))
                else:
                    score = cell.get(key) or {}
                    cells.append(_cell(score.get("value"), score.get("sd")))
            label = f"**{name}** (reference)" if name == "retrain" else name
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        floor = block.get("noise_floor") or {}
        if key in KEYS and floor:
            out.append("| *noise floor (retrain vs retrain)* | " + " | ".join(
                _cell(floor[n].get(key), None) for n in names) + " |")
        apart = block.get("between_methods") or {}
        what = "mean abs. gap" if key in KEYS else "value"
        out.append(f"| *methods apart (max − min {what})* | " + " | ".join(
            _cell(apart.get(n, {}).get(key), None) for n in names) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__, preset="digits-random", home=True)
    options.add_argument("--replicates", type=int, default=4)
    options.add_argument("--methods", default="all")
    options.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    options.add_argument("--save-json", type=Path)
    options.add_argument("--from-json", type=Path, help="print the tables of a saved compare")
    args = options.parse_args(argv)
    if args.from_json is not None:
        print(tables(json.loads(args.from_json.read_text())))
        return 0
    header("compare per stratum of a random forget set",
           {"preset": args.preset, "methods": args.methods, "replicates": args.replicates,
            "set": args.set or "-", "home": args.home or "fresh (baselines trained inside)"})
    seconds, result = run_compare(args.preset, args.methods, args.replicates, args.home,
                                  args.set)
    if args.save_json is not None:
        args.save_json.write_text(json.dumps(result))
    print(f"compare: {seconds:.0f} s wall\n")
    print(tables(result))
    return 0
