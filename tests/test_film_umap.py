"""The film in aligned UMAP (dimalign/film_umap.py, the "film_umap" job kind): fitted once on
the ghosts, every frame placed with transform, run by a real worker on a finished run's film."""

import numpy as np
import pytest
import torch
from conftest import TINY, drain_scheduler

from dimalign import checked
from dimalign.errors import ConfigError
from dimalign.film import linear_view
from dimalign.film_umap import film_umap, umap_view
from dimalign.jobs import submit, submit_job
from dimalign.kinds import get_kind
from dimalign.run_files import FILM, FILM_PENDING, FILM_UMAP
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import Store, StoreError


@pytest.fixture(scope="module")
def finished(tiny_baselines):
    """A MUDA run with a film and its film_umap job, both done by a real worker."""
    store = Store()
    scheduler = Scheduler(store, slots=[Slot(None)])
    run = submit(store, preset="digits-class", method="muda", owner="umap-ann",
                 overrides=[*TINY, "muda.epochs=1", "eval.film_frames=30"])
    drain_scheduler(scheduler, lambda: store.get(run).terminal, 300)
    assert store.get(run).status == "done", store.get(run).error
    # a run this short cannot afford its frames: they are left to the film job it queued
    def queued():  # by the worker, right after it wrote the run's ending
        return [f for f in store.runs(kind="film") if f.parent_id == run]

    drain_scheduler(scheduler, queued, 30)
    frames = queued()
    assert [f.owner for f in frames] == ["umap-ann"]
    if (store.get(run).folder / FILM_PENDING).exists():  # the job may have run already
        with pytest.raises(StoreError, match="film is still being recorded"):
            submit_job(store, "film_umap", run, "umap-ann")
    drain_scheduler(scheduler, lambda: store.get(frames[0].id).terminal, 300)
    assert store.get(frames[0].id).status == "done", store.get(frames[0].id).error
    assert not (store.get(run).folder / FILM_PENDING).exists()
    job = submit_job(store, "film_umap", run, "umap-ann")
    assert submit_job(store, "film_umap", run, "umap-bob") == job  # one job per run
    drain_scheduler(scheduler, lambda: store.get(job).terminal, 300)
    scheduler.close()
    assert store.get(job).status == "done", store.get(job).error
    folder = store.get(run).folder
    yield {"store": store, "run": run, "bundle": checked.load_torch(folder / FILM),
           "umap": checked.load_torch(folder / FILM_UMAP)}
    store.close()


def test_the_job_places_every_frame_and_frame_0_on_the_original_ghost(finished):
    bundle, umap = finished["bundle"], finished["umap"]
    frames, n = bundle["features"].shape[:2]
    assert umap["x"].shape == umap["y"].shape == (frames, n)
    assert umap["steps"] == bundle["steps"] and set(umap["seconds"]) == {"fit", "transform"}
    assert "film-umap" in finished["store"].artifacts(finished["run"])
    ghosts = umap["ghosts"]
    assert all(ghosts[g][a].shape == (n,) for g in ("original", "retrained") for a in "xy")
    # frame 0 is the original model: the same features land where the fit put them
    fitted = torch.cat([torch.stack([g["x"], g["y"]], 1) for g in ghosts.values()])
    spread = float((fitted.max(0).values - fitted.min(0).values).max())
    frame0 = torch.stack([umap["x"][0], umap["y"][0]], 1)
    original = torch.stack([ghosts["original"]["x"], ghosts["original"]["y"]], 1)
    assert (frame0 - original).norm(dim=1).median() < 0.05 * spread


def test_the_umap_view_has_the_linear_views_shape_and_residuals(finished):
    bundle = finished["bundle"]
    linear, view = linear_view(bundle), umap_view(bundle, finished["umap"])
    assert view["projection"].startswith("aligned UMAP") and view["k"] == linear["k"]
    assert len(view["frames"]) == len(linear["frames"]) and set(view["ghosts"]) == \
        set(linear["ghosts"])
    ours, theirs = view["frames"][-1]["points"][5], linear["frames"][-1]["points"][5]
    assert set(ours) == set(theirs) and ours["z"] == theirs["z"] == theirs["residual"]
    assert ours["x"] == round(float(finished["umap"]["x"][-1, 5]), 4)


def test_the_embedding_is_reproducible_for_a_seed_and_reports_each_frame(finished):
    bundle = {**finished["bundle"], "features": finished["bundle"]["features"][:3]}
    marks = []
    a = film_umap(bundle, seed=3, progress=lambda f, phase: marks.append(f))
    b = film_umap(bundle, seed=3)
    np.testing.assert_allclose(a["x"], b["x"])
    np.testing.assert_allclose(a["ghosts"]["retrained"]["y"], b["ghosts"]["retrained"]["y"])
    assert marks == [1 / 3, 2 / 3, 1.0]


def test_a_run_without_a_film_or_with_settings_is_refused_in_one_line(tmp_path):
    store = Store()
    run = store.create_run(owner="umap-ann", kind="unlearn", preset="digits-class",
                           method="retrain", config={}, status="done")
    with pytest.raises(StoreError, match=f"run {run} has no film: it was not an unlearning"):
        submit_job(store, "film_umap", run, "umap-ann")
    assert all(r.parent_id != run for r in store.runs(kind="film_umap"))  # nothing queued
    store.close()
    with pytest.raises(ConfigError, match="takes no settings, got seed"):
        get_kind("film_umap").settings({"seed": 1}, tmp_path)
    with pytest.raises(ValueError, match="the film has no ghost features"):
        film_umap({"features": torch.zeros(2, 8, 4)})
    with pytest.raises(ValueError, match="the film is not whole yet"):
        film_umap({"ghosts": {}, "pending": [3]})  # a partial film, without raw features


def test_the_film_command_prints_the_umap_view_and_refuses_it_as_a_gif(finished, cli, tmp_path):
    import json

    folder = str(finished["store"].get(finished["run"]).folder)
    shown = cli("film", folder, "--umap", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["projection"].startswith("aligned UMAP")
    assert [p["x"] for p in view["frames"][-1]["points"]] == pytest.approx(
        finished["umap"]["x"][-1].tolist(), abs=1e-3)
    gif = cli("film", folder, "--umap", "--out", str(tmp_path / "f.gif"))
    assert gif.returncode == 2 and "write the UMAP view as .html or .json" in gif.stderr


def test_the_players_umap_arrays_draw_umap_1_against_umap_2_and_keep_the_residual(finished):
    from dimalign.film import arrays
    from dimalign.film_umap import umap_arrays

    linear, placed = arrays(finished["bundle"]), umap_arrays(finished["bundle"], finished["umap"])
    assert linear["plane"] == "residual" and placed["plane"] == "xy"
    assert placed["x"][-1] == pytest.approx(finished["umap"]["x"][-1].tolist(), abs=1e-3)
    assert placed["residual"] == linear["residual"]  # the 3-D view and the tracks keep it
    assert placed["ghosts"]["retrained"]["y"] == pytest.approx(
        finished["umap"]["ghosts"]["retrained"]["y"].tolist(), abs=1e-3)
