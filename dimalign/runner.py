"""One experiment end to end: baselines, an unlearning method, every metric, saved artifacts.

The CLI calls this now; the job worker calls the same functions. A run's folder is written
whole or not at all: files go to a temporary folder that is renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from dimalign import checked, paths
from dimalign.config import Config, check_replicates
from dimalign.methods import get_method
from dimalign.methods.loop import TelemetryFn, UnlearnResult, unlearn
from dimalign.metric_table import TABLE, TIME_FRACTION, gap_to_retrained
from dimalign.run_files import (
    BESIDE_RESULT,
    FILM,
    FILM_PENDING,
    FINISHED,
    GEOMETRY,
    RESULT,
    TELEMETRY,
    WEIGHTS,
)
from dimalign.train import Baselines, ProgressFn, get_baselines

FORGET_SCORED = 1000  # forget examples whose confidences a result keeps (all, on digits)


def result_key(cfg: Config, method: str) -> str:
    """The folder name of a CLI result (under `runs/`): 16 hex digits of a hash of what defines
    the run, never user text. Not a run id: run ids name the store's runs (`dimalign.store`),
    12 random hex digits, whose folders sit beside these."""
    blob = json.dumps({"config": cfg.to_dict(), "method": method}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finite(obj):
    """JSON has no NaN: metrics of empty sets become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_result(run_dir: Path) -> dict:
    """A saved result.json (checked against its sha256: a damaged one raises DamagedFile), its
    `artifacts` the folder it was read from: the file stores that folder relative to the home
    (older ones: absolute, maybe in a home this one was copied from), and whatever it says, the
    run's files are the ones beside it."""
    saved = checked.load_json(run_dir / RESULT)
    saved["artifacts"] = str(run_dir)
    return saved


def reusable_result(run_dir: Path, baselines: Baselines,
                    say: Callable[[str], None] = _say) -> dict | None:
    """The saved result of this very run, if it was computed from the same baseline
    checkpoints (evaluation and CPU unlearning are deterministic: rerunning only costs time)
    and every file of it still matches its sha256. A damaged file is set aside (and said); a
    result written before checksums is computed again."""
    path = run_dir / RESULT
    if not (path.exists() and (run_dir / GEOMETRY).exists()):
        return None
    try:
        if not all(checked.verify(run_dir / name) for name in FINISHED
                   if (run_dir / name).exists()):
            return None
        saved = load_result(run_dir)
    except FileNotFoundError:
        return None
    except checked.DamagedFile as err:
        say(f"{err}; computing the result again")
        return None
    if saved.get("checkpoints") != baselines.checkpoints:
        return None
    saved["cached"] = {**baselines.cached, "result": True}
    return saved


def run_experiment(cfg: Config, method: str = "retrain", *, preset: str = "",
                   progress: ProgressFn | None = None, telemetry: TelemetryFn | None = None,
                   cancel: Callable[[], bool] | None = None, fresh: bool = False,
                   say: Callable[[str], None] = _say, run_dir: Path | None = None,
                   init: torch.nn.Module | None = None,
                   checkpoint: Callable[[dict], None] | None = None,
                   resume: dict | None = None, earlier_points: list[dict] = (),
                   on_frame: Callable[[Callable[[], dict]], None] | None = None,
                   film_budget: float = 1.0) -> dict:
    """Baselines (cached), the method (unless retrain), every metric, and the run's folder.

    Without `run_dir` the folder is named by a hash of the config and method, and an identical
    earlier result is reused unless `fresh`. `init`, `checkpoint` and `resume` pass through to
    the unlearning loop (forks start from `init`; workers checkpoint and resume); a resumed
    run passes the telemetry points it sent before as `earlier_points`, so its saved telemetry
    is whole. `on_frame` receives the film so far after each of its frames (a live page's);
    frames beyond `film_budget` are left in the folder for the run's `film` job (`FILM_PENDING`).
    """
    spec = get_method(method)
    baselines = get_baselines(cfg, progress=progress, say=say)
    if run_dir is None:
        run_dir = paths.runs_dir() / result_key(cfg, method)
        if not fresh and (saved := reusable_result(run_dir, baselines, say)) is not None:
            return saved
    models = {"original": baselines.original, "retrained": baselines.retrained}
    seconds = dict(baselines.seconds)
    points: list[dict] = list(earlier_points)
    outcome: UnlearnResult | None = None
    if spec.trains:
        say(f"unlearning with {spec.title} ...")

        def collect(point: dict) -> None:
            points.append(point)
            if telemetry is not None:
                telemetry(point)

        outcome = unlearn(cfg, spec, baselines.experiment, baselines.original, baselines.device,
                          progress=progress, telemetry=collect, cancel=cancel, init=init,
                          checkpoint=checkpoint, resume=resume, retrained=baselines.retrained,
                          on_frame=on_frame, film_budget=film_budget)
        models["unlearned"] = outcome.model
        seconds["unlearn"] = outcome.seconds
    say("evaluating ...")
    kept = KeptFilm(outcome, run_dir)  # written beside the evaluation, not after it
    try:
        return evaluate_and_save(cfg, preset, method, baselines, models, seconds, run_dir,
                                 outcome, points, kept)
    finally:
        kept.join()


