"""AppTest for every page, on a store holding a finished baselines job and a MUDA run."""

import json
import time
from pathlib import Path

import pytest
from conftest import TINY, drain_scheduler
from streamlit.testing.v1 import AppTest

from dimalign import daemon
from dimalign.daemon import ensure_scheduler
from dimalign.jobs import cancel, submit
from dimalign.methods import REGISTRY
from dimalign.metric_table import TABLE, TIME_FRACTION, shown
from dimalign.scheduler import Scheduler, Slot
from dimalign.store import Store, new_owner_key

APP = str(Path(__file__).resolve().parents[1] / "app.py")
OWNER = "tester"
KEY = new_owner_key()  # the owner key every page of this module carries in its address


@pytest.fixture(scope="module")
def finished(tiny_baselines):
    """A baselines job, a MUDA run and its UMAP, done by real workers."""
    from dimalign.jobs import submit_embedding

    store = Store()
    base = submit(store, preset="digits-class", overrides=TINY, method="retrain", owner=OWNER)
    run = submit(store, preset="digits-class", overrides=TINY, method="muda", owner=OWNER)
    scheduler = Scheduler(store, slots=[Slot(None)])

    def drain(ids):
        drain_scheduler(scheduler, lambda: all(store.get(i).terminal for i in ids), 300)

    drain([base, run])
    assert store.get(run).status == "done", store.get(run).error
    def films():  # the film's frames the run left for later: a job it queued as it ended
        return [f.id for f in store.runs(kind="film") if f.parent_id == run]

    drain_scheduler(scheduler, films, 30)
    drain(films())
    embed = submit_embedding(store, run, 600, OWNER)  # the page's default size
    drain([embed])
    assert store.get(embed).status == "done", store.get(embed).error
    return {"store": store, "baselines": base, "run": run}


def page(path: str, run_id: str | None = None, owner: str = OWNER, key: str = KEY) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["owner"] = owner  # the first page claims the name with its key
    at.query_params["key"] = key
    if run_id:
        at.query_params["run"] = run_id
    at.session_state["overrides"] = TINY
    at.session_state["overrides_for"] = "digits-class"
    at.run()
    if path != "pages/experiment.py":
        at.switch_page(path).run()
    assert not at.exception, at.exception
    assert at.session_state["_identity"].name == owner  # the key let this session be owner
    return at


def run_picker(at: AppTest):
    """The page's Run picker (its key changes with its labels: found by its label)."""
    (picker,) = [s for s in at.selectbox if s.label == "Run"]
    return picker


def traces(at: AppTest) -> list[dict]:
    """Every trace of every plotly chart on the page."""
    return [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]


def test_experiment_page_shows_baseline_metrics_from_the_shared_job(finished):
    at = page("pages/experiment.py")
    table = at.dataframe[0].value
    assert list(table["model"]) == ["original", "retrained"]
    assert list(table.columns) == ["model", *shown("experiment"), "train seconds"]
    assert table.loc[1, "acc_forget"] < table.loc[0, "acc_forget"]


def test_unlearn_page_builds_sliders_from_the_registry_and_draws_live_curves(finished):
    at = page("pages/unlearn.py", finished["run"])
    assert at.selectbox(key="method").value == "muda"
    assert at.select_slider(key="knob_muda_lambda_da").value == 5.0
    assert at.slider(key="knob_muda_epochs").value == 4
    assert at.slider(key="knob_muda_retain_fraction").value == pytest.approx(0.3)
    names = {t.get("name") for t in traces(at)}
    assert {"acc_forget", "da", "angle_1"} <= names
    assert any("done" in e.value for e in at.success)
    # the curves say they are a subset's, where the table is the whole sets'
    assert any("fixed 64-sample subset" in c.value for c in at.caption)
    # moving a slider starts nothing
    before = len(finished["store"].runs(owner=OWNER))
    at.select_slider(key="knob_muda_lambda_da").set_value(2.0).run()
    assert len(finished["store"].runs(owner=OWNER)) == before


def wait_terminal(store, run_id, timeout=180):
    end = time.monotonic() + timeout
    while not store.get(run_id).terminal:
        assert time.monotonic() < end, f"run {run_id} is still {store.get(run_id).status}"
        time.sleep(0.1)


def test_run_on_change_submits_on_a_knob_change_and_cancels_the_one_before(finished):
    store = finished["store"]
    at = page("pages/unlearn.py", finished["run"])
    assert at.slider(key="knob_muda_epochs") is not None  # groups: Schedule is an expander
    at.slider(key="knob_muda_epochs").set_value(50).run()  # long enough to be superseded
    at.slider(key="knob_muda_retain_fraction").set_value(1.0).run()
    at.toggle(key="auto_run").set_value(True).run()
    before = {r.id for r in store.runs(owner=OWNER)}
    assert not at.exception and {r.id for r in store.runs(owner=OWNER)} == before
    at.select_slider(key="knob_muda_lambda_da").set_value(2.0).run()
    (first,) = [r for r in store.runs(owner=OWNER) if r.id not in before]
    assert first.config["muda"]["lambda_da"] == 2.0 and not at.exception
    at.select_slider(key="knob_muda_lambda_da").set_value(10.0).run()
    (second,) = [r for r in store.runs(owner=OWNER) if r.id not in before | {first.id}]
    assert second.config["muda"]["lambda_da"] == 10.0
    wait_terminal(store, first.id)
    assert store.get(first.id).status == "cancelled"
    cancel(store, second.id)
    wait_terminal(store, second.id)


