"""A job, whoever runs it: what both backends run, and how it reports.

`run_job` runs one job to its end in a folder: given a `Job` (what the store says about the
run) and `Hooks` (where progress, telemetry, notes and files go). Its kind (`dimalign.kinds`)
says what running it means. A local worker (`dimalign.worker`) builds the job from the store and
hands it `store_hooks`, which write the store; the Ray backend ships the job with a task, whose
hooks post to the scheduler on the head, which writes them through the same `store_hooks`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from dimalign.kinds import Hooks, Job, RunRef, get_kind

CANCEL_POLL_SECONDS = 0.2  # a cancel request stops the run within this and one step


def _summary(result: dict) -> dict:
    """What the store keeps of a result: its metrics, the forget confidences the Compare
    and Tune pages score replicates with (a few kilobytes; at most `FORGET_SCORED` a model),
    and a random forget set's strata, which Compare shows per stratum (a few kilobytes)."""
    import json

    return json.loads(json.dumps({k: result[k] for k in ("models", "seconds", "device", "params",
                                                          "samples", "forget_confidence",
                                                          "strata")
                                  if k in result}))


def ending_of(job: Callable[[], dict | None]) -> tuple[dict, BaseException | None]:
    """Run `job` and say how it ended: the fields of its final store update, and the
    KeyboardInterrupt or SystemExit to raise again once that is recorded (else None)."""
    try:
        result = job()
        return dict(status="done", finished=time.time(), progress=1.0,
                    result=_summary(result) if result else None), None
    except BaseException as err:  # noqa: BLE001 - every ending is recorded, then re-raised
        from dimalign.methods.loop import Cancelled

        status = "cancelled" if isinstance(err, Cancelled) else "failed"
        message = str(err) if isinstance(err, Cancelled | ValueError | RuntimeError) else \
            "".join(traceback.format_exception_only(err)).strip()
        ending = dict(status=status, finished=time.time(), error=message or type(err).__name__)
        return ending, None if isinstance(err, Exception) else err


def store_job(store, run) -> Job:
    """A stored run as a job for this machine."""
    parent = None
    if run.parent_id:
        p = store.get(run.parent_id)
        parent = RunRef(p.id, p.folder, p.status)
    already = store.last_step(run.id) if get_kind(run.kind).resumes else -1
    points = _points_before(store, run.id, already) if already >= 0 else []
    return Job(run.id, run.kind, run.method, run.preset, run.config, run.folder, parent,
               already, points)


def store_hooks(store, run_id: str, *, cancelled: Callable[[], bool] = lambda: False,
                note: Callable[[str], None] = lambda line: None,
                gpu: int | None = None) -> Hooks:
    """Hooks that write a run's reports into the store: a local worker's, and the Ray head's
    for the mail its jobs send. `note`: where a finished note also goes (the log); `gpu`: a
    GPU slot's job names its GPU, so that a scheduler replacing a dead one keeps that GPU's
    slot free until the job ends."""

    def device(name: str) -> None:
        store.update(run_id, device=f"cuda:{gpu}" if gpu is not None and name.startswith(
            "cuda") else name)

    def say(text: str) -> None:  # what the run is doing; a finished note also goes to the log
        store.update(run_id, phase=text.rstrip(" ."))
        if not text.endswith("..."):
            note(f"run {run_id}: {text}")

    return Hooks(
        device=device,
        progress=lambda fraction, phase: store.update(run_id, progress=fraction, phase=phase),
        say=say,
        telemetry=lambda step, values: store.log_metrics(run_id, step, values),
        artifact=store.add_artifact,
        cancelled=cancelled)


def run_job(job: Job, hooks: Hooks) -> dict | None:
    """Run one job to its end, as its kind says (`dimalign.kinds`): the one code path of both
    backends. Files go into the job's folder (or its source run's); each is handed to
    `hooks.artifact`."""
    return get_kind(job.kind).run(job, hooks)


def _points_before(store, run_id: str, last: int) -> list[dict]:
    """The telemetry points a run sent up to step `last`, rebuilt from the store."""
    by_step: dict[int, dict] = {}
    for key, curve in store.curves(run_id).items():
        for step, value in curve:
            if step > last:
                continue
            point = by_step.setdefault(step, {"step": step})
            point[key] = value
            if key.startswith("phase_"):
                point["phase"] = key.removeprefix("phase_")
    return [by_step[s] for s in sorted(by_step)]
