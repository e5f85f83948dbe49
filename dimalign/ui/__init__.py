"""The dashboard's side of dimalign, and the only part of it that imports streamlit. Pages
use `from dimalign import ui` and these names; inside, one concern per module:

    state     the URL's query parameters and the session: sticky values, who the session is
              (an owner's name and key, or the instructor's read-only view), this session's
              experiment settings
    runs      the store: this session's connection, an experiment's runs and baselines job,
              saved geometry, ghost runs, submitting a run
    widgets   charts, the run picker, knob sliders, the result and effect tables
    own_data  a person's own image folder and checkpoint: paths under the server's roots, or
              uploads
    frame     page(title), which every page opens with, the sidebar, the geometry source
    contest   a workshop's challenges: the banner `page` draws, entering a run, the
              instructor's publish, close, open and reveal, the standings
    deeplink  the private Streamlit patch that keeps deep links inside app.py's frame
    linked    our plotly.js component (the film player, Manifolds' linked panels, Learn's DA
              playground) and what it reads: a run's film, an embedding, a sample's image

Nothing heavy runs here: training, metrics and UMAP are jobs; pages read their results from
the store.
"""

from dimalign.ui import rerun_guard
from dimalign.ui.contest import (
    challenge_entries,
    challenges,
    close_challenge,
    current_challenge,
    enter_challenge,
    publish_challenge,
    reopen_challenge,
    reveal_best,
    revealed_settings,
)
from dimalign.ui.frame import (
    Page,
    geometry_source,
    page,
    require_geometry,
    reset_settings,
    settings_error,
    sidebar_config,
)
from dimalign.ui.linked import (
    FILM_FORMATS,
    film_downloads,
    film_frames_left,
    film_player,
    linked_panels,
    load_film,
    manifold_panels,
    playground,
    sample_image,
    show_film_sample,
)
from dimalign.ui.own_data import uploaded_paths, use_own_data
from dimalign.ui.runs import (
    Ghost,
    active_baselines,
    baselines_run,
    cancel_run,
    cancel_sweep,
    ensure_scheduler,
    experiment_key,
    experiment_runs,
    ghost_runs,
    has_active_runs,
    job_on_run,
    latest_job,
    load_geometry,
    more_runs_note,
    noise_floor,
    own_attempts,
    queue_place,
    remember_sweep,
    replicate_results,
    replicate_runs,
    resume_run,
    room_experiments,
    room_version,
    run_knobs,
    saved_sweep,
    start_run,
    start_sweep,
    submit_replicates,
    sweep_size,
    train_baselines,
)
from dimalign.ui.state import Identity, follow, forget, owner, remember, sticky, store
from dimalign.ui.widgets import (
    chart,
    effect_panel,
    is_log_knob,
    knob_groups,
    knob_widget,
    knobs_moved,
    memo_figure,
    pick_run,
    result_table,
    run_label,
    said,
    show_run_error,
    sweep_grid,
    wait_for_job,
)

__all__ = [
    "FILM_FORMATS", "Ghost", "Identity", "Page", "active_baselines", "baselines_run",
    "cancel_run", "cancel_sweep", "challenge_entries", "challenges", "close_challenge",
    "current_challenge", "enter_challenge",
    "publish_challenge", "reopen_challenge", "reveal_best", "revealed_settings", "run_knobs",
    "chart", "effect_panel", "ensure_scheduler", "experiment_key", "experiment_runs",
    "film_downloads", "film_frames_left", "film_player", "wait_for_job", "follow", "forget",
    "geometry_source",
    "ghost_runs",
    "has_active_runs", "is_log_knob", "job_on_run", "knob_groups", "knob_widget", "knobs_moved",
    "latest_job", "linked_panels", "load_film", "load_geometry", "manifold_panels",
    "memo_figure", "more_runs_note", "noise_floor", "own_attempts", "owner", "page",
    "pick_run", "playground", "queue_place", "remember", "remember_sweep",
    "replicate_results", "replicate_runs", "require_geometry", "reset_settings", "result_table",
    "resume_run", "room_experiments", "room_version", "run_label", "said", "sample_image",
    "saved_sweep", "settings_error",
    "show_film_sample", "show_run_error", "sidebar_config", "start_run", "start_sweep", "sticky",
    "store", "submit_replicates", "sweep_grid", "sweep_size", "train_baselines", "uploaded_paths",
    "use_own_data",
]

rerun_guard.install()  # the server process's Streamlit, once: see the module