def test_effect_panel_shows_what_the_last_change_did(finished):
    store = finished["store"]
    newer = submit(store, preset="digits-class", overrides=TINY + ["muda.lambda_da=1"],
                   owner=OWNER)
    ensure_scheduler()
    wait_terminal(store, newer)
    assert store.get(newer).status == "done", store.get(newer).error
    at = page("pages/unlearn.py", newer)
    texts = " ".join(m.value for m in at.markdown)
    assert "λ_DA 5 → 1" in texts, texts
    titles = {m.label for m in at.metric}
    assert {TABLE[k].title for k in shown("effect")} <= titles  # a class run has all of them
    names = {t.get("name") for t in traces(at)}
    assert any("λ_DA 5 → 1" in (n or "") for n in names)  # the earlier run, as a ghost
    table = at.dataframe[0].value
    assert any(str(m).startswith("ghost ") for m in table["model"])


def test_the_run_picker_follows_each_action_and_a_pick_until_the_next_action(finished):
    """Streamlit keeps a keyed picker's own value across reruns: every Run must still move it
    to the run it made (the second one as well as the first), and a pick holds until the
    person's next action. The address follows the picker, so a reload comes back to it."""
    store = finished["store"]
    at = page("pages/unlearn.py", finished["run"])
    assert run_picker(at).value == finished["run"]
    # a setting of its own, so that these runs never join the module's shared run in a table
    at.select_slider(key="knob_muda_lambda_da").set_value(0.2).run()
    made = []
    for _ in range(2):
        at.button(key="run_button").click().run()
        made.append(store.runs(owner=OWNER, limit=1)[0].id)
        assert run_picker(at).value == made[-1], (made, run_picker(at).value)
        assert at.query_params["run"] == made[-1]
    run_picker(at).set_value(finished["run"]).run()  # the person's own pick
    at.run()
    assert run_picker(at).value == finished["run"]
    assert at.query_params["run"] == finished["run"]
    # a run that changes status meanwhile (another of the person's runs, not an action of
    # this page) changes the picker's labels, hence its widget: the pick stays
    other = submit(store, preset="digits-class", overrides=[*TINY, "muda.lambda_da=0.2"],
                   owner=OWNER)
    at.run()
    assert run_picker(at).value == finished["run"]
    ensure_scheduler()
    wait_terminal(store, other)
    at.run()
    assert store.get(other).status == "done"
    assert any(o.endswith(f"{other} · muda · done") for o in run_picker(at).options)
    assert run_picker(at).value == finished["run"]
    at.button(key="run_button").click().run()
    made.append(store.runs(owner=OWNER, limit=1)[0].id)
    assert run_picker(at).value == made[-1]
    assert not at.exception, at.exception
    for run_id in made:
        cancel(store, run_id)
        wait_terminal(store, run_id)
    # the geometry pages open on the person's run too, not on the newest finished one (other)
    run_picker(at).set_value(finished["run"]).run()
    at.switch_page("pages/spectra.py").run()
    created = store.get(finished["run"]).created
    assert any(r.created > created for r in store.runs(owner=OWNER, statuses=("done",)))
    assert run_picker(at).value == finished["run"] and not at.exception


def test_unlearn_page_refuses_nothing_silently_for_a_bad_knob_combination(finished):
    at = page("pages/unlearn.py", finished["run"])
    at.selectbox(key="method").set_value("bad_teacher").run()
    assert not at.exception
    assert at.select_slider(key="knob_bad_teacher_lr").value == 1e-4


def test_unlearn_page_switches_a_baseline_to_its_reference_variant_and_its_defaults(finished):
    """Picking SalUn's reference variant redraws the knobs it owns with the authors' defaults,
    and a run started from there carries only the variant (the defaults come with it)."""
    store = finished["store"]
    at = page("pages/unlearn.py", finished["run"])
    at.selectbox(key="method").set_value("salun").run()
    assert at.selectbox(key="knob_salun_variant").value == "dimalign"
    assert at.slider(key="knob_salun_epochs_dimalign").value == 3
    at.selectbox(key="knob_salun_variant").set_value("reference").run()
    assert not at.exception
    assert at.slider(key="knob_salun_epochs_reference").value == 10
    assert at.slider(key="knob_salun_batch_size_reference").value == 256
    assert at.slider(key="knob_salun_batch_size_reference").max == 1024  # room above 256
    assert at.checkbox(key="knob_salun_augment_reference").value is True
    before = {r.id for r in store.runs(owner=OWNER)}
    at.toggle(key="auto_run").set_value(True).run()
    at.slider(key="knob_salun_mask_ratio").set_value(0.4).run()
    (started,) = [r for r in store.runs(owner=OWNER) if r.id not in before]
    assert started.config["salun"] == {"variant": "reference", "mask_ratio": 0.4}
    cancel(store, started.id)
    wait_terminal(store, started.id)


