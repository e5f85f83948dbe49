"""What pages read from the run store and submit to it, through this session's store
connection (`ui.state.store`): the runs of an experiment, its baselines job, a run's saved
geometry, runs to draw as ghosts. Every filter runs in SQL: a run's experiment key is a column
written at submit."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import NamedTuple

import streamlit as st

from dimalign.checked import DamagedFile
from dimalign.config import Config
from dimalign.kinds import REGISTRY as KINDS
from dimalign.kinds import get_kind
from dimalign.run_files import GEOMETRY
from dimalign.store import ACTIVE, Run, Store, StoreError
from dimalign.train import experiment_key
from dimalign.ui.state import Identity, follow, remember, store


def ensure_scheduler() -> None:
    """Start the background scheduler if none runs: a lock-file check, cheap enough for every
    call (one stops after ten idle minutes, or may have been killed, so a session cannot check
    just once). A setting it cannot start with (DIMALIGN_WORKERS=0) is shown, not raised."""
    from dimalign.daemon import ensure_scheduler as start
    from dimalign.errors import ConfigError

    now = time.monotonic()  # once per action: a press's callback and the page it redraws
    if now - st.session_state.get("_scheduler_checked", -math.inf) < SCHEDULER_CHECK_EVERY:
        return
    st.session_state["_scheduler_checked"] = now
    try:
        start()
    except ConfigError as err:
        st.error(f"Runs cannot start: the background scheduler's setting {err}")


SCHEDULER_CHECK_EVERY = 1.0  # s: a session's pages and actions look for the scheduler this often


def train_baselines(preset: str, overrides: list[str], who: Identity) -> str:
    """Queue (or join) this experiment's shared baselines job as `who`; returns its id."""
    from dimalign.jobs import submit

    run_id = submit(store(), preset=preset, overrides=overrides, method="retrain",
                    owner=who.name, key=who.key)
    ensure_scheduler()
    return run_id


def cancel_run(run_id: str, who: Identity) -> None:
    """Cancel `who`'s run (the engine checks the key)."""
    from dimalign.jobs import cancel

    cancel(store(), run_id, who.name, who.key)


def queue_place(run: Run) -> int | None:
    """A queued run's place among its owner's queued runs (None when it is not queued)."""
    from dimalign.jobs import queue_position

    return queue_position(store(), run.id)


def job_on_run(kind: str, run: Run, settings: dict, who: Identity) -> str:
    """Queue a job of `kind` on a finished run (an embedding, an audit) as `who`, or the one
    already queued, running or done (`jobs.submit_job`); returns its id."""
    from dimalign.jobs import submit_job

    job_id = submit_job(store(), kind, run.id, who.name, settings)
    ensure_scheduler()
    return job_id


def latest_job(kind: str, run: Run, settings: dict) -> Run | None:
    """The newest job of `kind` on `run` with these settings, if any."""
    spec = get_kind(kind)
    found = store().runs(kind=kind, share_key=spec.share_key(run.id, settings), limit=1)
    return found[0] if found else None


def baselines_run(cfg: Config) -> Run | None:
    """The newest finished baselines job of this experiment (any owner: they are shared)."""
    return _baselines(cfg, ("done",))


def active_baselines(cfg: Config) -> Run | None:
    return _baselines(cfg, ACTIVE)


def _baselines(cfg: Config, statuses: tuple[str, ...]) -> Run | None:
    found = store().runs(kind="baselines", statuses=statuses, share_key=experiment_key(cfg),
                         limit=1)
    return found[0] if found else None


RUNS_LISTED = 500  # the newest runs a page lists; a caption says how many more there are


class Listing(list):
    """The newest runs of a query, and how many more it left out (`more`)."""

    more: int = 0


def experiment_runs(cfg: Config, who: Identity | None = None,
                    statuses: tuple[str, ...] | None = None,
                    limit: int | None = RUNS_LISTED) -> Listing:
    """Unlearning runs of this experiment (same data, scenario, model, baselines), newest
    first: `who`'s (every owner's for None or the instructor's view), of `statuses`; the newest
    `limit`, and `.more` says how many are left out."""
    filters = dict(kind="unlearn", owner=None if who is None else who.runs_of,
                   statuses=statuses, experiment=experiment_key(cfg))
    found = Listing(store().runs(**filters, limit=limit))
    if limit is not None and len(found) == limit:  # only then can there be more
        found.more = store().count(**filters) - limit
    return found