class KeptFilm:
    """The film frames a run left for its film job (`FILM_PENDING`), written into the run's
    folder on a thread while the run is evaluated: a couple of megabytes, checksummed and
    flushed to disk, that would otherwise add to the time until the run is done."""

    def __init__(self, outcome: UnlearnResult | None, run_dir: Path):
        import threading

        self.error: BaseException | None = None
        self.thread = None
        self.wrote = outcome is not None and outcome.film_kept is not None
        if not self.wrote:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._write, daemon=True,
                                       args=(outcome.film_kept, run_dir / FILM_PENDING))
        self.thread.start()

    def _write(self, kept: dict, path: Path) -> None:
        try:
            checked.save_torch(kept, path)
        except BaseException as err:  # noqa: BLE001 - raised again by `join`
            self.error = err

    def join(self) -> None:
        """Waits for the file; its error (a full disk) is the run's."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
            if self.error is not None:
                raise self.error


def evaluate_and_save(cfg: Config, preset: str, method: str, baselines: Baselines,
                      models: dict, seconds: dict, run_dir: Path,
                      outcome: UnlearnResult | None, points: list[dict],
                      kept: KeptFilm | None = None) -> dict:
    from dimalign.artifacts import geometry_bundle
    from dimalign.metrics import evaluate, evaluate_strata, sample_sizes

    exp = baselines.experiment
    known = {role: baselines.checkpoints[role] for role in ("original", "retrained")
             if models.get(role) is getattr(baselines, role)}
    metrics, outputs = evaluate(models, exp, cfg.eval, cfg.seed, ids=known)
    strata = evaluate_strata(outputs, metrics, exp, cfg.eval, cfg.seed, ids=known)
    result = finite({
        "preset": preset,
        "config": cfg.to_dict(),
        "method": method,
        "params": cfg.method_params(method),
        "device": str(baselines.device),
        "data": exp.summary(),
        "models": metrics,
        "seconds": seconds,
        "cached": baselines.cached,
        "samples": sample_sizes(exp, cfg.eval),
        "artifacts": str(run_dir),
        "checkpoints": baselines.checkpoints,
        # per forget example, what the challenge's forgetting quality compares across replicates
        "forget_confidence": forget_confidence(outputs, exp, cfg.seed),
    })
    if strata is not None:  # a random forget set: its forget metrics per stratum
        result["strata"] = finite(strata_block(exp, cfg, strata))
    if outcome is not None:
        result["telemetry_seconds"] = outcome.telemetry_seconds
        result["steps"] = outcome.steps
        result["film_seconds"] = outcome.film_seconds
    # write everything into a scratch folder, then move it into place: nothing half-written
    # is ever in the run's folder, and the scratch folder goes whatever happens
    scratch = run_dir.with_name(f"{run_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        _mkdir(scratch)
        checked.save_torch(geometry_bundle(outputs, exp, cfg.eval, cfg.seed, ids=known),
                           scratch / GEOMETRY)
        checked.save_json(finite(points), scratch / TELEMETRY)
        if outcome is not None:
            checked.save_torch({k: v.detach().cpu() for k, v in outcome.model.state_dict().items()},
                               scratch / WEIGHTS)
        if outcome is not None and outcome.film is not None:
            checked.save_torch(outcome.film, scratch / FILM)
        # the folder relative to the home: a copied home's results point into the copy
        checked.save_json({**result, "artifacts": paths.relative_to_home(run_dir)},
                          scratch / RESULT, indent=1)
        if kept is not None:  # the film job reads it once the run is done: there by then
            kept.join()
        if run_dir.exists():  # keep what else lives there (a worker's checkpoint), replace ours
            if not (kept is not None and kept.wrote):  # one an earlier attempt left
                checked.remove(run_dir / FILM_PENDING)
            for name in (*BESIDE_RESULT, FILM, RESULT):
                if (scratch / name).exists():
                    checked.move(scratch / name, run_dir / name)
                else:
                    checked.remove(run_dir / name)
            for stale in run_dir.glob("audit-*.json"):  # audits of the result replaced
                checked.remove(stale)
        else:
            os.replace(scratch, run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def forget_confidence(outputs: dict, exp, seed: int) -> dict[str, list[float]]:
    """Each model's logit-scaled confidence on the label of each forget example (the labels
    it trained under), 4 decimals, on at most FORGET_SCORED seeded examples: the same ones in
    every replicate (they share the split and the seed), and a result.json that stays small."""
    import numpy as np

    from dimalign.forgetting import logit_confidence
    from dimalign.metrics import sample_rows

    f = exp.forget
    rows = sample_rows(int(f.sum()), FORGET_SCORED, np.random.default_rng(seed))
    labels = exp.y_train[f].numpy()[rows]
    return {name: np.round(logit_confidence(out.logits_train[f].numpy()[rows], labels),
                           4).tolist() for name, out in outputs.items()}


def strata_block(exp, cfg: Config, models: dict[str, dict]) -> dict:
    """What a result keeps of a random forget set's strata (dimalign/strata.py): how they were
    made (`strata.describe`), each model's per-stratum metrics, and `forget`, the stratum of
    each example of `forget_confidence` (the same seeded examples), which lets the
    challenge's scores be taken per stratum."""
    import numpy as np

    from dimalign.metrics import sample_rows
    from dimalign.strata import describe

    f = exp.forget
    strata, hardness = exp.strata[f].numpy(), exp.hardness[f].numpy()
    rows = sample_rows(int(f.sum()), FORGET_SCORED, np.random.default_rng(cfg.seed))
    return {**describe(strata, hardness, cfg.scenario.stratify_by), "models": models,
            "forget": strata[rows].tolist()}


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        if checked.is_disk_full(err):
            raise checked.DiskFull(folder) from None
        raise


