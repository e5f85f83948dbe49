"""The noise-floor tables of docs/cli.md from `dimalign compare --replicates N --json` output.

For each method and metric, whether its mean |gap to its own replicate's retrained model| lies
within the retrain-vs-retrain noise floor (✓) or not (✗), with the gap beside it; then the
docs/cli.md's second table, each model's metrics as mean ± sd over the replicates.

    .venv/bin/dimalign compare --preset digits-class --methods all --replicates 3 --json \\
        > compare.json
    .venv/bin/python -m bench noise_floor_table compare.json

It measures nothing, so it prints no header: its output is the tables alone, to paste.
"""

from __future__ import annotations

import json

from bench.common import parser
from dimalign.metric_table import TABLE, shown
from dimalign.replicates import inside


def table(result: dict) -> str:
    floor = result["noise_floor"]
    keys = [k for k in shown("compare") if floor.get(k) is not None]
    lines = ["| method | " + " | ".join(TABLE[k].title for k in keys) + " |",
             "|---|" + "---|" * len(keys),
             "| *noise floor* | " + " | ".join(f"{floor[k]:.3f}" for k in keys) + " |"]
    for name, row in result["methods"].items():
        if name in ("original", "retrain"):
            continue
        cells = []
        for k in keys:
            gap = row["mean_abs_gap"].get(k)
            mark = {True: "✓", False: "✗", None: "–"}[inside(gap, floor[k])]
            cells.append(mark if gap is None else f"{mark} {gap:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MEAN_SD_KEYS = ("acc_retain", "acc_forget", "acc_test", "mia", "da", "avg_gap", "time_fraction")


def mean_sd_table(result: dict) -> str:
    lines = ["| model | " + " | ".join(MEAN_SD_KEYS) + " |", "|---|" + "---|" * len(MEAN_SD_KEYS)]
    for name, row in result["methods"].items():
        cells = []
        for k in MEAN_SD_KEYS:
            mean, sd = row["mean"].get(k), row["sd"].get(k)
            cells.append("—" if mean is None else f"{mean:.3f} ± {sd:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = parser(__name__)
    options.add_argument("compare_json", help="the output of `dimalign compare ... --json`")
    args = options.parse_args(argv)
    with open(args.compare_json) as fh:
        result = json.load(fh)
    print(table(result), "", mean_sd_table(result), sep="\n")
    return 0