REPLICATES_SHOWN = 10  # replicates 0..9 of an experiment are looked up (one indexed query each)


def replicate_runs(cfg: Config, who: Identity | None = None,
                   statuses: tuple[str, ...] | None = None,
                   limit: int = RUNS_LISTED) -> Listing:
    """`experiment_runs` of every replicate of this experiment, newest first, at most `limit`
    (`.more`: how many are left out): each replicate has its own baselines, hence its own
    experiment key."""
    parts = [experiment_runs(cfg.with_replicate(r), who, statuses, limit)
             for r in range(REPLICATES_SHOWN)]
    every = sorted((run for part in parts for run in part), key=lambda run: run.created,
                   reverse=True)
    found = Listing(every[:limit])
    found.more = len(every) - len(found) + sum(part.more for part in parts)
    return found


def room_experiments(cfg: Config) -> tuple[str, ...]:
    """The experiment keys of every replicate of this experiment (what `replicate_runs`
    lists): the instructor's room view watches them."""
    return tuple(experiment_key(cfg.with_replicate(r)) for r in range(REPLICATES_SHOWN))


def room_version(experiments: tuple[str, ...]) -> tuple:
    """Moves whenever a run of these experiments is created, starts or ends (one query)."""
    return store().room_version(experiments)


def more_runs_note(runs: Listing) -> str | None:
    """What a page says under a list that leaves runs out, or None when it shows them all."""
    if not getattr(runs, "more", 0):
        return None
    return (f"Listed: the newest {len(runs):,} runs; {runs.more:,} older ones are not "
            "(`dimalign runs --all` lists every run).")


def replicate_results(cfg: Config) -> list[dict]:
    """One finished result per replicate of this experiment that has one (any owner's run or
    its baselines job: they share the replicate's baselines), replicate 0 first."""
    return experiment_results(room_experiments(cfg))


def experiment_results(keys: Iterable[str], db: Store | None = None) -> list[dict]:
    """`replicate_results` of the experiments `keys` (one per replicate, in order: a
    challenge keeps its experiment's so), from `db` (by default the session's store)."""
    db = db or store()
    found = []
    for key in keys:  # jobs on its runs share the key: not those kinds
        runs = [run for kind, spec in KINDS.items() if spec.experiment
                for run in db.runs(statuses=("done",), experiment=key, kind=kind, limit=5)]
        result = next((run.result for run in sorted(runs, key=lambda r: -r.created)
                       if run.result and "models" in run.result), None)
        if result is not None:
            found.append(result)
    return found


def noise_floor(cfg: Config, keys) -> dict | None:
    """The retrain-vs-retrain noise floor of this experiment's replicates; None with fewer
    than two finished replicates."""
    from dimalign.replicates import noise_floor as floor

    results = replicate_results(cfg)
    if len(results) < 2:
        return None
    return floor([res["models"]["retrained"] for res in results], keys)


def submit_replicates(preset: str, overrides: list[str], methods: list[str], replicates: int,
                      who: Identity) -> list[str]:
    """Queue each method on replicates 0..N-1 as `who` through the shared queue, except where
    a queued, running or finished run of that method and config is already there. Over
    `who`'s queue cap: QueueFull before anything is queued."""
    from dimalign.config import build_config
    from dimalign.jobs import cancel, check_queue_room, submit

    wanted = []
    for r in range(replicates):
        extra = [*overrides, f"replicate={r}"]
        cfg = build_config(preset, extra)
        config = json.dumps(cfg.to_dict(), sort_keys=True)
        have = {(run.method, json.dumps(run.config, sort_keys=True))
                for run in experiment_runs(cfg, who, (*ACTIVE, "done"), limit=None)}
        wanted += [(method, extra, cfg) for method in methods if (method, config) not in have]
    check_queue_room(store(), who.name, len(wanted))
    ids: list[str] = []
    try:
        for method, extra, cfg in wanted:  # each config built once
            ids.append(submit(store(), preset=preset, overrides=extra, method=method,
                              owner=who.name, key=who.key, built=cfg))
    except BaseException:  # whole or not at all (another tab may have filled the queue)
        for run_id in ids:
            cancel(store(), run_id, who.name, who.key)
        raise
    ensure_scheduler()
    return ids


