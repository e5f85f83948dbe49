"""Jobs on a finished run: submitting one (an embedding, an audit, the film's frames), and
queueing those a run's kind asks for as it finishes (`JobKind.then`). Below the scheduler and
the workers, which queue them where they write a run's ending; `dimalign.jobs` re-exports
`submit_job`."""

from __future__ import annotations

from dimalign.errors import ConfigError
from dimalign.kinds import get_kind
from dimalign.store import ACTIVE, Store, StoreError


def submit_job(store: Store, kind: str, source_id: str, owner: str,
               settings: dict | None = None) -> str:
    """Queue a job of `kind` (`dimalign.kinds`) on a finished run, or return the one already
    queued, running, or done whose file is still there (one job per its share key). Settings
    the kind refuses raise ConfigError or StoreError and queue nothing."""
    spec = get_kind(kind)
    source = store.get(source_id)
    if source.status != "done":
        raise StoreError(f"run {source_id} is {source.status}; {spec.title.lower()} needs a "
                         "finished run")
    config = spec.settings(dict(settings or {}), source.folder)
    output = spec.output(source.folder, config)
    # a finished job is reused while its file is there (not when it was set aside as damaged)
    done = ("done",) if output is not None and output.exists() else ()
    return store.find_or_create_run(
        share_key=spec.share_key(source_id, config), reuse=(*ACTIVE, *done), owner=owner,
        kind=kind, preset=source.preset, method=spec.method,
        config={"source": source_id, **config}, parent_id=source_id,
        experiment=source.experiment)


def queue_then(store: Store, run_id: str, note=None) -> list[str]:
    """Queue, as its owner, the jobs a run's kind asks for once it is done (`JobKind.then`),
    those whose settings accept it; returns their ids. Called where endings are written, so it
    never raises: what goes wrong is one line to `note` (a page queues the job when it needs
    it). Each goes first among its owner's queued runs (its `created` is the run's own): a
    film's frames come before the owner's next sweep, not after it."""
    try:
        run = store.get(run_id)
        if run.status != "done":
            return []
        queued = []
        for kind in get_kind(run.kind).then:
            try:
                job = submit_job(store, kind, run_id, run.owner)
            except (ConfigError, StoreError):  # nothing for it to do on this run
                continue
            store.update(job, created=run.created)
            queued.append(job)
        return queued
    except Exception as err:  # noqa: BLE001 - the ending is written; this must not undo it
        if note is not None:
            note(f"run {run_id}: its follow-up jobs were not queued ({type(err).__name__}: "
                 f"{err})")
        return []