def test_a_fork_runs_the_knobs_shown_not_its_parents_variant(finished):
    """Forking a reference-variant run with the knobs at the default variant's values runs
    that variant with those values: the parent's variant and epochs do not come back."""
    from dimalign.config import config_from_dict

    store = finished["store"]
    parent = submit(store, preset="digits-class", owner=OWNER,
                    overrides=TINY + ["salun.variant=reference", "salun.epochs=1"],
                    method="salun")
    ensure_scheduler()
    wait_terminal(store, parent)
    assert store.get(parent).status == "done", store.get(parent).error
    at = page("pages/unlearn.py", parent)
    at.selectbox(key="method").set_value("salun").run()
    assert at.selectbox(key="knob_salun_variant").value == "dimalign"
    before = {r.id for r in store.runs(owner=OWNER)}
    at.button(key="fork_button").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    (fork,) = [r for r in store.runs(owner=OWNER) if r.id not in before]
    params = config_from_dict(fork.config).method_params("salun")
    assert fork.parent_id == parent
    assert (params["variant"], params["epochs"], params["batch_size"]) == ("dimalign", 3, 64)
    cancel(store, fork.id)
    wait_terminal(store, fork.id)


def test_experiment_page_switches_to_an_image_folder_and_refuses_a_bad_one(tmp_path,
                                                                           monkeypatch):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for c in range(3):
        (tmp_path / f"digit{c}").mkdir()
        for i, img in enumerate(digits.images[digits.target == c][:20]):
            Image.fromarray((img * 255 / 16).astype("uint8")).save(
                tmp_path / f"digit{c}" / f"{i:03}.png")
    monkeypatch.setenv("DIMALIGN_DATA_ROOTS", str(tmp_path))  # the server allows this folder
    at = page("pages/experiment.py")
    at.text_input(key="own_root").input(str(tmp_path / "nowhere"))
    at.number_input(key="own_size").set_value(8)
    at.button(key="own_apply").click().run()
    assert any("dataset_root" in e.value for e in at.error) and not at.exception
    assert at.session_state["overrides"] == TINY  # nothing changed
    at.text_input(key="own_root").input(str(tmp_path))
    at.button(key="own_apply").click().run()
    assert not at.exception and not at.error
    assert "dataset=imagefolder" in at.session_state["overrides"]
    text = " ".join(m.value for m in at.markdown)
    assert "**imagefolder**" in text and "classes 0" in text


def test_spectra_page_draws_three_models_and_selects_k_with_the_energy_slider(finished):
    at = page("pages/spectra.py", finished["run"])
    names = {t.get("name") for t in traces(at)}
    assert {"original", "retrained", "unlearned"} <= {n.split(" ")[0] for n in names if n}
    at.slider(key="energy").set_value(0.5).run()
    low = [m.value for m in at.markdown if "k =" in m.value]
    at.slider(key="energy").set_value(0.99).run()
    high = [m.value for m in at.markdown if "k =" in m.value]
    assert low and high and low != high


def test_angles_page_reads_out_da_and_angles(finished):
    at = page("pages/angles.py", finished["run"])
    assert len(at.dataframe[0].value) == 3
    assert any("Reading." in m.value for m in at.markdown)
    assert any("DA" in (t.get("name") or "") for t in traces(at))


def linked_views(at: AppTest) -> list[dict]:
    """The args of every linked view on the page (dimalign/ui/linked.py's component)."""
    return [json.loads(c.proto.json_args) for c in at.get("component_instance")]


def test_manifolds_page_shows_the_aligned_umap(finished):
    at = page("pages/manifolds.py", finished["run"])
    (view,) = linked_views(at)
    panels = view["payload"]
    assert view["kind"] == "panels" and panels["models"] == ["original", "retrained", "unlearned"]
    assert len(panels["coords"]["unlearned"]["x"]) == len(panels["rows"]) > 100
    assert panels["splits"][0] in ("retain", "forget", "test")
    assert any("Click a point" in c.value for c in at.caption)


def test_unlearn_page_draws_a_finished_runs_film(finished):
    at = page("pages/unlearn.py", finished["run"])
    (view,) = linked_views(at)
    film = view["payload"]
    assert view["kind"] == "film" and film["complete"] and len(film["steps"]) >= 2
    assert len(film["x"]) == len(film["steps"]) and film["curves"]["step"]
    assert any(h.value == "Film" for h in at.subheader)
    assert film["plane"] == "residual" and film["ghosts"]["retrained"]["x"]
    assert "predicted" not in film and "confidence" not in film  # read on the page, not drawn
    downloads = {b.proto.label for b in at.get("download_button")}
    assert {"Film as GIF", "Film as MP4", "Film as HTML"} <= downloads