def compare(cfg: Config, methods: list[str], *, preset: str = "", replicates: int = 1,
            progress: ProgressFn | None = None, say: Callable[[str], None] = _say) -> dict:
    """Every method from the same cached baselines, evaluated together: per method every
    metric, its gap to retrained, and its time as a fraction of retraining. With `replicates`
    > 1, the same on replicates 0..N-1 of `cfg` (each with its own baselines), summarised by
    `replicates.aggregate`: mean and sd per method, and the retrain-vs-retrain noise floor."""
    from dimalign.replicates import aggregate, with_forgetting

    check_replicates(replicates, cfg.replicate)
    results = []
    for r in range(replicates):
        if replicates > 1:
            say(f"replicate {r + 1} of {replicates}")
        results.append(_compare_one(cfg.with_replicate(cfg.replicate + r), methods, preset,
                                    progress, say))
    retrained = [res.pop("retrained") for res in results]
    confidences = [res.pop("forget_confidence") for res in results]
    strata = [res.pop("strata") for res in results]
    out = aggregate(results, retrained)
    if replicates > 1:  # the challenge's scores compare models across replicates
        out = with_forgetting(out, [r["methods"] for r in results], retrained, confidences)
    if strata[0] is not None:  # a random forget set: every forget metric per stratum
        from dimalign.strata import with_strata

        out = with_strata(out, strata, [r["methods"] for r in results], retrained, confidences)
    return finite(out)


