"""Command line: `dimalign COMMAND [options]`, one `cmd_*` function per command.

`dimalign --help` lists every command with its one-line help: argparse builds that list from
the subcommands `build_parser` registers, so it names all of them by construction;
`dimalign COMMAND --help` shows one command's options. Progress goes to stderr; with --json,
stdout holds exactly one JSON object. Known failures (bad config, missing dataset, diverging
training) print one line and exit non-zero, one code per class of error (`main`):

    0    done
    1    the work failed: diverged training, a missing device, a full disk
    2    a setting or input is wrong, own data and checkpoints included (whether the scan or
         decoding finds an image bad); a damaged store; an unusable path
    3    a dataset is not on disk and could not be downloaded
    130  cancelled or interrupted
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from dimalign.checked import DiskFull, is_disk_full
from dimalign.config import DEFAULT_PRESET, build_config, load_preset, preset_names
from dimalign.datasets import DatasetUnavailable
from dimalign.errors import ConfigError
from dimalign.kinds import REGISTRY as KINDS
from dimalign.methods import BUILTIN, get_method  # not ORDER or REGISTRY: they load plugins
from dimalign.methods.loop import Cancelled
from dimalign.metric_table import TABLE, TIME_FRACTION, ordered, shown
from dimalign.paths import PathError
from dimalign.run_files import RESULT
from dimalign.store import StoreError
from dimalign.strata import heading as strata_heading
from dimalign.sweep import SweepInterrupted


class ProgressBar:
    """Progress on stderr: a bar redrawn at most 10 times a second on a terminal, one line per
    tenth of the work otherwise (logs and CI stay readable)."""

    def __init__(self, stream=None, width: int = 28):
        self.stream, self.width = stream or sys.stderr, width  # at call time: it may be redirected
        self.tty = self.stream.isatty()
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
        where = f"epoch {p.epoch}/{p.epochs}" if p.epochs > 1 else f"step {p.step}/{p.steps}"
        line = f"{p.phase:<10} [{bar}] {p.fraction:4.0%} {where}{loss}"
        self.stream.write(f"\r{line}" + ("\n" if done else "") if self.tty else line + "\n")
        self.stream.flush()


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_table(result: dict, stream=None) -> None:
    """Metrics as rows, models as columns (there are more metrics than models)."""
    stream = stream or sys.stdout
    models = result["models"]
    names = list(models)
    keys = ordered(k for row in models.values() for k in row)
    stream.write(f"{'metric':<20}" + "".join(f"{n:>12}" for n in names) + "\n")
    for key in keys:
        stream.write(f"{key:<20}" + "".join(f"{_fmt(models[n].get(key)):>12}" for n in names)
                     + "\n")
    secs = result["seconds"]
    seconds = "".join(f"{secs.get(n, secs.get('unlearn', float('nan'))):>12.2f}" for n in names)
    stream.write(f"{'seconds':<20}{seconds}\n")
    cached = [n for n in names if result["cached"].get(n)]
    if cached:
        stream.write(f"(from the cache: {', '.join(cached)}; seconds are training time)\n")
    if result["cached"].get("result"):
        stream.write("(this exact run was saved before: its result is shown; --fresh reruns it)\n")
    if result.get("strata"):
        print_strata_of_run(result["strata"], stream)
    stream.write(f"artifacts: {result['artifacts']}\n")


def print_strata_of_run(block: dict, stream=None) -> None:
    """A run's per-stratum forget metrics: a row per stratum and metric, a column per model."""
    stream = stream or sys.stdout
    models = block["models"]
    names = list(models)
    stream.write(strata_heading(block) + "\n")
    stream.write(f"{'stratum':<8}{'metric':<12}" + "".join(f"{n:>12}" for n in names) + "\n")
    for stratum in block["names"]:
        keys = ordered(k for m in names for k in models[m][stratum])
        for key in keys:
            stream.write(f"{stratum:<8}{key:<12}" + "".join(
                f"{_fmt(models[n][stratum].get(key)):>12}" for n in names) + "\n")


def cmd_presets(args) -> int:
    for name in preset_names():
        description, _ = load_preset(name)
        print(f"{name:<16} {description}")
    return 0


def cmd_run(args) -> int:
    from dimalign.embed import MIN_SAMPLES
    from dimalign.runner import run_experiment

    if args.umap != 0 and args.umap < MIN_SAMPLES:  # refused before anything trains
        raise ConfigError("--umap", f"must be 0 (no UMAP) or at least {MIN_SAMPLES} points (a "
                          f"third from each of retain, forget and test), got {args.umap}")
    cfg = build_config(args.preset, args.set)
    get_method(args.method)  # an unknown method fails before any training
    result = run_experiment(cfg, args.method, preset=args.preset, progress=ProgressBar(),
                            fresh=args.fresh)
    if args.umap:
        result["umap"] = _embed_cli(Path(result["artifacts"]), args.umap)
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(result)
        if args.umap:
            u = result["umap"]
            print(f"umap: {u['points']} points ({u['backend']}) in {u['seconds']:.1f} s: "
                  f"{u['path']}")
    return 0


