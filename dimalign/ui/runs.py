"""What pages read from the run store and submit to it: this session's store connection, the
runs of an experiment, its baselines job, a run's saved geometry, runs to draw as ghosts.
Every filter runs in SQL: a run's experiment key is a column written at submit."""

from __future__ import annotations

from typing import NamedTuple

import streamlit as st

from dimalign.checked import DamagedFile, DiskFull
from dimalign.config import Config
from dimalign.store import ACTIVE, Run, Store, StoreError
from dimalign.ui.state import remember


def store() -> Store:
    """One store connection per browser session. A store that cannot be opened (a damaged
    file, a full disk) stops the page with its one-line message."""
    if "_store" not in st.session_state:
        try:
            st.session_state["_store"] = Store()
        except (StoreError, DiskFull) as err:
            st.error(f"{err}.")
            st.stop()
    return st.session_state["_store"]


def ensure_scheduler() -> None:
    """Start the background scheduler if none runs: a lock-file check, cheap enough for every
    call (one stops after ten idle minutes, so a session cannot check just once)."""
    from dimalign.jobs import ensure_scheduler as start

    start()


def experiment_key(cfg: Config) -> str:
    from dimalign.train import experiment_key as key

    return key(cfg)


def baselines_run(cfg: Config) -> Run | None:
    """The newest finished baselines job of this experiment (any owner: they are shared)."""
    return _baselines(cfg, ("done",))


def active_baselines(cfg: Config) -> Run | None:
    return _baselines(cfg, ACTIVE)


def _baselines(cfg: Config, statuses: tuple[str, ...]) -> Run | None:
    found = store().runs(kind="baselines", statuses=statuses, share_key=experiment_key(cfg),
                         limit=1)
    return found[0] if found else None


def experiment_runs(cfg: Config, who: str | None = None,
                    statuses: tuple[str, ...] | None = None) -> list[Run]:
    """Unlearning runs of this experiment (same data, scenario, model, baselines), newest
    first; `who` and `statuses` narrow them."""
    return store().runs(kind="unlearn", owner=who, statuses=statuses,
                        experiment=experiment_key(cfg))


def load_geometry(run: Run) -> dict | None:
    """The run's saved geometry; None when it has none, or it was damaged (then set aside,
    and the page says so)."""
    path = run.folder / "geometry.pt"
    if not path.exists():
        return None
    try:
        return _cached_bundle(str(path), path.stat().st_mtime)
    except DamagedFile as err:
        st.error(f"{err}.")
        return None


@st.cache_resource(show_spinner=False, max_entries=16)  # shared, read-only: no copy per run
def _cached_bundle(path: str, mtime: float) -> dict:
    from dimalign.artifacts import load_bundle

    return load_bundle(path)


class Ghost(NamedTuple):
    """An earlier run drawn faintly under the chosen one, named by what it changed."""

    run: Run
    label: str


def ghost_runs(runs: list[Run], selected: Run, count: int = 5) -> list[Ghost]:
    """This owner's last `count` runs of the experiment besides the chosen one (queued runs
    have nothing to draw yet)."""
    from dimalign.config import config_from_dict
    from dimalign.steer import ghost_label, knob_changes

    chosen = config_from_dict(selected.config)
    out = []
    for run in runs:
        if run.id == selected.id or run.status == "queued":
            continue
        changes = knob_changes(config_from_dict(run.config), chosen, run.method, selected.method)
        out.append(Ghost(run, ghost_label(changes, run.id)))
        if len(out) == count:
            break
    return out


def start_run(preset: str, overrides: list[str], method: str, who: str,
              parent_id: str | None = None, supersede: bool = False) -> None:
    """Queue a run (a fork when `parent_id`), show it, and redraw. `supersede`: an automatic
    run, which cancels this session's previous automatic run if it is still going."""
    from dimalign.jobs import cancel, submit

    new = submit(store(), preset=preset, overrides=overrides, method=method, owner=who,
                 parent_id=parent_id)
    ensure_scheduler()
    if supersede:
        previous = st.session_state.get("_auto_run")
        if previous and store().get(previous).status in ACTIVE:
            cancel(store(), previous)
        st.session_state["_auto_run"] = new
    remember("run", new)
    st.rerun()
