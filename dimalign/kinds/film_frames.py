"""Film frames: the frames a finished unlearning run kept for later (`FILM_PENDING`: weights
at the steps its recording budget could not afford, `methods/film.py`), measured and written
into its film. The run queues it as it finishes (`JobKind.then`); one job per run."""

from pathlib import Path

from dimalign.errors import ConfigError
from dimalign.kinds.base import Hooks, Job, JobKind, Throttle, register
from dimalign.run_files import FILM, FILM_PENDING
from dimalign.store import StoreError


def run(job: Job, hooks: Hooks) -> dict:
    import time

    from dimalign.methods.film import finish_saved

    throttle = Throttle(hooks.progress)
    t0 = time.perf_counter()
    path, device = finish_saved(job.parent.folder,
                                progress=lambda f: throttle.at(f, "film frames"))
    hooks.device(str(device))
    hooks.artifact(job.parent.id, path.stem, path)
    return {"models": {}, "seconds": time.perf_counter() - t0, "device": str(device)}


def settings(raw: dict, source: Path | None) -> dict:
    if raw:
        raise ConfigError("film", f"takes no settings, got {', '.join(map(str, raw))}")
    from dimalign.methods.film import frames_left

    if source is not None and not frames_left(source):
        raise StoreError(f"run {source.name} has no frames left to record")
    return {}


register(JobKind("film", "Film frames", run, settings=settings,
                 share_key=lambda source, s: f"film:{source}", method="film",
                 parent_files=(FILM_PENDING,), writes=(FILM,)))