def test_unlearn_page_waits_for_the_frames_a_run_left_then_draws_its_film(finished,
                                                                          tiny_baselines):
    """A run that could not afford its frames leaves them to its film job: the page says the
    film is being recorded, and draws it once the job is done."""
    from dimalign import checked
    from dimalign.config import config_from_dict
    from dimalign.methods import REGISTRY
    from dimalign.methods.loop import unlearn
    from dimalign.run_files import FILM, FILM_PENDING

    store, b = finished["store"], tiny_baselines
    run = store.get(finished["run"])
    cfg = config_from_dict(run.config)
    kept = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                   retrained=b.retrained, film_budget=0.0).film_kept
    film = checked.load_torch(run.folder / FILM)
    checked.save_torch(kept, run.folder / FILM_PENDING)
    try:
        checked.remove(run.folder / FILM)
        at = page("pages/unlearn.py", run.id)
        shown = [p.proto.text for p in at.get("progress")]
        assert any(t.startswith("Recording the film's last frames") for t in shown), shown
        assert not linked_views(at)
        job = store.runs(kind="film", limit=1)[0]
        scheduler = Scheduler(store, slots=[Slot(None)])
        drain_scheduler(scheduler, lambda: not (run.folder / FILM_PENDING).exists(), 120)
        scheduler.close()
        assert store.get(job.id).status in ("running", "done")
        at = page("pages/unlearn.py", run.id)
        (view,) = linked_views(at)
        assert view["payload"]["steps"] == film["steps"]
    finally:  # the other tests' film, whatever happened
        checked.save_torch(film, run.folder / FILM)
        if (run.folder / FILM_PENDING).exists():
            checked.remove(run.folder / FILM_PENDING)


def test_unlearn_page_shows_a_finished_film_in_aligned_umap_once_its_job_is_done(finished):
    from dimalign.jobs import submit_job

    store = finished["store"]
    job = submit_job(store, "film_umap", finished["run"], OWNER)
    scheduler = Scheduler(store, slots=[Slot(None)])
    drain_scheduler(scheduler, lambda: store.get(job).terminal, 300)
    scheduler.close()
    assert store.get(job).status == "done", store.get(job).error
    at = page("pages/unlearn.py", finished["run"])
    at.radio(key="film_projection").set_value("aligned UMAP").run()
    (view,) = linked_views(at)
    film = view["payload"]
    assert film["plane"] == "xy" and film["projection"].startswith("aligned UMAP")
    assert len(film["x"]) == len(film["steps"])
    assert any("into one UMAP frame" in c.value for c in at.caption)


def test_compare_page_tabulates_runs_with_gaps_and_offers_downloads(finished):
    at = page("pages/compare.py", finished["run"])  # the person's latest run is marked
    assert any(c.value.startswith(f"Blue run cell: the row of your latest run, {finished['run']}")
               for c in at.caption), [c.value for c in at.caption]
    table = at.dataframe[0].value
    assert {"original", "retrained"} <= set(table["run"]) and finished["run"] in set(table["run"])
    assert len(at.get("download_button")) == 2
    names = [t.get("name") for t in traces(at)]
    assert "Pareto front" in names and "retrained" in names and "muda " + finished["run"] in names
    assert list(table.columns) == ["run", "method", *shown("compare"), TIME_FRACTION.name]
    at.toggle(key="gaps").set_value(True).run()
    gaps = at.dataframe[0].value
    assert gaps.loc[gaps["run"] == "retrained", "acc_forget"].iloc[0] == 0


def chart_downloads(at: AppTest) -> set[tuple[str, str]]:
    options = [json.loads(c.proto.config)["toImageButtonOptions"] for c in at.get("plotly_chart")]
    return {(o["format"], o["filename"]) for o in options}


def test_every_chart_saves_as_png_or_svg_as_the_sidebar_says(finished):
    at = page("pages/compare.py")
    assert chart_downloads(at) == {("png", "dimalign-tradeoffs")}
    at.radio(key="figure_format").set_value("SVG").run()
    assert chart_downloads(at) == {("svg", "dimalign-tradeoffs")}
    at.switch_page("pages/spectra.py").run()  # the choice holds across pages
    assert chart_downloads(at) == {("svg", "dimalign-spectra"), ("svg", "dimalign-cumulative")}


def test_learn_page_has_the_formulas_live_figures_the_film_and_the_playground(finished):
    at = page("pages/learn.py", finished["run"])
    assert len(at.get("latex")) >= 3
    assert len(at.get("plotly_chart")) == 2
    film = [e for e in at.main if e.type == "image"]  # the animated film, served as a GIF
    assert len(film) == 1 and film[0].proto.imgs[0].url.endswith(".gif")
    assert any("Watch it happen" in m.value for m in at.markdown)
    (view,) = linked_views(at)  # the playground computes in the browser: only its seed here
    assert (view["kind"], view["payload"]) == ("playground", {"seed": 28})
    links = [e.proto.page for e in at.get("page_link")]
    assert sorted(links) == ["audit", "unlearn", "unlearn", "unlearn"]  # an exercise each


