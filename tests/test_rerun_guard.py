"""The guard on Streamlit's rerun race (dimalign/ui/rerun_guard.py): a fragment's timer tick
that arrives while the session's ScriptRunner has stopped is dropped; everything else reaches
Streamlit's own `request_rerun`."""

from types import SimpleNamespace

from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.runtime.app_session import AppSession
from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequests

from dimalign.ui import rerun_guard


def _session(stopped: bool):
    requests = ScriptRequests()  # Streamlit's own: STOP once its runner has nothing left
    if stopped:
        requests.on_scriptrunner_ready()
    return SimpleNamespace(_scriptrunner=SimpleNamespace(_requests=requests))


def _requests_through(session, client_state) -> bool:
    seen = []
    rerun_guard.guarded(lambda s, c=None: seen.append(c))(session, client_state)
    return bool(seen)


def test_a_tick_is_dropped_only_while_the_runner_has_stopped():
    tick = ClientState(fragment_id="f1", is_auto_rerun=True)
    assert not _requests_through(_session(stopped=True), tick)
    assert _requests_through(_session(stopped=False), tick)
    assert _requests_through(SimpleNamespace(_scriptrunner=None), tick)  # no runner: a new one


def test_clicks_full_reruns_and_a_fragments_own_widgets_always_go_through():
    stopped = _session(stopped=True)
    assert _requests_through(stopped, None)
    assert _requests_through(stopped, ClientState(is_auto_rerun=False))
    assert _requests_through(stopped, ClientState(fragment_id="f1", is_auto_rerun=False))


def test_the_guard_wraps_streamlits_method_once():
    assert rerun_guard.install() and rerun_guard.install()  # imported with dimalign.ui too
    method = AppSession.request_rerun
    assert getattr(method, rerun_guard.MARK)
    assert not getattr(method.__wrapped__, rerun_guard.MARK, False)  # Streamlit's, once
