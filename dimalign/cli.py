"""Command line: `dimalign presets`, `dimalign run --preset P [--set k=v ...] [--json]`.

Progress goes to stderr; with --json, stdout holds exactly one JSON object. Known failures
(bad config, missing dataset, diverging training) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from dimalign.config import DEFAULT_PRESET, ConfigError, build_config, load_preset, preset_names
from dimalign.datasets import DatasetUnavailable

METHODS = ("retrain",)  # unlearning methods arrive with the method registry


class ProgressBar:
    """Progress on stderr: a bar redrawn at most 10 times a second on a terminal, one line per
    tenth of the work otherwise (logs and CI stay readable)."""

    def __init__(self, stream=sys.stderr, width: int = 28):
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self.phase, self.last, self.loss, self.decile = None, 0.0, None, -1

    def __call__(self, p) -> None:
        if p.phase != self.phase:
            self.phase, self.loss, self.decile = p.phase, None, -1
        if p.loss is not None:
            self.loss = p.loss
        done = p.epoch == p.epochs and p.step == p.steps
        if self.tty:
            now = time.monotonic()
            if not done and now - self.last < 0.1:
                return
            self.last = now
        else:
            decile = int(p.fraction * 10)
            if decile == self.decile and not done:
                return
            self.decile = decile
        filled = int(self.width * p.fraction)
        loss = f" loss {self.loss:.4f}" if self.loss is not None else ""
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{p.phase:<10} [{bar}] {p.fraction:4.0%} epoch {p.epoch}/{p.epochs}{loss}"
        self.stream.write(f"\r{line}" + ("\n" if done else "") if self.tty else line + "\n")
        self.stream.flush()


def _fmt(value: float) -> str:
    return "   -  " if value is None or math.isnan(value) else f"{value:6.4f}"


def print_table(result: dict, stream=sys.stdout) -> None:
    models = result["models"]
    keys = list(next(iter(models.values())))
    stream.write(f"{'model':<10} " + " ".join(f"{k:>10}" for k in keys) + f" {'seconds':>9}\n")
    for name, row in models.items():
        cells = " ".join(f"{_fmt(row[k]):>10}" for k in keys)
        cached = " (cached)" if result["cached"].get(name) else ""
        stream.write(f"{name:<10} {cells} {result['seconds'][name]:9.1f}{cached}\n")


def cmd_presets(args) -> int:
    for name in preset_names():
        description, _ = load_preset(name)
        print(f"{name:<16} {description}")
    return 0


def cmd_run(args) -> int:
    from dimalign.metrics import accuracies
    from dimalign.train import get_baselines

    if args.method not in METHODS:
        raise ConfigError("--method", f"unknown method {args.method!r}; choose one of "
                          f"{', '.join(METHODS)}")
    cfg = build_config(args.preset, args.set)
    baselines = get_baselines(cfg, progress=ProgressBar())
    exp = baselines.experiment
    result = {
        "preset": args.preset,
        "config": cfg.to_dict(),
        "device": str(baselines.device),
        "data": exp.summary(),
        "models": {"original": accuracies(baselines.original, exp),
                   "retrained": accuracies(baselines.retrained, exp)},
        "seconds": baselines.seconds,
        "cached": baselines.cached,
    }
    if args.json:
        json.dump(_finite(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(result)
    return 0


def _finite(obj):
    """JSON has no NaN: empty sets report null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dimalign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the named presets").set_defaults(func=cmd_presets)
    run = sub.add_parser("run", help="train or load the baselines of a preset and report metrics")
    run.add_argument("--preset", default=DEFAULT_PRESET, help=f"default: {DEFAULT_PRESET}")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. scenario.classes=3,5 or train.epochs=10")
    run.add_argument("--method", default="retrain", help="unlearning method (default: retrain)")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"dimalign: invalid setting {err}", file=sys.stderr)
        return 2
    except DatasetUnavailable as err:
        print(f"dimalign: {err}", file=sys.stderr)
        return 3
    except RuntimeError as err:  # diverged training, a device that is not there
        print(f"dimalign: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndimalign: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