def test_learn_page_ticks_an_exercise_once_ones_own_run_meets_it(finished):
    """A finished MUDA run of the person's with λ_DA = 0 ticks "Set λ_DA to 0"; the runs of
    another owner never count."""
    from dimalign.exercises import EXERCISES

    store, goal = finished["store"], EXERCISES[0].goal
    learner, key = "exercise-ann", new_owner_key()  # a name no other test claims

    def mark(at: AppTest) -> str:
        (line,) = [m.value for m in at.markdown if goal in m.value]
        return line.split(" ", 1)[0]

    assert mark(page("pages/learn.py", owner=learner, key=key)) == "○"
    done = store.get(finished["run"])  # its result, recorded again as learner's λ_DA = 0 run
    config = {**done.config, "muda": {**done.config.get("muda", {}), "lambda_da": 0.0}}
    run_id = store.create_run(owner=learner, kind="unlearn", preset=done.preset,
                              method="muda", config=config, status="done")
    store.update(run_id, result=done.result, finished=time.time())
    at = page("pages/learn.py", owner=learner, key=key)
    assert mark(at) == "✔"
    assert any(f"Done by run {run_id} (muda)" in c.value for c in at.caption)
    assert mark(page("pages/learn.py", finished["run"])) == "○"  # tester's run: λ_DA 5


ADMIN = "instructor-secret"  # DIMALIGN_ADMIN_KEY for the room view's tests


def room_page(projector: bool = False) -> AppTest:
    """The Room page as the instructor (`?admin=`), on the tiny settings."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["admin"] = ADMIN
    if projector:
        at.query_params["projector"] = "1"
    at.session_state["overrides"] = TINY
    at.session_state["overrides_for"] = "digits-class"
    at.run()
    at.switch_page("pages/room.py").run()
    assert not at.exception, at.exception
    assert at.session_state["_identity"].admin
    return at


def test_room_page_ranks_the_participants_marks_the_floor_and_projects(finished, tiny_cfg,
                                                                        monkeypatch):
    """Three participants' finished runs (the module's run's result, recorded again as
    theirs) and one unfinished: the instructor's board ranks them with the noise floor marked
    (a second replicate gives it), the chart stars each one's best, the roster shows the
    unfinished run; projector mode draws large tables and hides the sidebar; a participant sees
    no board."""
    import copy

    import pandas as pd

    from dimalign.train import experiment_key

    store = finished["store"]
    done = store.get(finished["run"])
    monkeypatch.setenv("DIMALIGN_ADMIN_KEY", ADMIN)

    def record(owner: str, avg: float | None, replicate: int = 0, shift: float = 0.0) -> str:
        config = {**done.config, "replicate": replicate}
        run_id = store.create_run(owner=owner, kind="unlearn", preset=done.preset,
                                  method="muda", config=config,
                                  status="done" if avg else "interrupted",  # never picked up
                                  experiment=experiment_key(tiny_cfg.with_replicate(replicate)))
        if avg is not None:
            result = copy.deepcopy(done.result)
            result["models"]["unlearned"]["avg_gap"] = avg
            result["models"]["retrained"]["acc_forget"] += shift  # another retrained model
            store.update(run_id, result=result, finished=time.time())
        return run_id

    made = [record("ann", 1e-4), record("ben", 0.3), record("dan", 0.2, 1, shift=0.2),
            record("cat", None)]
    try:
        at = room_page()
        board = at.dataframe[0].value
        order = list(board["participant"])
        assert order[0] == "ann" and order.index("dan") < order.index("ben"), board
        assert board.loc[0, "run"] == made[0] and board.loc[0, "retraining"] == "≈ retrain"
        assert "cat" not in order  # nothing finished yet
        roster = at.dataframe[1].value.set_index("participant")
        assert roster.loc["cat", "latest"] == made[3]
        assert roster.loc["cat", "status"] == "interrupted" and pd.isna(roster.loc["cat", "best"])
        best = next(t for t in traces(at) if t.get("name") == "best of each")
        assert {made[0], made[1], made[2]} <= {c[0] for c in best["customdata"]}
        assert any("within the noise floor" in c.value for c in at.caption)
        assert [b.proto.label for b in at.get("download_button")] == ["Download the board (CSV)"]
        at = room_page(projector=True)
        # the board and the roster as tables (a challenge another test published in this
        # session's store adds its standings, indexed by rank, above them)
        tables = [t for t in at.table if t.value.index.name != "rank"]
        assert len(tables) == 2 and not at.dataframe and not at.get("download_button")
        # its cells are markdown: each name as typed, a code span (never a link or emphasis)
        assert list(tables[0].value["participant"])[0] == "`ann`"
        assert any("stSidebar" in m.value for m in at.markdown)
        assert at.button(key="room_projector").label == "Leave projector mode"
        participant = page("pages/room.py")
        assert any("instructor's" in i.value for i in participant.info)
        assert not participant.table and not participant.dataframe
    finally:  # the other tests' pages see none of these runs
        for run_id in made:
            store.update(run_id, status="cancelled")


def texts(at: AppTest) -> str:
    """Every markdown text on the page, the challenge banner's included."""
    return "\n".join(m.value for m in at.markdown)