def start_sweep(preset: str, overrides: list[str], method: str, grid: list[str],
                replicates: int, who: Identity) -> list[str]:
    """A sweep as `who`, through the shared queue (`sweep.queue_sweep`: the scheduler runs it,
    with whatever backend it is configured with). A sweep of more runs than its address
    keeps is refused: the page could follow only part of it."""
    from dimalign.errors import ConfigError
    from dimalign.sweep import parse_grid, queue_sweep

    runs = len(parse_grid(grid)) * replicates
    if runs > SWEEP_RUNS_KEPT:
        raise ConfigError("sweep", f"{runs} runs; a sweep here may have at most "
                          f"{SWEEP_RUNS_KEPT}: fewer values or replicates (or `dimalign sweep`)")
    return queue_sweep(store(), preset, method, grid, overrides, owner=who.name,
                       replicates=replicates, key=who.key)


SWEEP_RUNS_KEPT = 200  # runs of a sweep an address may name


def sweep_size(grid: list[str], replicates: int) -> int:
    """The runs a sweep of this grid queues (ConfigError for a grid that does not parse)."""
    from dimalign.sweep import parse_grid

    return len(parse_grid(grid)) * replicates


def cancel_sweep(sweep: str, who: Identity) -> tuple[int, int]:
    """Cancel `who`'s runs of a sweep (queued ones at once, running ones asked to stop)."""
    from dimalign.jobs import cancel_sweep as cancel_all

    return cancel_all(store(), sweep, owner=who.name, key=who.key)


def remember_sweep(ids: list[str], knobs: list[str]) -> None:
    """Keep a sweep's runs and knobs in the address and the session: a reload or a page
    switch comes back to it."""
    remember("sweep", ",".join(ids))
    remember("sweep_knobs", ",".join(knobs))


def saved_sweep(who: Identity) -> dict | None:
    """The sweep this session (or its address) names: its runs that `who` may see (their
    ids checked by the store), their method and the knobs swept; None when nothing is left."""
    from dimalign.methods import REGISTRY

    ids, knobs = st.session_state.get("_sticky_sweep") or st.query_params.get("sweep"), \
        st.session_state.get("_sticky_sweep_knobs") or st.query_params.get("sweep_knobs")
    if not ids or not knobs:
        return None
    runs = []
    for run_id in ids.split(",")[:SWEEP_RUNS_KEPT]:
        try:
            run = store().get(run_id)
        except StoreError:  # not a run id, or no such run: the address is anyone's text
            continue
        if who.admin or run.owner == who.name:
            runs.append(run)
    if not runs or runs[0].method not in REGISTRY:
        return None
    spec = REGISTRY[runs[0].method]  # only knobs Tune sweeps: numbers, not choices
    names = [k for k in knobs.split(",") if k in spec.knobs and spec.knobs[k].numeric][:2]
    if not names:
        return None
    remember_sweep([r.id for r in runs], names)
    return {"ids": [r.id for r in runs], "method": runs[0].method, "knobs": names,
            "sweep": runs[0].sweep}


def load_geometry(run: Run) -> dict | None:
    """A run's saved geometry; None when it has none, or when its file cannot be read
    (damaged, cut short, failing its sha256: then set aside): an error line names the run and
    what to do, on this page and on every later one (the file set aside is the evidence)."""
    path = run.folder / GEOMETRY
    if not path.exists():
        if any(path.parent.glob(f"{path.name}.damaged-*")):
            _geometry_damaged(run, "DamagedFile", " and was set aside")
        return None
    try:
        return _cached_bundle(str(path), path.stat().st_mtime)
    except Exception as err:  # whatever a damaged file makes loading raise: one readable line
        aside = " and was set aside" if isinstance(err, DamagedFile) else ""
        _geometry_damaged(run, type(err).__name__, aside)
        return None


