"""A guard against one of Streamlit's races, installed once in the server process.

Streamlit 1.67 (`runtime/app_session.py`, `AppSession.request_rerun`, whose own comment
describes it): a fragment's rerun request that arrives after a full run's ScriptRunner has
stopped, but before the server's event loop has handled that runner's last events, starts a
new ScriptRunner at once; the old runner's remaining events, its "finished" among them, are then
ignored as coming from a non-current runner. The page keeps the previous draw's elements and
misses what the full run registered last, its live fragments included: in `bench workshop` with
20 pages on a busy browser core, one page in some rounds never showed its finished run.

Our fragments' timer ticks (`run_every`: the status line, the curves, the banner) are what
arrives there. A tick in that window is dropped here instead: the fragment ticks again within
seconds, by when the stopped runner's events are handled and a new runner starts cleanly.
Anything else (a click, a fragment's own widget) goes through as Streamlit decides."""

from __future__ import annotations

import functools

MARK = "_dimalign_rerun_guard"


def runner_stopping(session) -> bool:
    """Whether the session's current ScriptRunner has stopped taking requests (it would refuse a
    rerun, and Streamlit would start a second runner beside it)."""
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

    runner = getattr(session, "_scriptrunner", None)
    requests = getattr(runner, "_requests", None)
    return getattr(requests, "_state", None) == ScriptRequestType.STOP


def is_tick(client_state) -> bool:
    """A fragment's timer tick (not a person's click or a fragment's widget)."""
    return bool(client_state is not None and client_state.fragment_id
                and client_state.is_auto_rerun)


def guarded(request_rerun):
    @functools.wraps(request_rerun)
    def request(session, client_state=None):
        if is_tick(client_state) and runner_stopping(session):
            return None  # the next tick comes within seconds, after the old runner's events
        return request_rerun(session, client_state)

    setattr(request, MARK, True)
    return request


def install() -> bool:
    """Wrap `AppSession.request_rerun` once; False when this Streamlit has no such method or
    no ScriptRequestType (a version this guard does not know: it leaves it as it is)."""
    try:
        from streamlit.runtime.app_session import AppSession
        from streamlit.runtime.scriptrunner_utils.script_requests import (  # noqa: F401
            ScriptRequestType,
        )
    except ImportError:
        return False
    current = getattr(AppSession, "request_rerun", None)
    if current is None:
        return False
    if not getattr(current, MARK, False):
        AppSession.request_rerun = guarded(current)
    return True
