"""Jobs: submit, cancel, resume and fork runs, as their owner (the web app passes an owner
key; the command line's user owns every run), with the per-owner queue cap and sweeps as
batches. What runs a job is elsewhere: `dimalign.scheduler` (the pool of workers and its
fairness), `dimalign.daemon` (the background scheduler and its lock), `dimalign.job` (a job,
whoever runs it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable

from dimalign.config import build_config, override_config
from dimalign.kinds import get_kind
from dimalign.methods import get_method
from dimalign.run_jobs import submit_job  # noqa: F401 - callers import it from here
from dimalign.scheduler import mark_interrupted, worker_gone
from dimalign.settings import env_number
from dimalign.store import (
    ACTIVE,
    ADMIN_OWNER,
    SHARED_OWNER,
    OwnerRefused,
    Run,
    Store,
    StoreError,
    check_owner,
    check_sweep_id,
)
from dimalign.train import baselines_cached, experiment_key

# ---------------------------------------------------------------------------- submitting


def submit_baselines(store: Store, cfg, preset: str) -> str | None:
    """The shared job that trains this config's baselines: an existing one if it is queued or
    running, a new one otherwise; None when both models are already cached."""
    if baselines_cached(cfg):
        return None
    key = experiment_key(cfg)  # the baselines' identity is the experiment's
    return store.find_or_create_run(
        share_key=key, reuse=ACTIVE, owner=SHARED_OWNER, kind="baselines", preset=preset,
        method="retrain", config=cfg.to_dict(), experiment=key)


def _authorize(store: Store, owner: str | None, key: str | None,
               run_id: str | None = None) -> None:
    """Who may act as `owner`. `key` None: the machine's own user (the CLI, tests, benchmarks),
    who owns every run. A key (the web app always passes its session's, "" for the
    instructor's read-only view) must be `owner`'s, and the run, if any, `owner`'s."""
    if key is not None:
        store.check_owner_key(owner, key, run_id)


class QueueFull(StoreError):
    """An owner asked to queue more runs than the per-owner cap allows; nothing was queued."""


def queue_cap() -> int:
    """Runs one owner may have queued at once: DIMALIGN_QUEUE_CAP, else 2,000. The scheduler
    is fair across owners whatever the queue's length; the cap keeps one person's sweep from
    filling the store (and the instructor's view) for everyone."""
    return env_number("DIMALIGN_QUEUE_CAP", int, 2000, low=1)


def check_queue_room(store: Store, owner: str, adding: int) -> None:
    """QueueFull (one line) when `adding` more runs would take `owner` past the cap."""
    cap = queue_cap()
    queued = store.count(owner=owner, statuses=("queued",))
    if queued + adding > cap:
        have = f"has {queued:,} runs queued; " if queued else ""
        raise QueueFull(f"owner {owner!r} {have}{adding:,} more would pass the cap of {cap:,} "
                        "queued runs per owner (DIMALIGN_QUEUE_CAP): cancel some (dimalign "
                        "cancel --sweep ID) or wait for them; nothing was queued")


def submit(store: Store, *, preset: str, overrides: Iterable[str] = (), method: str = "muda",
           owner: str = "local", parent_id: str | None = None, key: str | None = None,
           sweep: str | None = None, built=None) -> str:
    """Validate and queue a run; returns its id. An invalid config raises ConfigError and
    queues nothing. A fork (`parent_id`) starts from the parent's weights with its config plus
    `overrides`. `key`: the web app's proof that the caller is `owner` (see `_authorize`); a
    fork then must be of one of `owner`'s runs. The shared baselines' owner and the
    instructor's are not names to submit under. `sweep`: the sweep it belongs to. `built`: the
    config `preset` and `overrides` build, when the caller has it already. An owner at the
    queue cap gets QueueFull."""
    check_owner(owner)
    if owner.lower() in (SHARED_OWNER, ADMIN_OWNER):
        raise OwnerRefused(f"owner {owner!r} is reserved; choose another name")
    _authorize(store, owner, key, parent_id)
    check_queue_room(store, owner, 1)
    get_method(method)
    if parent_id is not None:
        parent = store.get(parent_id)
        cfg = override_config(parent.config, overrides)
        preset = parent.preset
    else:
        cfg = built if built is not None else build_config(preset, overrides)
    experiment = experiment_key(cfg)
    depends_on = submit_baselines(store, cfg, preset)
    kind = "baselines" if method == "retrain" else "unlearn"
    if kind == "baselines" and parent_id is None:
        if depends_on is not None:
            return depends_on  # asking for baselines = waiting on the shared job
        return store.create_run(owner=owner, kind="baselines", preset=preset, method=method,
                                config=cfg.to_dict(), share_key=experiment,
                                experiment=experiment)
    return store.create_run(owner=owner, kind=kind, preset=preset, method=method,
                            config=cfg.to_dict(), parent_id=parent_id, depends_on=depends_on,
                            experiment=experiment, sweep=sweep)


def cancel_sweep(store: Store, sweep: str, owner: str | None = None,
                 key: str | None = None) -> tuple[int, int]:
    """Cancel every queued run of a sweep and ask its running ones to stop; returns (runs
    cancelled, runs asked to stop). Given `owner`/`key` (the web app), only that owner's runs
    of it, and only with the owner's key; StoreError when the sweep has no runs."""
    if key is not None or owner is not None:
        _authorize(store, owner, key or "")
    if not store.count(sweep=check_sweep_id(sweep), owner=owner):
        raise StoreError(f"no sweep {sweep} in {store.path}")
    cancelled, asked = store.cancel_sweep(sweep, owner)
    for run in store.runs(sweep=sweep, owner=owner, statuses=("running",), limit=None):
        if worker_gone(run):  # nobody is left to stop it: cancelled here, as `cancel` does
            _cancel_orphan(store, run.id, "cancelled with its sweep")
    return cancelled, asked


def _cancel_orphan(store: Store, run_id: str, why: str) -> None:
    """A running run whose worker is gone cannot stop itself: it is cancelled here."""
    store.transition(run_id, ("running",), status="cancelled", pid=None, finished=time.time(),
                     error=f"{why}; its worker had stopped (resume continues from its last "
                           "checkpoint)")


def submit_embedding(store: Store, source_id: str, samples: int, owner: str) -> str:
    """Queue the aligned UMAP of a finished run's features (one job per run and size)."""
    return submit_job(store, "embed", source_id, owner, {"samples": samples})


def audit_key(source_id: str, settings) -> str:
    """The share key of a run's audit job with these settings (one job per run and settings)."""
    return get_kind("audit").share_key(source_id, {"settings": dataclasses.asdict(settings)})


def submit_audit(store: Store, source_id: str, owner: str, settings=None) -> str:
    """Queue the audit of a finished run (`dimalign.audit`), or return the one already queued,
    running, or done whose file is still there. Settings its forget set cannot take raise
    ConfigError and queue nothing."""
    raw = dataclasses.asdict(settings) if settings is not None else {}
    return submit_job(store, "audit", source_id, owner, {"settings": raw})


def cancel(store: Store, run_id: str, owner: str | None = None, key: str | None = None) -> Run:
    """Cancel a queued run at once, or ask a running one's worker to stop; a running run whose
    worker is already dead (its scheduler killed with it) is cancelled here. Given an `owner`
    or a `key` (the web app passes both), only the holder of the run's owner's key may; given
    neither, the machine's own user (the CLI) may cancel any run."""
    _authorize(store, owner, "" if key is None and owner is not None else key, run_id)
    run = store.get(run_id)
    if run.status == "running" and worker_gone(run):
        _cancel_orphan(store, run_id, "cancelled")
        return store.get(run_id)
    return store.request_cancel(run_id)


def resume(store: Store, run_id: str, owner: str | None = None, key: str | None = None) -> Run:
    """Queue an interrupted, failed or cancelled run again; it continues from its last
    checkpoint and keeps the metrics it already wrote. A `running` run whose worker is dead
    (no scheduler has noticed yet) is marked interrupted first. `owner`, `key`: as for
    `cancel`."""
    _authorize(store, owner, "" if key is None and owner is not None else key, run_id)
    run = store.get(run_id)
    if run.status == "running" and worker_gone(run) and mark_interrupted(store, run):
        run = store.get(run_id)
    if run.status in ACTIVE or run.status == "done":
        raise StoreError(f"run {run_id} is {run.status}; only interrupted, failed or cancelled "
                         "runs can be resumed")
    if run.depends_on and store.get(run.depends_on).status in ("interrupted", "failed",
                                                               "cancelled"):
        resume(store, run.depends_on)  # its baselines first, or it would fail again at once
    store.transition(run_id, ("interrupted", "failed", "cancelled"), status="queued",
                     pid=None, error=None, finished=None, cancel_requested=0)
    return store.get(run_id)


def queue_position(store: Store, run_id: str) -> int | None:
    """1-based place among its owner's queued runs, None if not queued (`Store.queue_position`)."""
    return store.queue_position(run_id)