def _geometry_damaged(run: Run, error: str, aside: str) -> None:
    again = ("Evaluate the baselines again on the server (`dimalign submit --method retrain` "
             "with this experiment's settings)" if run.kind == "baselines" else
             "Run it again (the same method and knobs on the Unlearn page)")
    st.error(f"Run {run.id}'s saved geometry cannot be read ({error}): its file is "
             f"damaged{aside}. {again}.")


@st.cache_resource(show_spinner=False, max_entries=16)  # shared, read-only: no copy per run
def _cached_bundle(path: str, mtime: float) -> dict:
    from dimalign.artifacts import load_bundle

    return load_bundle(path)


class Ghost(NamedTuple):
    """An earlier run drawn faintly under the chosen one, named by what it changed."""

    run: Run
    label: str


def ghost_runs(runs: list[Run], selected: Run, count: int = 5) -> list[Ghost]:
    """The chosen run's owner's last `count` runs of the experiment besides it (queued runs
    have nothing to draw yet)."""
    from dimalign.config import config_from_dict
    from dimalign.steer import ghost_label, knob_changes

    chosen = config_from_dict(selected.config)
    out = []
    for run in runs:
        if run.id == selected.id or run.status == "queued" or run.owner != selected.owner:
            continue
        changes = knob_changes(config_from_dict(run.config), chosen, run.method, selected.method)
        out.append(Ghost(run, ghost_label(changes, run.id)))
        if len(out) == count:
            break
    return out


def start_run(preset: str, overrides: list[str], method: str, who: Identity,
              parent_id: str | None = None, supersede: bool = False) -> None:
    """Queue a run as `who` (a fork when `parent_id`: of one of `who`'s runs) and show it: call
    it from a button's callback, or before the page draws its run picker. The engine checks
    `who`'s key. `supersede`: an automatic run, which cancels this
    session's previous automatic run if it is still going."""
    from dimalign.jobs import cancel, submit

    new = submit(store(), preset=preset, overrides=overrides, method=method, owner=who.name,
                 parent_id=parent_id, key=who.key)
    ensure_scheduler()
    if supersede:
        previous = st.session_state.get("_auto_run")
        if previous and store().get(previous).status in ACTIVE:
            cancel(store(), previous, who.name, who.key)
        st.session_state["_auto_run"] = new
    follow(new)


def resume_run(run_id: str, who: Identity) -> None:
    """Queue `who`'s interrupted, failed or cancelled run again from its last checkpoint
    (the engine checks the key), and show it."""
    from dimalign.jobs import resume

    resume(store(), run_id, who.name, who.key)
    ensure_scheduler()
    follow(run_id)


ATTEMPTS_READ = 200  # the newest finished runs Learn's exercises look through


def own_attempts(who: Identity) -> list:
    """`who`'s finished unlearning runs, newest first, as Learn's exercises check them
    (`exercises.Attempt`), every experiment's; none for the instructor's view."""
    from dimalign.exercises import attempt

    if who.admin:
        return []
    found = [attempt(run.id, run.method, run_knobs(run)[0], run.result)
             for run in store().runs(kind="unlearn", owner=who.name, statuses=("done",),
                                     limit=ATTEMPTS_READ)]
    return [a for a in found if a is not None]


def run_knobs(run: Run) -> tuple[dict, dict]:
    """(every knob of a run's method as it ran, defaults filled in; those defaults), from the
    method's own section of its saved config; ({}, {}) for a run of an older release whose
    knobs no longer check."""
    from dimalign.errors import ConfigError
    from dimalign.methods import get_method

    try:  # a finished run's config was validated when it was submitted
        knobs = get_method(run.method).resolve(run.config.get(run.method) or {})
        return knobs, get_method(run.method).defaults(knobs.get("variant"))
    except (ConfigError, KeyError, TypeError, ValueError):
        return {}, {}


def has_active_runs(who: Identity) -> bool:
    """Whether `who` has an unlearning run queued or running (Learn then checks again)."""
    return not who.admin and store().count(kind="unlearn", owner=who.name, statuses=ACTIVE) > 0
