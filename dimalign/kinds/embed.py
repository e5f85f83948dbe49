"""Embedding: the aligned UMAP of a finished run's saved features (original, retrained and
unlearned in one frame), written beside them for the Manifolds page; one job per run and
sample size."""

from pathlib import Path

from dimalign.kinds.base import Hooks, Job, JobKind, register
from dimalign.run_files import GEOMETRY
from dimalign.store import StoreError

SAMPLES = (30, 20000)  # points an embedding may have


def run(job: Job, hooks: Hooks) -> dict:
    from dimalign.embed import embed_saved_run

    samples = int(job.config["samples"])
    hooks.progress(0.0, "umap")
    path, _ = embed_saved_run(job.parent.folder, samples)
    hooks.artifact(job.parent.id, f"embedding-{samples}", path)
    return {"models": {}, "seconds": {}, "device": "cpu"}


def settings(raw: dict, source: Path | None) -> dict:
    samples = raw.get("samples")
    if not isinstance(samples, int | float) or not SAMPLES[0] <= int(samples) <= SAMPLES[1]:
        raise StoreError(f"sample size must lie in {SAMPLES[0]}..{SAMPLES[1]}, got {samples}")
    return {"samples": int(samples)}


def output(folder: Path, settings: dict) -> Path:
    from dimalign.embed import embedding_path

    return embedding_path(folder, settings["samples"])


register(JobKind("embed", "Manifold embedding", run, settings=settings,
                 share_key=lambda source, s: f"embed:{source}:{s['samples']}", output=output,
                 parent_files=(GEOMETRY,), method="umap", writes=("embedding-<samples>.pt",)))
