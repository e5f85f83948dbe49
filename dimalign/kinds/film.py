"""Film UMAP: a finished run's film placed frame by frame into one aligned UMAP frame
(`dimalign.film_umap`), written beside it; one job per run (it takes no settings)."""

from pathlib import Path

from dimalign.errors import ConfigError
from dimalign.kinds.base import Hooks, Job, JobKind, Throttle, register
from dimalign.run_files import FILM, FILM_UMAP
from dimalign.store import StoreError


def run(job: Job, hooks: Hooks) -> dict:
    from dimalign.film_umap import umap_saved_run
    from dimalign.methods.loop import Cancelled

    throttle = Throttle(hooks.progress)

    def progress(fraction: float, phase: str) -> None:
        if hooks.cancelled():  # polled per frame: a frame takes a fraction of a second
            raise Cancelled("cancelled while placing the film's frames")
        throttle.at(fraction, phase)

    hooks.progress(0.0, "umap fit")
    path, out = umap_saved_run(job.parent.folder, progress)
    hooks.artifact(job.parent.id, path.stem, path)
    return {"models": {}, "seconds": out["seconds"],
            "device": "cuda" if out["backend"] == "cuml" else "cpu"}


def settings(raw: dict, source: Path | None) -> dict:
    from dimalign.methods.film import frames_left

    if raw:
        raise ConfigError("film_umap", f"takes no settings, got {', '.join(map(str, raw))}")
    if source is not None and frames_left(source):
        raise StoreError(f"run {source.name}'s film is still being recorded; try again in a "
                         "moment")
    if source is not None and not (source / FILM).exists():
        raise StoreError(f"run {source.name} has no film: it was not an unlearning run, or it "
                         "ran with eval.film_frames=0")
    return {}


register(JobKind("film_umap", "Film UMAP", run, settings=settings,
                 share_key=lambda source, s: f"film_umap:{source}",
                 output=lambda folder, s: folder / FILM_UMAP, method="umap",
                 parent_files=(FILM,), writes=(FILM_UMAP,)))
