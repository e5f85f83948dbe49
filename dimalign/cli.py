"""Command line: `dimalign presets`, `dimalign run --preset P [--set k=v ...] [--json]`.

Progress goes to stderr; with --json, stdout holds exactly one JSON object. Known failures
(bad config, missing dataset, diverging training) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

from dimalign import paths
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


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_table(result: dict, stream=sys.stdout) -> None:
    """Metrics as rows, models as columns (there are more metrics than models)."""
    models = result["models"]
    names = list(models)
    keys = list(dict.fromkeys(k for row in models.values() for k in row))
    stream.write(f"{'metric':<20}" + "".join(f"{n:>12}" for n in names) + "\n")
    for key in keys:
        stream.write(f"{key:<20}" + "".join(f"{_fmt(models[n].get(key)):>12}" for n in names)
                     + "\n")
    seconds = "".join(f"{result['seconds'][n]:>12.1f}" for n in names)
    stream.write(f"{'seconds':<20}{seconds}\n")
    cached = [n for n in names if result["cached"].get(n)]
    if cached:
        stream.write(f"(from the cache: {', '.join(cached)}; seconds are training time)\n")
    stream.write(f"artifacts: {result['artifacts']}\n")


def cmd_presets(args) -> int:
    for name in preset_names():
        description, _ = load_preset(name)
        print(f"{name:<16} {description}")
    return 0


def cmd_run(args) -> int:
    from dimalign.train import get_baselines

    if args.method not in METHODS:
        raise ConfigError("--method", f"unknown method {args.method!r}; choose one of "
                          f"{', '.join(METHODS)}")
    cfg = build_config(args.preset, args.set)
    baselines = get_baselines(cfg, progress=ProgressBar())
    run_dir = paths.runs_dir() / run_id(cfg, args.method)
    result = _reusable_result(run_dir, baselines)
    if result is None:
        result = _evaluate_run(args, cfg, baselines, run_dir)
    if args.json:
        json.dump(_finite(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(result)
    return 0


def _evaluate_run(args, cfg, baselines, run_dir) -> dict:
    from dimalign.artifacts import geometry_bundle, save_bundle
    from dimalign.metrics import evaluate, sample_sizes

    exp = baselines.experiment
    print("evaluating ...", file=sys.stderr, flush=True)
    models = {"original": baselines.original, "retrained": baselines.retrained}
    metrics, outputs = evaluate(models, exp, cfg.eval, cfg.seed)
    save_bundle(geometry_bundle(outputs, exp, cfg.eval, cfg.seed), run_dir / "geometry.pt")
    result = _finite({
        "preset": args.preset,
        "config": cfg.to_dict(),
        "device": str(baselines.device),
        "data": exp.summary(),
        "models": metrics,
        "seconds": baselines.seconds,
        "cached": baselines.cached,
        "samples": sample_sizes(exp, cfg.eval),
        "artifacts": str(run_dir),
        "checkpoints": baselines.checkpoints,
    })
    tmp = run_dir / f"result.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, run_dir / "result.json")
    return result


def _reusable_result(run_dir, baselines) -> dict | None:
    """The saved result of this very run, if its models are the checkpoints it was computed
    from (evaluation is deterministic, so running it again would only cost time)."""
    path = run_dir / "result.json"
    if not (path.exists() and (run_dir / "geometry.pt").exists()):
        return None
    saved = json.loads(path.read_text())
    if saved.get("checkpoints") != baselines.checkpoints:
        return None
    saved["cached"] = baselines.cached
    return saved


def run_id(cfg, method: str) -> str:
    """A run's folder name: a hash, never user text."""
    blob = json.dumps({"config": cfg.to_dict(), "method": method}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    except (RuntimeError, ValueError) as err:  # diverged training, missing device, degenerate
        # features (e.g. all zero)
        print(f"dimalign: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndimalign: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
