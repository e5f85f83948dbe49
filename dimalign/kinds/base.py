"""What a job kind is, and what every kind's job is given.

A job kind (`JobKind`) says everything the engine needs to run one: what reads its settings,
the key that makes one job of it serve everyone who asks for the same thing, which files of
its parent run it reads and which baselines it loads (the Ray backend ships those with the
task), whether it resumes from a checkpoint, and the function that runs it. The scheduler, both
backends and `jobs.submit_job` read the registry; adding a kind is one module in
`dimalign/kinds/` that calls `register`, as adding a method is one module in `methods/`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dimalign.checked import DiskFull, is_disk_full
from dimalign.errors import ConfigError


@dataclass
class RunRef:
    """Another run a job reads from: a fork's parent, or the run an embedding is made of."""

    id: str
    folder: Path
    status: str


@dataclass
class Job:
    """What running one job needs to know, whoever runs it: a local worker reads it from the
    store, the Ray backend ships it with the task (folders then lie in the node's own home)."""

    id: str
    kind: str  # a name in REGISTRY
    method: str
    preset: str
    config: dict  # an experiment's config, or the kind's own settings (JobKind.experiment)
    folder: Path
    parent: RunRef | None = None  # a fork starts from its weights; an embedding reads it
    already: int = -1  # the last step whose metrics the store has (they are not sent again)
    points: list[dict] = field(default_factory=list)  # the telemetry points the store has


@dataclass
class Hooks:
    """Where a running job reports: straight into the store (a local worker), or to the
    scheduler on the Ray head, which writes the store (`dimalign.ray_backend`)."""

    device: Callable[[str], None]  # the device it runs on
    progress: Callable[[float, str], None]  # fraction and phase, a few times a second
    say: Callable[[str], None]  # what it is doing now
    telemetry: Callable[[int, dict], None]  # a step's numbers (steps after `already` only)
    artifact: Callable[[str, str, Path], None]  # (run id, name, path): a file it has written
    cancelled: Callable[[], bool]  # polled between steps


def _no_settings(settings: dict, source: Path | None) -> dict:
    return settings


@dataclass(frozen=True)
class JobKind:
    """One kind of job. `run(job, hooks)` runs it to its end and returns its result (a dict
    with "models", "seconds" and "device", as `runner.run_experiment` returns) or None.

    - `experiment`: its config is an experiment's (`config.Config`): the job needs that
      experiment's data and baselines (a job on a source run reads the source's instead).
    - `settings(raw, source)`: a job on a source run (`source`: that run's folder): its own
      settings checked and normalised (ConfigError or StoreError, one line).
    - `share_key(source_id, settings)`: jobs with the same key are one job (None: every
      submission is its own job).
    - `output(source_folder, settings)`: the file a finished job of it leaves; a finished job
      is reused while its file is there (None: never reused).
    - `method`: what the store's method column says for it (a job on a source run).
    - `parent_files`: what it reads of its parent run (or of the run it works on).
    - `source_baselines`: it loads the baselines of its parent run's experiment.
    - `resumes`: it writes a checkpoint and telemetry, and a resumed run continues from them.
    - `trains_models`: it trains models into the shared model cache (on a Ray node, they are
      sent back to the head's cache).
    - `writes`: the files it leaves, in its own folder or (for a job on a source run) in the
      source's, with <...> where its settings vary.
    - `then`: kinds of job queued on a run of it as it finishes (`jobs.queue_then`), each
      where its `settings` accept the run (e.g. the film frames a run left for later).
    """

    name: str
    title: str
    run: Callable[[Job, Hooks], dict | None]
    experiment: bool = False
    settings: Callable[[dict, Path | None], dict] = _no_settings
    share_key: Callable[[str | None, dict], str | None] = lambda source, settings: None
    output: Callable[[Path, dict], Path | None] = lambda folder, settings: None
    method: str = ""
    parent_files: tuple[str, ...] = ()
    source_baselines: bool = False
    resumes: bool = False
    trains_models: bool = False
    writes: tuple[str, ...] = ()
    then: tuple[str, ...] = ()


REGISTRY: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.name in REGISTRY:
        raise ValueError(f"job kind {kind.name!r} is already registered")
    REGISTRY[kind.name] = kind
    return kind


def get_kind(name: str) -> JobKind:
    if name not in REGISTRY:
        raise ConfigError("kind", f"unknown job kind {name!r}; one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


class Throttle:
    """Passes progress on at most 4 times a second (and always at the end)."""

    def __init__(self, write: Callable[[float, str], None]):
        self.write, self.last = write, 0.0

    def __call__(self, p) -> None:
        self.at(p.fraction, p.phase)

    def at(self, fraction: float, phase: str) -> None:
        now = time.monotonic()
        if now - self.last >= 0.25 or fraction >= 1.0:
            self.last = now
            self.write(fraction, phase)


def make_folder(folder: Path) -> None:
    """The job's folder (DiskFull, one line, on a full disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFull(folder) from None
        raise


def index_files(job: Job, hooks: Hooks, names: tuple[str, ...]) -> None:
    """Hand each file of `names` the job left in its folder to `hooks.artifact`."""
    for name in names:
        if (job.folder / name).exists():
            hooks.artifact(job.id, name.split(".")[0], job.folder / name)