def cmd_warm(args) -> int:
    """Compile UMAP's numba kernels into NUMBA_CACHE_DIR once (the Makefile does it at install)."""
    from dimalign.embed import is_warm, numba_cache_dir, warm_up

    if is_warm() and not args.force:
        print(f"UMAP is warm: {numba_cache_dir()}")
        return 0
    start = time.perf_counter()
    warm_up()
    print(f"UMAP kernels compiled into {numba_cache_dir()} in {time.perf_counter() - start:.0f} s")
    return 0


def _embed_cli(folder: Path, samples: int) -> dict:
    """The aligned UMAP of a run's saved features, as the Manifolds page would show it."""
    from dimalign.embed import embed_saved_run

    sys.stderr.write(f"UMAP of {samples} points (the first ever also compiles numba "
                     "kernels, about a minute) ...\n")
    start = time.perf_counter()
    path, bundle = embed_saved_run(folder, samples)
    return {"path": str(path), "points": len(bundle["rows"]), "backend": bundle["backend"],
            "seconds": round(time.perf_counter() - start, 3)}


def cmd_methods(args) -> int:
    from dimalign.methods import ORDER, REGISTRY

    if args.json:
        # knobs in display order; "groups" names their groups in that order (the first is the
        # one a page shows open)
        out = {name: {"title": REGISTRY[name].title, "description": REGISTRY[name].description,
                      "paper": REGISTRY[name].paper,
                      "groups": [group for group, _ in REGISTRY[name].groups()],
                      "knobs": {k: {"default": kn.default, "type": kn.type.__name__,
                                    "range": kn.range_text() if kn.type in (int, float) else None,
                                    "choices": list(kn.choices), "help": kn.help,
                                    "source": kn.source, "group": kn.group}
                                for k, kn in REGISTRY[name].knobs.items()},
                      "variant_defaults": REGISTRY[name].variant_defaults}
               for name in ORDER}
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for name in ORDER:
        spec = REGISTRY[name]
        print(f"{name:<13} {spec.title}: {spec.description}")
        print(f"{'':<13} paper: {spec.paper}")
        for group, keys in spec.groups():
            print(f"{'':<13} {group}:")
            for key in keys:
                knob = spec.knobs[key]
                extra = f" one of {', '.join(knob.choices)}" if knob.choices else ""
                if knob.numeric:
                    extra = f" in {knob.range_text()}"
                print(f"{'':<16}{name}.{key} = {knob.default!r:<8} {knob.help};{extra}"
                      + (f" [{knob.source}]" if knob.source != "choice" else ""))
        if "variant" in spec.knobs:
            print(f"{'':<13} default variant: {spec.knobs['variant'].default}")
        for variant, values in spec.variant_defaults.items():
            print(f"{'':<13} {name}.variant={variant} also sets: "
                  + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return 0


def cmd_compare(args) -> int:
    from dimalign.methods import ORDER
    from dimalign.runner import compare

    cfg = build_config(args.preset, args.set)
    names = (list(ORDER) if args.methods == "all"
             else [m.strip() for m in args.methods.split(",") if m.strip()])  # "ga," is ga
    if not names:
        raise ConfigError("--methods", "names no method: give 'all' or a comma-separated list")
    for name in names:
        get_method(name)
    result = compare(cfg, names, preset=args.preset, replicates=args.replicates,
                     progress=ProgressBar())
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
        return 0
    if result["replicates"] > 1:
        return _print_replicates(result)
    rows = result["methods"]
    keys = [k for k in shown("cli") if any(r.get(k) is not None for r in rows.values())]
    spreads = {m.spread_of: m.name for m in TABLE.values() if m.spread_of}
    cost = TIME_FRACTION
    print(f"each cell: value (gap to retrained); {cost.title} = {cost.description} "
          f"({result['retrained_seconds']:.1f} s)")
    widths = {k: max(len(k) + 2, 9 if TABLE[k].distance else 16 + 6 * (k in spreads))
              for k in keys}
    print(f"{'method':<13}" + "".join(f"{k:>{widths[k]}}" for k in keys)
          + f"{cost.title:>19}")
    for name, row in rows.items():
        line = f"{name:<13}"
        for k in keys:
            value, gap = row.get(k), row["gaps"].get(k)
            if value is None:
                cell = "-"
            else:
                cell = f"{value:.3f}"
                if (sd := row.get(spreads.get(k, ""))) is not None:  # the value ± its sd
                    cell += f"±{sd:.3f}"
                if not TABLE[k].distance and gap is not None:  # a distance is its own gap
                    cell += f" ({gap:+.3f})"
            line += f"{cell:>{widths[k]}}"
        print(line + f"{row[cost.name]:>19.2f}")
    if "strata" in result:
        _print_strata(result)
    return 0


def _print_replicates(result: dict) -> int:
    """compare --replicates N: mean ± sd per cell, a `*` where the method's mean |gap| to its
    own replicate's retrained model lies within the retrain-vs-retrain noise floor."""
    from dimalign.replicates import inside

    rows, floor, cost = result["methods"], result["noise_floor"], TIME_FRACTION
    keys = [k for k in shown("cli") if any(r["mean"].get(k) is not None for r in rows.values())]
    print(f"{result['replicates']} replicates; each cell: mean ± sd; * = mean |gap to its own "
          "replicate's retrained model| within the noise floor (retrain vs retrain)")
    widths = {k: max(len(k) + 2, 17) for k in keys}
    print(f"{'method':<13}" + "".join(f"{k:>{widths[k]}}" for k in keys) + f"{cost.title:>19}")
    for name, row in rows.items():
        line = f"{name:<13}"
        for k in keys:
            mean, sd = row["mean"].get(k), row["sd"].get(k)
            mark = "*" if inside(row["mean_abs_gap"].get(k), floor.get(k)) else " "
            cell = "-" if mean is None else f"{mean:.3f} ± {sd:.3f}{mark}"
            line += f"{cell:>{widths[k]}}"
        time_mean, time_sd = row["mean"][cost.name], row["sd"][cost.name]
        print(line + f"{f'{time_mean:.2f} ± {time_sd:.2f}':>19}")
    line = f"{'noise floor':<13}"
    for k in keys:
        cell = "-" if floor.get(k) is None else f"{floor[k]:.3f}"
        line += f"{cell:>{widths[k]}}"
    print(line)
    if "forgetting" in result:
        _print_forgetting(result)
    if "strata" in result:
        _print_strata(result)
    return 0


def _print_strata(result: dict) -> None:
    """compare on a random forget set: per metric a table of methods × strata; with
    replicates each cell mean ± sd (the challenge's scores: value ± bootstrap sd), and a last
    row, how far the unlearning methods lie apart in each stratum (range of their mean |gap|,
    or of their score)."""
    from dimalign.challenge import SCORES
    from dimalign.metric_table import per_stratum

    block, rows = result["strata"], result["methods"]
    names = block["names"]
    many = result["replicates"] > 1
    print("\n" + strata_heading(block))
    keys = [k for k in per_stratum() if not TABLE[k].spread_of]
    scored = [k for k in SCORES if many and any(
        (row["strata"][s].get(k) or {}).get("value") is not None
        for row in rows.values() for s in names)]
    for key in [*keys, *scored]:
        print(f"\n{key} per stratum" + (" (value (gap to retrained))" if not many else ""))
        print(f"{'method':<13}" + "".join(f"{s:>22}" for s in names))
        for method, row in rows.items():
            cells = []
            for s in names:
                cell = row["strata"][s]
                if key in SCORES:
                    value, sd = (cell.get(key) or {}).get("value"), (cell.get(key) or {}).get("sd")
                elif many:
                    value, sd = cell["mean"].get(key), cell["sd"].get(key)
                else:
                    value, sd = cell.get(key), None
                text = "-" if value is None else f"{value:.3f}"
                if value is not None and sd is not None:
                    text += f" ± {sd:.3f}"
                if not many and value is not None and (gap := cell["gaps"].get(key)) is not None \
                        and not TABLE[key].distance:
                    text += f" ({gap:+.3f})"
                cells.append(text)
            print(f"{method:<13}" + "".join(f"{c:>22}" for c in cells))
        between = block.get("between_methods")
        if between:
            cells = ["-" if between[s].get(key) is None else f"{between[s][key]:.3f}"
                     for s in names]
            label = "methods apart" if key in SCORES else "|gap| apart"
            print(f"{label:<13}" + "".join(f"{c:>22}" for c in cells))


def _print_forgetting(result: dict) -> None:
    """The challenge's scores per method, mean ± bootstrap sd; retrain is the reference."""
    from dimalign.challenge import SCORES

    block, rows = result["forgetting"], result["methods"]
    print(f"\nforgetting, the NeurIPS 2023 unlearning challenge's rule: replicates in two "
          f"halves, {block['models_per_side']} models a side; each cell: value ± sd over "
          "resampled replicates; retrain = retraining against itself, the reference")
    print(f"{'method':<13}" + "".join(f"{k:>20}" for k in SCORES))
    reasons = set()
    for name, row in rows.items():
        cells = []
        for k in SCORES:
            cell = row.get(k) or {}
            if cell.get("value") is None:
                reasons.add(f"{k}: {cell.get('reason', 'not measured')}")
                cells.append("-")
            else:
                sd = "" if cell.get("sd") is None else f" ± {cell['sd']:.3f}"
                cells.append(f"{cell['value']:.3f}{sd}")
        print(f"{name:<13}" + "".join(f"{c:>20}" for c in cells))
    for line in sorted(reasons) + ([f"note: {block['note']}"] if block.get("note") else []):
        print(line)


# ---------------------------------------------------------------------------- runs in the store


def _store():
    from dimalign.store import Store

    return Store()


def cmd_submit(args) -> int:
    from dimalign.daemon import check_worker_settings, ensure_scheduler
    from dimalign.jobs import submit

    if args.wait and args.no_start:
        raise StoreError("--wait needs a scheduler: drop --no-start")
    if args.json and not args.wait:
        raise StoreError("--json goes with --wait (without it, submit prints the run id)")
    if not args.no_start:
        check_worker_settings()  # before anything is queued
    store = _store()
    run_id = submit(store, preset=args.preset, overrides=args.set, method=args.method,
                    owner=args.owner, parent_id=args.fork)
    run = store.get(run_id)
    if run.depends_on:
        print(f"waits for baselines job {run.depends_on}", file=sys.stderr)
    if not args.no_start:
        ensure_scheduler()
    if not args.wait:
        print(run_id)
        return 0
    print(f"run {run_id}", file=sys.stderr)
    run = _follow(store, run_id, 0.1)
    if run is None:
        return 130
    if run.status != "done":
        print(f"{run.id} {run.status}" + (f": {run.error}" if run.error else ""),
              file=sys.stderr)
        return 1
    from dimalign.runner import load_result

    result = load_result(run.folder)  # checked: a damaged one is one line
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(result)
    return 0


def _age(ts) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_runs(args) -> int:
    store = _store()
    if args.limit is not None and args.limit < 1:
        raise StoreError(f"--limit must be at least 1, got {args.limit}")
    if args.sweep is not None:
        from dimalign.store import check_sweep_id

        check_sweep_id(args.sweep)
    filters = {"owner": args.owner, "sweep": args.sweep, "kind": args.kind}
    runs = store.runs(**filters, limit=None if args.all else args.limit or RUNS_SHOWN)
    more = store.count(**filters) - len(runs)
    if more:  # said on stderr: stdout stays the list (or one JSON array) for scripts
        print(f"{more:,} more runs not shown (the newest {len(runs):,} are): --limit N or "
              "--all", file=sys.stderr)
    if args.json:
        places, seen = {}, {}  # each run's place among its owner's queued runs, read once
        for r in store.runs(statuses=("queued",), oldest_first=True, limit=None):
            seen[r.owner] = places[r.id] = seen.get(r.owner, 0) + 1
        json.dump([{"id": r.id, "parent_id": r.parent_id, "depends_on": r.depends_on,
                    "owner": r.owner, "kind": r.kind, "preset": r.preset, "method": r.method,
                    "status": r.status, "pid": r.pid, "device": r.device,
                    "progress": r.progress, "phase": r.phase, "created": r.created,
                    "started": r.started, "finished": r.finished, "error": r.error,
                    "executor": r.executor, "sweep": r.sweep,
                    "queue_position": places.get(r.id)}
                   for r in runs], sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{'id':<13}{'owner':<10}{'method':<13}{'preset':<16}{'status':<12}{'pid':>7}"
          f"{'progress':>10}  created")
    for r in runs:
        prog = "-" if r.progress is None else f"{r.progress:.0%}"
        print(f"{r.id:<13}{r.owner[:9]:<10}{r.method:<13}{r.preset[:15]:<16}{r.status:<12}"
              f"{r.pid or '-':>7}{prog:>10}  {_age(r.created)}"
              + (f"  ({r.error})" if r.error and r.status != "done" else ""))
    return 0


def queue_place(pos: int | None) -> str:
    """A queued run's place, as people read it: owners take turns for free workers."""
    if not pos or pos == 1:
        return "next of its owner's runs (owners take turns)"
    return f"{pos - 1} of its owner's runs ahead (owners take turns)"


def cmd_watch(args) -> int:
    from dimalign.store import check_run_id

    run = _follow(_store(), check_run_id(args.run), args.interval)
    if run is None:
        return 130
    print(f"{run.id} {run.status}" + (f": {run.error}" if run.error else ""))
    return 0 if run.status == "done" else 1


def _follow(store, run_id: str, interval: float):
    """Show a run's queue place or progress bar on stderr until it ends; returns the run, or
    None when Ctrl-C stopped the waiting (the run goes on: that is said, with how to stop it).
    While the run is queued or running, a scheduler is started whenever none runs (one that
    was killed is replaced, and marks the run interrupted if its worker died with it)."""
    try:
        return _follow_until_done(store, run_id, interval)
    except KeyboardInterrupt:
        print(f"\ndimalign: stopped waiting; run {run_id} goes on in the background "
              f"(dimalign watch {run_id} follows it, dimalign cancel {run_id} stops it)",
              file=sys.stderr)
        return None


def _follow_until_done(store, run_id: str, interval: float):
    from dimalign.daemon import ensure_scheduler
    from dimalign.jobs import queue_position
    from dimalign.train import Progress

    bar, last_phase, last_progress = ProgressBar(), None, None
    while True:
        run = store.get(run_id)
        if run.status in ("queued", "running"):
            ensure_scheduler()  # a lock-file check while one runs
        if run.status == "queued":
            pos = queue_position(store, run.id)
            waiting = f" (waits for {run.depends_on})" if run.depends_on else ""
            sys.stderr.write(f"\rqueued: {queue_place(pos)}{waiting}   ")
        elif run.status == "running" and (run.progress, run.phase) != (last_progress, last_phase):
            last_phase, last_progress = run.phase, run.progress
            steps = 1000
            bar(Progress(run.phase or "running", 1, 1,
                         max(1, round((run.progress or 0) * steps)), steps, None))
        if run.status not in ("queued", "running"):
            sys.stderr.write("\n")
            return run
        time.sleep(interval)


RUNS_SHOWN = 1000  # `runs` lists the newest this many unless told otherwise


def cmd_cancel(args) -> int:
    from dimalign.daemon import ensure_scheduler
    from dimalign.jobs import cancel, cancel_sweep

    if (args.run is None) == (args.sweep is None):
        raise StoreError("give a run id or --sweep ID (one of them)")
    if args.sweep is not None:
        cancelled, asked = cancel_sweep(_store(), args.sweep)
        ensure_scheduler()
        print(f"sweep {args.sweep}: {cancelled} queued run(s) cancelled, {asked} running "
              "run(s) asked to stop")
        return 0
    run = cancel(_store(), args.run)
    ensure_scheduler()  # after the cancel, so it cannot start the run first; runs what is left
    print(f"{run.id} {run.status}" + (" (cancel requested)" if run.cancel_requested else ""))
    return 0


def cmd_resume(args) -> int:
    from dimalign.daemon import ensure_scheduler
    from dimalign.jobs import resume

    run = resume(_store(), args.run)  # a running run whose worker died: interrupted first
    ensure_scheduler()
    print(f"{run.id} {run.status}")
    return 0


def cmd_export(args) -> int:
    from dimalign.export import export_run

    for path in export_run(_store(), args.run, args.dir):
        print(path)
    return 0


def cmd_sweep(args) -> int:
    import os

    from dimalign.daemon import running_backend
    from dimalign.sweep import queue_sweep

    def announce(sweep_id: str) -> None:
        # first, on stderr (stdout stays the run ids): what stops it all, even while it queues
        print(f"sweep {sweep_id} (stop all its runs: dimalign cancel --sweep {sweep_id})",
              file=sys.stderr, flush=True)

    if args.address and args.backend != "ray":
        raise ConfigError("--address", "goes with --backend ray")
    if args.gpus_per_job is not None:  # for the Ray scheduler this starts (checked there)
        if args.backend != "ray":
            raise ConfigError("--gpus-per-job", "goes with --backend ray")
        os.environ["DIMALIGN_RAY_GPUS"] = str(args.gpus_per_job)
    if args.backend == "ray" and running_backend() is None:  # the scheduler this starts
        from dimalign.ray_backend import check_reachable  # must find its cluster: said here

        check_reachable(args.address or os.environ.get("DIMALIGN_RAY_ADDRESS"))
    ids = queue_sweep(_store(), args.preset, args.method, args.grid, args.set, args.owner,
                      replicates=args.replicates, announce=announce,
                      backend=args.backend, address=args.address)
    for run_id in ids:
        print(run_id)
    return 0


def _audited_folder(run: str, what: str = "the audit") -> Path:
    """The folder of a finished run: a run id of the store, or the folder `dimalign run`
    printed as its artifacts."""
    from dimalign.store import check_run_id

    try:
        check_run_id(run)
    except StoreError:
        found = None
    else:
        found = _store().get(run)
    if found is not None:
        if found.status != "done":
            raise StoreError(f"run {run} is {found.status}; {what} needs a finished run")
        return found.folder
    folder = Path(run).expanduser()
    if not (folder / RESULT).is_file():
        raise StoreError(f"not a run: {run!r} (a run id from `dimalign runs`, or the artifacts "
                         "folder `dimalign run` printed)")
    return folder


def cmd_audit(args) -> int:
    from dimalign.audit import AuditSettings, audit_path, audit_saved_run, load_audit
    from dimalign.checked import DamagedFile

    folder = _audited_folder(args.run)
    settings = AuditSettings(relearn_samples=args.relearn_samples,
                             relearn_steps=args.relearn_steps)
    path, audit = audit_path(folder, settings), None
    if path.exists():
        try:
            audit = load_audit(path)
        except DamagedFile as err:
            print(f"dimalign: {err}; computing the audit again", file=sys.stderr)
    if audit is None:
        def progress(fraction: float, phase: str) -> None:
            print(f"audit {fraction:4.0%} {phase}", file=sys.stderr, flush=True)

        path, audit = audit_saved_run(folder, settings, progress)
        print(f"audit 100% done in {audit['seconds']:.1f} s", file=sys.stderr)
    if args.json:
        json.dump(audit, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_audit(audit)
        print(f"audit: {path}")
    return 0


def cmd_film(args) -> int:
    """A finished run's film in its linear view: one JSON object, or a self-contained HTML
    animation, an animated GIF or an MP4 video (--out)."""
    from dimalign import checked
    from dimalign.film import linear_view
    from dimalign.run_files import FILM

    out = Path(args.out).expanduser() if args.out else None
    suffix = out.suffix.lower() if out is not None else None
    if out is not None and suffix not in (".html", ".json", ".gif", ".mp4"):
        raise ConfigError("--out", f"writes .html, .json, .gif or .mp4, got {out.name!r}")
    if args.umap and suffix in (".gif", ".mp4"):
        raise ConfigError("--out", f"a {suffix[1:].upper()} draws the linear view (residual up "
                          "the side); write the UMAP view as .html or .json")
    folder = _audited_folder(args.run, "the film")
    from dimalign.methods.film import finish_saved, frames_left

    if frames_left(folder):  # frames its film job has not measured yet: here
        finish_saved(folder)
    try:
        bundle = checked.load_torch(folder / FILM)
    except FileNotFoundError:
        raise StoreError(f"run {args.run} has no film: it was not an unlearning run, or it ran "
                         "with eval.film_frames=0 or before films were recorded") from None
    if args.umap:  # the aligned-UMAP view: made here first when no job has made it
        from dimalign.film_umap import umap_saved_run, umap_view
        from dimalign.run_files import FILM_UMAP

        saved = folder / FILM_UMAP
        view = umap_view(bundle, saved if saved.exists() else umap_saved_run(folder)[0])
    else:
        view = linear_view(bundle)
    if suffix == ".html":
        from dimalign.plots import film_figure

        film_figure(view).write_html(out, include_plotlyjs=True)
    elif suffix == ".gif":
        from dimalign.plots import film_gif

        film_gif(view, out)
    elif suffix == ".mp4":
        from dimalign.plots import film_mp4

        film_mp4(view, out)
    elif out is not None:
        out.write_text(json.dumps(view))
    if args.json:
        json.dump(view, sys.stdout)
        sys.stdout.write("\n")
    elif suffix != ".json":
        from dimalign.film import mean_residual

        forget, retain = mean_residual(view, "forget"), mean_residual(view, "retain")
        print(f"{len(view['frames'])} frames, steps {view['frames'][0]['step']}.."
              f"{view['frames'][-1]['step']}; mean residual outside the retain eigenspace: "
              f"forget {forget[0]:.3f} -> {forget[-1]:.3f}, retain {retain[0]:.3f} -> "
              f"{retain[-1]:.3f}")
    if out is not None:
        print(f"film: {out}", file=sys.stderr)
    return 0


def print_audit(audit: dict, stream=None) -> None:
    """The audit's numbers as short tables (what the Audit page draws as figures)."""
    from dimalign.audit import format_steps

    stream = stream or sys.stdout
    models = list(audit["mia"])
    head = "".join(f"{m:>11}" for m in models)
    for key, title in (("da", "DA(forget | retain)"), ("cka_retrained", "CKA to retrained"),
                       ("effective_rank", "effective rank (retain)")):
        stream.write(f"{title:<26}{head}\n")
        for layer in audit["layers"]:
            cells = "".join(f"{_fmt(layer['models'][m][key]):>11}" for m in models)
            stream.write(f"  {layer['name'][:24]:<24}{cells}\n")
    s = audit["settings"]
    stream.write("inner layers centred; the penultimate with the run's eval.center "
                 f"({s['eval']['center']}); effective rank: Roy & Vetterli's\n")
    batch = s["relearn_batch"]
    stream.write(f"relearn attack: m = {s['m']} ({batch['forget']} a batch beside "
                 f"{batch['retain']} retain samples), s = {s['relearn_steps']} steps, lr "
                 f"{s['lr']}, Nesterov "
                 f"momentum {s['momentum']}; relearnt at forget accuracy >= "
                 f"{_fmt(s['relearn_threshold'])}\n")
    steps = audit["relearn"]
    stream.write(f"{'  steps to relearn':<26}" + "".join(
        f"{'never' if steps[m]['steps_to_relearn'] is None else steps[m]['steps_to_relearn']:>11}"
        for m in models) + "\n")
    spread = f"  mean ± sd ({s['relearn_subsets']} draws)"
    stream.write(f"{spread:<26}" + "".join(f"{format_steps(steps[m]):>11}" for m in models)
                 + "\n")
    stream.write(f"membership (forget vs {s['nonmembers']}):\n")
    stream.write(f"{'  ROC AUC (confidence)':<26}" + "".join(
        f"{_fmt(audit['mia'][m]['auc']):>11}" for m in models) + "\n")
    stream.write(f"{'  mia (SVC, headline)':<26}" + "".join(
        f"{_fmt(audit['mia'][m]['mia']):>11}" for m in models) + "\n")
    cw = audit["classwise"]
    forgotten = set(cw["forgotten"])
    stream.write("test accuracy per class (* forgotten):\n")
    for c in cw["classes"]:
        name = f"  class {c}{' *' if c in forgotten else ''}"
        stream.write(f"{name:<26}" + "".join(
            f"{_fmt(cw['models'][m]['accuracy'][c]):>11}" for m in models) + "\n")
    if "target" in cw:
        stream.write(f"{'  attack success rate':<26}" + "".join(
            f"{_fmt(cw['models'][m].get('asr')):>11}" for m in models) + "\n")
    _print_samples(audit, models, stream)


def _print_samples(audit: dict, models: list[str], stream, top: int = 5) -> None:
    """The most remembered forget samples: score, then each model's residual."""
    from dimalign.audit import verdict_text

    stream.write(f"most remembered forget samples ({verdict_text(audit['sample_verdict'])}); "
                 "each model's residual:\n")
    stream.write(f"{'  sample (label)':<18}{'score':>8}" + "".join(f"{m:>11}" for m in models)
                 + "\n")
    for s in audit["samples"][:top]:
        name = f"  {s['id']} ({s['label']})"
        stream.write(f"{name:<18}{_fmt(s['score']):>8}" + "".join(
            f"{_fmt(s['models'][m]['residual']):>11}" for m in models) + "\n")
    strata = audit["sample_verdict"].get("strata")
    if strata:  # a random forget set: the mean score in each stratum
        stream.write("mean score per stratum (residual, membership): " + ", ".join(
            f"{name} {_fmt(row['mean_residual'])}, {_fmt(row['mean_membership'])}"
            for name, row in strata.items()) + "\n")


def cmd_scheduler(args) -> int:
    from dimalign.daemon import serve_forever, stop_scheduler

    if args.stop:
        stopped = stop_scheduler()
        print("the scheduler stops once its running jobs have ended" if stopped
              else "no scheduler runs for this DIMALIGN_HOME", file=sys.stderr)
        return 0
    if serve_forever(idle_exit=args.idle_exit or None, backend_name=args.backend,
                     address=args.address):
        print("dimalign: a scheduler is already running for this DIMALIGN_HOME", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dimalign", description="See and steer machine unlearning in feature space: run "
        "experiments and compare methods, queue and follow background runs, export results.",
        epilog="`dimalign COMMAND --help` shows the options of one command.")
    # the "commands" list of --help is argparse's, made from the subparsers added below
    sub = parser.add_subparsers(dest="command", required=True, title="commands",
                                metavar="COMMAND")
    sub.add_parser("presets", help="list the named presets").set_defaults(func=cmd_presets)
    run = sub.add_parser("run", help="train or load the baselines of a preset and report metrics")
    run.add_argument("--preset", default=DEFAULT_PRESET, help=f"default: {DEFAULT_PRESET}")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. scenario.classes=3,5 or train.epochs=10")
    run.add_argument("--method", default="retrain",
                     help=f"unlearning method: {', '.join(BUILTIN)} or a plugin's (`dimalign "
                          "methods` lists them all; default: retrain)")
    run.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    run.add_argument("--fresh", action="store_true",
                     help="recompute even if this exact run was saved before")
    run.add_argument("--umap", type=int, metavar="N", default=0,
                     help="also compute the aligned UMAP of N points into the run folder")
    run.set_defaults(func=cmd_run)
    warm = sub.add_parser("warm", help="compile UMAP's numba kernels once (a minute on 2 cores)")
    warm.add_argument("--force", action="store_true", help="even if they look compiled")
    warm.set_defaults(func=cmd_warm)
    methods = sub.add_parser("methods", help="list the methods, their papers and knobs")
    methods.add_argument("--json", action="store_true")
    methods.set_defaults(func=cmd_methods)
    cmp = sub.add_parser("compare", help="run several methods on the same baselines, one table")
    cmp.add_argument("--preset", default=DEFAULT_PRESET)
    cmp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cmp.add_argument("--methods", default="all", help="'all' or a comma-separated list")
    cmp.add_argument("--replicates", type=int, default=1, metavar="N",
                     help="run every method on N replicates (new initialisation, batch order "
                          "and method randomness; same split), each against its own retrained "
                          "model; reports mean ± sd and the retrain-vs-retrain noise floor")
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(func=cmd_compare)

    sb = sub.add_parser("submit", help="queue a run in the background; prints its id")
    sb.add_argument("--preset", default=DEFAULT_PRESET)
    sb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sb.add_argument("--method", default="muda")
    sb.add_argument("--owner", default="local",
                    help="who the run belongs to (default: local). The command line's user owns "
                         "the machine and needs no owner key; keys guard the web app. 'shared' "
                         "and 'admin' are reserved")
    sb.add_argument("--fork", metavar="RUN", help="start from this run's weights and config")
    sb.add_argument("--no-start", action="store_true", help="queue only; start no scheduler")
    sb.add_argument("--wait", action="store_true",
                    help="block until the run ends and print its result (exit 1 unless done)")
    sb.add_argument("--json", action="store_true",
                    help="with --wait: the result as one JSON object, as `run --json` prints")
    sb.set_defaults(func=cmd_submit)
    rs = sub.add_parser("runs", help="list runs in the store")
    rs.add_argument("--owner")
    rs.add_argument("--sweep", metavar="ID", help="only the runs of this sweep")
    rs.add_argument("--kind", choices=list(KINDS), help="only the jobs of this kind")
    rs.add_argument("--limit", type=int, metavar="N",
                    help=f"the newest N runs (default {RUNS_SHOWN}; stderr says how many more)")
    rs.add_argument("--all", action="store_true", help="every run, however many")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs)
    wt = sub.add_parser("watch", help="follow a run's progress until it ends")
    wt.add_argument("run")
    wt.add_argument("--interval", type=float, default=0.5)
    wt.set_defaults(func=cmd_watch)
    ca = sub.add_parser("cancel", help="cancel a queued or running run, or a whole sweep")
    ca.add_argument("run", nargs="?")
    ca.add_argument("--sweep", metavar="ID",
                    help="every run of this sweep (the id `sweep` prints first)")
    ca.set_defaults(func=cmd_cancel)
    re_ = sub.add_parser("resume", help="continue an interrupted, failed or cancelled run from "
                         "its last checkpoint")
    re_.add_argument("run")
    re_.set_defaults(func=cmd_resume)
    ex = sub.add_parser("export", help="config, metrics CSV, figures, checkpoint and report")
    ex.add_argument("run")
    ex.add_argument("dir")
    ex.set_defaults(func=cmd_export)
    sw = sub.add_parser("sweep", help="one run per combination of --grid values")
    sw.add_argument("--preset", default=DEFAULT_PRESET)
    sw.add_argument("--method", default="muda")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument("--owner", default="sweep")
    sw.add_argument("--replicates", type=int, default=1, metavar="N",
                    help="every combination on N replicates (each with its own baselines)")
    sw.add_argument("--backend", choices=("local", "ray"), default=None,
                    help="the scheduler to start if none serves this home: this machine's "
                         "workers (local) or jobs as tasks on a Ray cluster (ray); default: "
                         "DIMALIGN_BACKEND, else local")
    sw.add_argument("--gpus-per-job", type=float, default=None,
                    help="with --backend ray: GPUs each job asks for (DIMALIGN_RAY_GPUS; 0.25: "
                         "four share a GPU)")
    sw.add_argument("--address", help="with --backend ray: the cluster's address (default: "
                    "DIMALIGN_RAY_ADDRESS, else RAY_ADDRESS, else a Ray started here)")
    sw.set_defaults(func=cmd_sweep)
    au = sub.add_parser("audit", help="a finished run's layer-wise geometry, membership "
                        "evidence, relearn attack and per-class view (cached beside it)")
    au.add_argument("run", help="a run id (`dimalign runs`) or a `dimalign run` artifacts folder")
    au.add_argument("--json", action="store_true", help="print the audit as one JSON object")
    au.add_argument("--relearn-samples", type=int, default=0, metavar="M",
                    help="forget samples the relearn attack fine-tunes on (0: 10%% of the "
                         "forget set, at least 5)")
    au.add_argument("--relearn-steps", type=int, default=50, metavar="S",
                    help="fine-tuning steps of the relearn attack (default: 50)")
    au.set_defaults(func=cmd_audit)
    fm = sub.add_parser("film", help="a finished unlearning run's feature-space film: its "
                        "recorded frames in the linear view, as JSON, an HTML animation, a GIF "
                        "or an MP4")
    fm.add_argument("run", help="a run id (`dimalign runs`) or a `dimalign run` artifacts folder")
    fm.add_argument("--umap", action="store_true",
                    help="the aligned-UMAP view instead of the linear one (film-umap.pt, "
                         "made first when missing)")
    fm.add_argument("--json", action="store_true", help="print the film as one JSON object")
    fm.add_argument("--out", metavar="FILE", help="write it to FILE: .html (an animation that "
                    "plays in any browser), .gif (an animated image), .mp4 (an H.264 video) or "
                    ".json")
    fm.set_defaults(func=cmd_film)
    sc = sub.add_parser("scheduler", help="run the job scheduler in the foreground")
    sc.add_argument("--idle-exit", type=float, default=600.0,
                    help="stop after this many idle seconds (0: never)")
    sc.add_argument("--stop", action="store_true",
                    help="stop this home's background scheduler (after its running jobs)")
    sc.add_argument("--backend", choices=("local", "ray"), default=None,
                    help="where jobs run: this machine's worker processes (local) or tasks on "
                         "a Ray cluster (ray); default: DIMALIGN_BACKEND, else local")
    sc.add_argument("--address", help="with --backend ray: the cluster's address (default: "
                    "DIMALIGN_RAY_ADDRESS, else RAY_ADDRESS, else a Ray started here)")
    sc.set_defaults(func=cmd_scheduler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"dimalign: invalid setting {err}", file=sys.stderr)
        return 2
    except StoreError as err:
        print(f"dimalign: {err}", file=sys.stderr)
        return 2
    except DatasetUnavailable as err:
        print(f"dimalign: {err}", file=sys.stderr)
        return 3
    except PathError as err:  # DIMALIGN_HOME or a destination that cannot be used
        print(f"dimalign: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as err:  # diverged training, missing device, degenerate
        # features (e.g. all zero)
        print(f"dimalign: {err}", file=sys.stderr)
        return 1
    except (Cancelled, SweepInterrupted) as err:
        print(f"dimalign: {err}", file=sys.stderr)
        return 130
    except OSError as err:  # a write outside the checked files (e.g. export's folder)
        if not is_disk_full(err):
            raise
        print(f"dimalign: {DiskFull(err.filename or '.')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndimalign: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