def test_a_challenge_is_published_shown_entered_ranked_closed_and_revealed(
        finished, tiny_cfg, monkeypatch, tmp_path):
    """In a room of its own (a fresh home; the module's run's result recorded as a
    participant's two runs): the instructor publishes a challenge on Room; the participant's
    pages show its banner; *Submit this run* enters their MUDA run and refuses their FT run in
    one line (FT is not allowed), entering nothing; the instructor's board ranks the entry and
    marks it; closed and revealed, every banner shows the winning settings. A participant on
    another experiment is offered the challenge's. The banner drawn with an entry shows its
    standing at once; a stale Room tab's *Open it again* says it changed nothing."""
    import copy

    from dimalign.train import experiment_key

    done = finished["store"].get(finished["run"])
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    monkeypatch.setenv("DIMALIGN_ADMIN_KEY", ADMIN)
    monkeypatch.setattr(daemon, "ensure_scheduler", lambda *a, **k: None)  # nothing runs here
    store = Store()

    def record(method: str, avg: float, knobs: dict) -> str:
        result = copy.deepcopy(done.result)
        result["models"]["unlearned"]["avg_gap"] = avg
        run_id = store.create_run(owner=OWNER, kind="unlearn", preset=done.preset,
                                  method=method, config={**done.config, method: knobs},
                                  status="done", experiment=experiment_key(tiny_cfg))
        store.update(run_id, result=result, started=time.time(), finished=time.time())
        return run_id

    mine, other = record("muda", 0.01, {"lambda_da": 2.0}), record("ft", 0.5, {})
    at = room_page()
    at.text_input(key="challenge_title").input("Beat the gap")
    at.text_area(key="challenge_instructions").input("Lowest **avg-gap** wins.")
    at.button(key="challenge_publish").click().run()
    assert not at.exception, at.exception
    assert any("Published *Beat the gap*" in s.value for s in at.success)
    assert "**Beat the gap** — open" in texts(at)
    assert any("No entries yet" in i.value for i in at.info)

    participant = page("pages/unlearn.py", other)
    assert "Challenge: Beat the gap** — open" in texts(participant)
    assert "You have no entry yet" in texts(participant)
    participant.button(key="enter_button").click().run()
    assert [e.value for e in participant.error] == [
        f"Not entered: run {other} ran ft; this challenge allows muda."]
    participant = page("pages/unlearn.py", mine)
    assert participant.button(key="enter_button").label == "Submit this run"
    participant.button(key="enter_button").click().run()
    assert any(f"Run {mine} entered in the challenge" in s.value for s in participant.success)
    assert [r.id for r in store.submissions(store.current_challenge().id)] == [mine]
    assert "You are **1st of 1** with avg-gap 0.0100" in texts(participant)  # this very draw
    assert participant.button(key="enter_button").disabled  # entered: once

    at = room_page()
    (table,) = at.table
    assert list(table.value["participant"]) == [f"`{OWNER}`"]  # markdown cells: as typed
    assert list(table.value["run"]) == [mine]
    board = at.dataframe[0].value
    assert board.set_index("run").loc[mine, "entered"] == "✔"
    at.button(key="challenge_close").click().run()
    at.button(key="challenge_reveal").click().run()
    assert not at.exception, at.exception
    assert f"**Best settings**, `{OWNER}`'s run {mine}, avg-gap 0.0100: **muda**: " \
           "**lambda_da = 2** (default 5)" in texts(at)
    participant = page("pages/learn.py")
    assert "Challenge: Beat the gap** — closed" in texts(participant)
    assert f"**Best settings**, `{OWNER}`'s run {mine}" in texts(participant)
    assert "You finished **1st of 1**" in texts(participant)  # closed: no "You are"

    stale = room_page()  # a second tab of the instructor's, showing it closed
    at.button(key="challenge_open").click().run()  # open again, for a participant elsewhere
    assert any(s.value.startswith("Open again") for s in at.success)
    opened = store.current_challenge()
    assert opened.open and opened.revealed_run is None
    stale.button(key="challenge_open").click().run()  # changes nothing, says so in one line
    assert [i.value for i in stale.info if i.value.startswith("Not opened")] == [
        "Not opened: it, or another challenge, is open already (this page was out of date)."]
    assert store.current_challenge() == opened
    away = AppTest.from_file(APP, default_timeout=60)
    away.query_params["owner"], away.query_params["key"] = "away", new_owner_key()
    away.run()  # the preset's own settings: another experiment than the challenge's
    away.button(key="challenge_experiment").click().run()
    assert not away.exception, away.exception
    assert away.session_state["overrides"] == TINY
    assert not [b for b in away.button if b.key == "challenge_experiment"]


