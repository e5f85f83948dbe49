"""The film's aligned-UMAP view (issue 26): UMAP fitted once on the film sample's features under
the original and the retrained model (the ghosts), every recorded frame then placed into that
one frame with `transform` (`embed.AlignedFrame`: torch distances, cached numba kernels, cuML on
a GPU). Made by the "film_umap" job on a finished run (`dimalign/kinds/film.py`).

What the positions mean: this is a neighbourhood-graph alignment, not a coordinate one. The
unlearned model starts from the original's weights, so frame 0's features are the original
ghost's (up to float16 rounding): frame 0 and the original ghost coincide in position by
construction, and later frames land beside the fitted points their features come near. The
retrained model's features live in a space of their own (another training run's coordinates):
the retrained ghost is placed by its own features' neighbourhoods, and a frame lands near it
only where its raw features come near the retrained model's: no map joins the two spaces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from dimalign import checked
from dimalign.embed import AlignedFrame
from dimalign.film import arrays, view_of
from dimalign.run_files import FILM, FILM_UMAP

PROJECTION = ("aligned UMAP: fitted once on the original and retrained models' features, each "
              "frame placed with transform; z = residual outside the retain top-k eigenspace")
GHOSTS = ("original", "retrained")


def film_umap(bundle: dict, seed: int = 0, use: str | None = None,
              progress: Callable[[float, str], None] | None = None) -> dict:
    """{"x", "y": (F, N), "ghosts": {model: {"x", "y": (N,)}}, "steps", "seconds": {"fit",
    "transform"}, "backend"} for a film bundle (`run_files.FILM`) that has its ghosts."""
    if "ghosts" not in bundle:
        raise ValueError("the film has no ghost features (recorded before ghosts were): run "
                         "the unlearning again for its aligned UMAP")
    if "features" not in bundle or bundle.get("pending"):
        raise ValueError("the film is not whole yet (frames of it are still to be measured, "
                         "or it is a running run's): its aligned UMAP needs every frame")
    ghosts = [bundle["ghosts"][g]["features"].float() for g in GHOSTS]
    n = len(ghosts[0])
    start = time.perf_counter()
    frame = AlignedFrame(torch.cat(ghosts), seed, use=use)
    fitted = time.perf_counter()
    placed = []
    for t, feats in enumerate(bundle["features"]):  # one frame at a time: progress, cancel
        placed.append(torch.from_numpy(frame.place(feats.float())))
        if progress is not None:
            progress((t + 1) / len(bundle["features"]), f"umap frame {t + 1}")
    xy = torch.stack(placed)  # (F, N, 2)
    fit = torch.from_numpy(frame.fitted)
    return {"x": xy[..., 0], "y": xy[..., 1],
            "ghosts": {g: {"x": fit[i * n:(i + 1) * n, 0], "y": fit[i * n:(i + 1) * n, 1]}
                       for i, g in enumerate(GHOSTS)},
            "steps": list(bundle["steps"]), "backend": frame.backend,
            "seconds": {"fit": fitted - start, "transform": time.perf_counter() - fitted}}


def umap_saved_run(folder: Path, progress: Callable[[float, str], None] | None = None,
                   ) -> tuple[Path, dict]:
    """A finished run's film in aligned UMAP, written beside it (`run_files.FILM_UMAP`)."""
    out = film_umap(checked.load_torch(Path(folder) / FILM), progress=progress)
    path = Path(folder) / FILM_UMAP
    checked.save_torch(out, path)
    return path, out


def umap_view(bundle: dict, umap_file: Path | dict) -> dict:
    """The film in aligned UMAP as `film.linear_view` gives it (the same JSON shape, so the CLI
    and the page draw either): x, y from `umap_file` (its path, or its loaded content), z and
    residual the linear view's."""
    umap = checked.load_torch(umap_file) if isinstance(umap_file, str | Path) else umap_file
    return view_of(umap_arrays(bundle, umap))


def umap_arrays(bundle: dict, umap: dict) -> dict:
    """`film.arrays` of the film with x and y (frames and ghosts) from its aligned UMAP, and
    "plane": "xy" (2-D draws UMAP 1 against UMAP 2; the residual stays for 3-D and tracks)."""
    ghost_view = {g: {**bundle["ghost_view"][g], **xy} for g, xy in umap["ghosts"].items()}
    out = arrays({**bundle, "view": {**bundle["view"], "x": umap["x"], "y": umap["y"]},
                  "ghost_view": ghost_view})
    return {**out, "projection": PROJECTION, "plane": "xy"}