def _compare_one(cfg: Config, methods: list[str], preset: str, progress: ProgressFn | None,
                 say: Callable[[str], None]) -> dict:
    baselines = get_baselines(cfg, progress=progress, say=say)
    models = {"original": baselines.original, "retrained": baselines.retrained}
    seconds = {"original": baselines.seconds["original"],
               "retrained": baselines.seconds["retrained"]}
    for name in methods:
        spec = get_method(name)
        if not spec.trains:
            continue
        say(f"unlearning with {spec.title} ...")
        outcome = unlearn(cfg, spec, baselines.experiment, baselines.original, baselines.device,
                          progress=progress)
        models[name], seconds[name] = outcome.model, outcome.seconds
    say("evaluating ...")
    from dimalign.metrics import evaluate, evaluate_strata

    exp = baselines.experiment
    metrics, outputs = evaluate(models, exp, cfg.eval, cfg.seed)
    strata = evaluate_strata(outputs, metrics, exp, cfg.eval, cfg.seed)
    retrained = metrics["retrained"]
    rows = {}
    for name in ["original", *methods]:
        key = "retrained" if name == "retrain" else name
        row = dict(metrics[key])
        row["seconds"] = seconds[key]
        row[TIME_FRACTION.name] = seconds[key] / seconds["retrained"]
        row["gaps"] = {k: gap_to_retrained(k, row[k], retrained.get(k))
                       for k in metrics[key] if k in TABLE}
        rows[name] = row
    return finite({"preset": preset, "config": cfg.to_dict(), "device": str(baselines.device),
                   "methods": rows, "params": {m: cfg.method_params(m) for m in methods},
                   "retrained_seconds": seconds["retrained"], "retrained": retrained,
                   "forget_confidence": forget_confidence(outputs, exp, cfg.seed),
                   "strata": None if strata is None else strata_block(exp, cfg, strata)})


def comparison_rows(results: list[tuple[str, str, dict]], keys: list[str]) -> list[dict]:
    """The rows that compare saved runs of one experiment: its original and retrained models
    (from the first result: an experiment's runs share them), then each run's unlearned model,
    with every metric in `keys` and the time as a fraction of retraining (`time_fraction`).
    results: (run id, method, result as saved) for each finished run."""
    first = results[0][2]
    retrain_seconds = first["seconds"]["retrained"]

    def row(run: str, method: str, metrics: dict, seconds: float) -> dict:
        return {"run": run, "method": method, **{k: metrics.get(k) for k in keys},
                TIME_FRACTION.name: seconds / retrain_seconds}

    rows = [row(name, name, first["models"][name], first["seconds"][name])
            for name in ("original", "retrained")]
    rows += [row(run, method, result["models"]["unlearned"], result["seconds"]["unlearn"])
             for run, method, result in results]
    return rows


def gaps_to_retrained(rows: list[dict], keys: list[str]) -> list[dict]:
    """The same rows with each metric in `keys` replaced by its gap to the retrained row
    (`metric_table.gap_to_retrained`: avg-gap, already a distance, stays as it is; a gap with
    a missing side is None); a spread (MIA's sd) is the spread of the gap too, and stays."""
    retrained = next(r for r in rows if r["run"] == "retrained")
    gapped = [k for k in keys if not (k in TABLE and TABLE[k].spread_of)]  # an sd stays an sd
    return [{**row, **{k: gap_to_retrained(k, row[k], retrained.get(k)) for k in gapped}}
            for row in rows]
