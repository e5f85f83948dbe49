"""The film's recording budget (dimalign/methods/film.py): frames a run cannot afford are kept
as weights and measured after it by its `film` job, bit for bit the frames an inline recording
measures; a run left with kept frames queues that job as it finishes."""

import io

import pytest
import torch

from dimalign import checked
from dimalign.config import build_config
from dimalign.methods import REGISTRY
from dimalign.methods.film import Film, finish_saved
from dimalign.methods.loop import unlearn
from dimalign.run_files import FILM, FILM_PENDING

RUN = ["train.epochs=2", "muda.epochs=3", "muda.retain_fraction=0.1", "eval.film_forget=60",
       "eval.film_retain=60", "eval.film_test=30", "eval.film_frames=30"]


def through_a_file(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.fixture(scope="module")
def both(tiny_baselines):
    """One run recorded two ways: every frame at once, and every frame kept for later."""
    b = tiny_baselines
    cfg = build_config("digits-class", RUN)
    return {budget: unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                            retrained=b.retrained, film_budget=budget) for budget in (1.0, 0.0)}


def test_kept_frames_measured_later_are_the_frames_measured_at_once(both, tiny_baselines):
    inline, kept = both[1.0], both[0.0]
    assert inline.film_kept is None and inline.film["pending"] == []
    assert kept.film is None  # a budget of nothing: every frame left for the film job
    saved = through_a_file(kept.film_kept)  # as the job reads it: plain data only
    assert [k["step"] for k in saved["kept"]] == inline.film["steps"]
    later = Film.from_saved(saved, tiny_baselines.device).finish()
    assert later["steps"] == inline.film["steps"] and later["pending"] == []
    for key in ("features", "confidence", "predicted"):
        assert torch.equal(later[key], inline.film[key]), key
    assert all(torch.equal(later["view"][k], inline.film["view"][k]) for k in later["view"])
    for name, ghost in inline.film["ghost_view"].items():
        assert all(torch.equal(later["ghost_view"][name][k], v) for k, v in ghost.items())


def test_a_frame_is_measured_at_once_only_within_the_budget(both, tiny_baselines):
    """The rule, on given times: the run's pace so far, extrapolated to its end, times the
    budget, against what recording has cost plus the frame (the first one also pays for the
    ghosts and frame 0)."""
    film = Film.from_saved(through_a_file(both[0.0].film_kept), tiny_baselines.device)
    film.budget, film.kept, film.frames, film.ghosts = 0.1, [], [], None
    film.total = 100
    assert not film._affordable(0, 0.0)  # step 0: the pace is not known yet
    # 0.1 s a step: a 10 s run, a 1 s budget; the first frame costs 4 passes of ~0.1 s
    assert film._affordable(10, 1.0)
    film.seconds = 0.7
    assert not film._affordable(10, 1.0)  # 0.7 + 0.4 > 1
    film.ghosts, film.frames, film.measured = {}, [{}], [0.05]  # now one pass of 0.05 s
    assert film._affordable(10, 1.0) and not film._affordable(10, 0.5)  # 0.75 ≤ 1; > 0.5
    film.budget = 1.0
    assert film._affordable(0, 0.0)  # a budget of the whole run: everything at once
    film.budget = 0.0
    assert not film._affordable(50, 100.0)


def test_the_film_job_finishes_a_saved_run_and_resume_keeps_kept_frames(tiny_baselines,
                                                                          tmp_path):
    b = tiny_baselines
    cfg = build_config("digits-class", RUN)
    checkpoints: list[dict] = []
    whole = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                    retrained=b.retrained, film_budget=0.0,
                    checkpoint=lambda s: checkpoints.append(through_a_file(s)))
    resumed = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                      retrained=b.retrained, film_budget=0.0, resume=checkpoints[0])
    assert [k["step"] for k in resumed.film_kept["kept"]] == \
        [k["step"] for k in whole.film_kept["kept"]]
    checked.save_torch(whole.film_kept, tmp_path / FILM_PENDING)
    path, _ = finish_saved(tmp_path)
    film = checked.load_torch(path)
    assert path == tmp_path / FILM and not (tmp_path / FILM_PENDING).exists()
    assert film["pending"] == [] and len(film["steps"]) == len(whole.film_kept["kept"])


def test_a_film_saved_before_frames_were_placed_is_placed_as_the_worker_places_them(both):
    """Films from before the linear view was computed in the worker have no "view": reading
    one places it then, as the worker would have."""
    from dimalign.film import arrays

    whole = both[1.0].film
    old = {k: v for k, v in whole.items() if k not in ("view", "ghost_view", "k")}
    assert arrays(old) == arrays(whole)


def test_an_export_before_the_film_job_measures_the_kept_frames_first(both, tmp_path):
    from dimalign.export import export_run
    from dimalign.store import Store

    store = Store()
    run = store.get(store.create_run(owner="kept-ann", kind="unlearn", preset="digits-class",
                                     method="muda", config={}, status="done"))
    run.folder.mkdir(parents=True, exist_ok=True)
    checked.save_torch(both[0.0].film_kept, run.folder / FILM_PENDING)
    written = export_run(store, run.id, tmp_path / "out", say=lambda line: None)
    store.close()
    film = checked.load_torch(tmp_path / "out" / FILM)
    assert tmp_path / "out" / FILM in written and film["pending"] == []
    assert film["steps"] == both[1.0].film["steps"]


def test_a_kept_file_left_beside_a_whole_film_is_not_frames_left(both, tmp_path):
    """On a Ray head the job ran on a node: the film it sent back is whole, the kept file the
    head holds is stale and nothing waits on it."""
    from dimalign.methods.film import frames_left

    checked.save_torch(both[0.0].film_kept, tmp_path / FILM_PENDING)
    assert frames_left(tmp_path)  # no film yet
    checked.save_torch(both[1.0].film, tmp_path / FILM)
    assert not frames_left(tmp_path)  # the whole film is there
    checked.save_torch({**both[1.0].film, "pending": [3]}, tmp_path / FILM)
    assert frames_left(tmp_path)
