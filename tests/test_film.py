"""The feature-space film (dimalign/methods/film.py, dimalign/film.py): an unlearning run
records its forget, retain and test sample at steps spread over the run, and the linear view
shows forgetting as the forget points falling onto the retain plane."""

import json
import re

import pytest

from dimalign.config import build_config
from dimalign.film import linear_view, mean_residual
from dimalign.methods import REGISTRY
from dimalign.methods.film import schedule
from dimalign.methods.loop import unlearn


def test_a_run_records_at_least_the_frames_asked_or_every_step():
    assert schedule(10, 30) == list(range(11))  # fewer steps than frames: every step
    steps = schedule(1000, 30)
    assert len(steps) == 30 and steps[0] == 0 and steps[-1] == 1000
    assert steps == sorted(set(steps))


FILM_RUN = ["train.epochs=2", "muda.epochs=4", "eval.film_forget=120", "eval.film_retain=120",
            "eval.film_test=60", "eval.film_frames=30"]


@pytest.fixture(scope="module")
def films(tiny_baselines):
    """A default MUDA run's film, and one with the DA loss off (λ_DA = 0)."""
    b = tiny_baselines
    out = {}
    for name, extra in (("default", []), ("no_da", ["muda.lambda_da=0"])):
        cfg = build_config("digits-class", [*FILM_RUN, *extra])
        result = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device)
        out[name] = (result, linear_view(result.film, cfg.eval))
    return out


def test_muda_moves_the_forget_points_onto_the_retain_plane(films):
    result, view = films["default"]
    assert len(view["frames"]) >= min(30, result.steps + 1)
    assert [f["step"] for f in view["frames"]][0] == 0 and view["frames"][-1]["step"] == \
        result.steps
    forget, retain = mean_residual(view, "forget"), mean_residual(view, "retain")
    assert forget[-1] < forget[0], forget  # the forget features left their own directions
    assert abs(retain[-1] - retain[0]) <= 0.1 * retain[0], retain  # the retain ones stayed
    _, quiet = films["no_da"]
    moved = forget[0] - forget[-1]
    quiet_forget = mean_residual(quiet, "forget")
    assert quiet_forget[0] - quiet_forget[-1] < moved  # without DA, the forget points move less
    point = view["frames"][-1]["points"][0]
    assert set(point) == {"id", "row", "split", "label", "x", "y", "z", "residual",
                          "confidence"}
    assert {p["split"] for p in view["frames"][0]["points"]} == {"forget", "retain", "test"}


def test_the_film_command_writes_json_and_a_playable_html_animation(tmp_path, cli,
                                                                  tiny_baselines):
    ran = cli("run", "--method", "muda", "--set", "train.epochs=2", "--set", "muda.epochs=1",
              "--set", "eval.film_frames=30", "--json", "--fresh")
    assert ran.returncode == 0, ran.stderr
    folder = json.loads(ran.stdout)["artifacts"]
    shown = cli("film", folder, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["projection"].startswith("linear") and view["frames"]
    page = tmp_path / "film.html"
    drawn = cli("film", folder, "--out", str(page))
    assert drawn.returncode == 0 and "mean residual outside the retain eigenspace" in drawn.stdout
    text = page.read_text()
    assert "addFrames" in text and "animate" in text and "scatter3d" in text
    bad = cli("film", folder, "--out", str(tmp_path / "film.gif"))
    assert bad.returncode == 2 and "writes .html or .json" in bad.stderr
    none = cli("film", str(tmp_path))
    assert none.returncode == 2 and "not a run" in none.stderr


def test_film_settings_are_checked_in_one_line():
    from dimalign.errors import ConfigError

    for setting, words in (("eval.film_frames=1", "0 (no film) or lie in 2..1000"),
                           ("eval.film_forget=0", "must lie in 1..5000")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            build_config("digits-class", [setting])
    assert build_config("digits-class", []).eval.film_frames == 0  # off until it fits its budget