def test_a_missing_dataset_is_an_error_on_every_data_page(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    monkeypatch.setenv("DIMALIGN_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["preset"] = "cifar10-class"
    at.run()
    started = daemon._starting.pop(str(tmp_path), None)  # the page's scheduler, if it started one
    if started:  # else it idles on for ten minutes under this throw-away home
        started[0].terminate()
        started[0].wait(30)
    assert not at.exception
    assert any("Dataset 'cifar10'" in e.value for e in at.error)


def test_switching_preset_updates_the_page_and_the_url():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="preset").set_value("digits-backdoor").run()
    assert not at.exception
    assert at.query_params["preset"] in ("digits-backdoor", ["digits-backdoor"])
    assert any("trigger" in m.value for m in at.markdown)
    assert len(at.get("image")) == 2  # forget and retain grids


def test_pareto_front_keeps_the_runs_nothing_beats_on_both_time_and_gap():
    from dimalign.plots import pareto_front

    points = [(1.0, 0.0), (0.1, 0.3), (0.05, 0.5), (0.2, 0.4), (0.3, 0.01), (0.1, 0.35)]
    assert pareto_front(points) == [2, 1, 4, 0]  # ordered by time


def test_live_curves_draw_reference_lines_on_the_matching_panel():
    from dimalign.plots import telemetry_figure

    fig = telemetry_figure({"acc_forget": [(0, 1.0), (10, 0.2)], "da": [(0, 0.7), (10, 0.9)]},
                           {"retrained": {"acc_forget": 0.0, "da": 0.976},
                            "original": {"da": 0.764, "acc_forget": None}})
    lines = {(s.yref, s.y0, s.line.dash) for s in fig.layout.shapes}
    assert lines == {("y2", 0.0, "dash"), ("y3", 0.976, "dash"), ("y3", 0.764, "dot")}
    texts = {a.text for a in fig.layout.annotations}
    assert {"retrained acc_forget", "retrained da", "original da"} <= texts
    assert "Dimensional Alignment (forget vs retain)" in texts  # panel titles kept


def tune_reloaded(ids: list[str], knobs: str) -> AppTest:
    """The Tune page opened from an address that names a sweep's runs and knobs (a reload)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(owner=OWNER, key=KEY, sweep=",".join(ids), sweep_knobs=knobs)
    at.session_state["overrides"] = TINY
    at.session_state["overrides_for"] = "digits-class"
    at.run()
    return at.switch_page("pages/tune.py").run()


def test_tune_page_sweeps_a_knob_on_two_replicates_and_shows_the_noise_floor(finished):
    """Last in this module: its second replicate makes the Compare page show mean ± sd."""
    from dimalign.plots import NOISE_LABEL

    store = finished["store"]
    at = page("pages/tune.py")
    at.selectbox(key="tune_method").set_value("ga").run()
    assert at.multiselect(key="tune_knobs_ga").value == ["epochs"]  # the first numeric knob
    assert at.text_input(key="tune_values_ga_epochs_3").value == "1, 10, 20"  # the registry's
    at.text_input(key="tune_values_ga_epochs_3").set_value("1, 2")
    at.number_input(key="tune_replicates").set_value(2).run()
    at.button(key="tune_sweep").click().run()
    assert not at.exception and not at.error
    ids = at.session_state["_sticky_sweep"].split(",")
    assert len(ids) == 4  # two values on two replicates, through the shared queue
    assert {store.get(i).owner for i in ids} == {OWNER}
    for run_id in ids:
        wait_terminal(store, run_id, 300)
        assert store.get(run_id).status == "done", store.get(run_id).error
    at.run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t.get("name") for t in spec["data"]}
    assert {"± sd", "best"} <= names
    line = next(t for t in spec["data"] if t.get("mode") == "lines+markers")
    assert list(line["x"]) == [1, 2] and {c[0] for c in line["customdata"]} <= set(ids)
    texts = {a.get("text") for a in spec["layout"]["annotations"]}
    assert {NOISE_LABEL, "retrained"} <= texts  # the grey band and the retrained line
    assert any("Best setting: epochs=" in s.value for s in at.success)
    # a reload comes back to the sweep: its runs and knobs are in the address
    again = tune_reloaded(ids, "epochs")
    assert not again.exception and len(again.get("plotly_chart")) == 1

    # the Compare page pairs them by replicate: mean ± sd and the noise floor
    at.switch_page("pages/compare.py").run()
    table = at.dataframe[0].value
    ga = table[table["method"] == "ga"]
    assert (ga["replicates"] == 2).all() and ga["acc_forget"].str.contains("±").all()
    assert any("Noise floor:" in c.value for c in at.caption)
    assert any(t.get("name") == NOISE_LABEL for t in traces(at))
    # the Unlearn result table shows the floor beside the run's gaps
    at = page("pages/unlearn.py", ids[0])
    models = list(at.dataframe[0].value["model"])
    assert "noise floor (retrain vs retrain)" in models


def test_tune_draws_a_saved_sweep_of_a_knob_the_picked_method_lacks(finished):
    """A reload comes back with MUDA picked: the sweep in the address (NegGrad+'s alpha, which
    MUDA has not) is still drawn, on its own method's knob."""
    store = finished["store"]
    ids = [submit(store, preset="digits-class", owner=OWNER, method="neggrad_plus",
                  overrides=TINY + ["neggrad_plus.epochs=1", f"neggrad_plus.alpha={a}"])
           for a in (0.9, 0.99)]
    ensure_scheduler()
    for run_id in ids:
        wait_terminal(store, run_id)
        assert store.get(run_id).status == "done", store.get(run_id).error
    at = tune_reloaded(ids, "alpha")
    assert not at.exception, at.exception
    assert at.selectbox(key="tune_method").value == "muda"
    line = next(t for t in traces(at) if t.get("mode") == "lines+markers")
    assert list(line["x"]) == [0.9, 0.99]
    # an address naming a knob Tune does not sweep (a choice) keeps only the numeric ones
    at.query_params["sweep_knobs"] = "variant,alpha"
    at.session_state["_sticky_sweep_knobs"] = "variant,alpha"
    at.run()
    assert not at.exception, at.exception
    assert at.query_params["sweep_knobs"] in ("alpha", ["alpha"])


def test_tune_refuses_a_sweep_larger_than_the_page_can_follow(finished):
    """The page's own maxima (6 values of two knobs on 10 replicates: 360 runs) exceed the
    runs a sweep's address keeps: refused in one line, nothing queued, rather than a sweep of
    which the page silently follows only the first part."""
    from dimalign.ui.runs import SWEEP_RUNS_KEPT

    store = finished["store"]
    at = page("pages/tune.py")
    at.selectbox(key="tune_method").set_value("ga").run()
    at.multiselect(key="tune_knobs_ga").set_value(["epochs", "lr"]).run()
    at.slider(key="tune_count").set_value(6).run()
    at.number_input(key="tune_replicates").set_value(10).run()
    before = {r.id for r in store.runs(owner=OWNER)}
    at.button(key="tune_sweep").click().run()
    new = [r for r in store.runs(owner=OWNER) if r.id not in before]
    for run in new:  # only if the refusal failed: do not leave them to the scheduler
        cancel(store, run.id)
    assert not new and not at.exception
    assert any(f"at most {SWEEP_RUNS_KEPT}" in e.value for e in at.error), at.error


def test_run_every_method_queues_each_method_on_each_replicate_once(finished):
    store = finished["store"]
    at = page("pages/compare.py")
    at.number_input(key="compare_replicates").set_value(2).run()
    before = {r.id for r in store.runs(owner=OWNER)}
    at.button(key="run_every_method").click().run()
    assert not at.exception and not at.error
    new = [r for r in store.runs(owner=OWNER) if r.id not in before]
    at.button(key="run_every_method").click().run()  # nothing more while those stand
    after = len(store.runs(owner=OWNER))
    for run in new:  # the queue is what is tested here, not the methods: stop them
        cancel(store, run.id)
    assert after == len(before) + len(new)
    trained = {m for m in REGISTRY if REGISTRY[m].trains}
    pairs = sorted((r.method, r.config.get("replicate", 0)) for r in new)
    # muda's default setting is done on replicate 0 (the module's run): all the rest is queued
    assert pairs == sorted((m, rep) for m in trained for rep in (0, 1) if (m, rep) != ("muda", 0))


def test_tune_suggests_values_from_the_registry_log_spaced_for_weights():
    from dimalign.ui import is_log_knob, sweep_grid

    knobs = REGISTRY["muda"].knobs
    assert is_log_knob(knobs["lambda_da"]) and is_log_knob(knobs["lr"])  # weight; (0, 10]
    assert not is_log_knob(knobs["epochs"]) and not is_log_knob(knobs["weight_decay"])
    weights = sweep_grid(knobs["lambda_da"], 3)
    assert weights == pytest.approx([0.5, 5.0, 50.0])  # a decade either side of the default
    assert weights[1] / weights[0] == pytest.approx(weights[2] / weights[1])
    epochs = sweep_grid(knobs["epochs"], 4)
    assert epochs == sorted(set(epochs)) and all(isinstance(v, int) for v in epochs)
    for name, knob in knobs.items():
        if knob.type in (int, float) and not knob.choices:
            for value in sweep_grid(knob, 3):
                knob.check(name, value)  # every suggestion is a value the registry accepts


def test_a_log_spaced_knob_is_labelled_with_its_own_values():
    from dimalign.plots import _axis_values

    axis = _axis_values([5.0, 0.5, 50.0, 5.0], log=True)  # plotly wrote all three as "5"
    assert axis == {"type": "log", "tickvals": [0.5, 5.0, 50.0], "ticktext": ["0.5", "5", "50"]}
    assert _axis_values([0.0, 1.0], log=True) == {} and _axis_values([1.0], log=False) == {}
