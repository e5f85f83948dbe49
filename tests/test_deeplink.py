"""The private Streamlit patch in dimalign/ui/deeplink.py: a page run in Streamlit's pages/
mode (a fresh server's first visit on a deep link) leaves it and reruns through app.py.
tests/test_e2e.py checks the same in a real browser on a fresh server."""

from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest


def _page():
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    from dimalign.ui import deeplink

    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    if st.session_state["legacy"] and st.session_state["runs"] == 1:
        PagesManager.uses_pages_directory = True  # as Streamlit sets it when pages/ exists
    deeplink.in_frame()
    st.text(f"runs {st.session_state['runs']}, pages mode "
            f"{PagesManager.uses_pages_directory}")


def run_page(legacy: bool) -> AppTest:
    at = AppTest.from_function(_page, default_timeout=30)
    at.session_state["legacy"] = legacy
    at.run()
    assert not at.exception, at.exception
    return at


def test_streamlit_still_has_the_flag_the_patch_turns_off():
    # if this fails, Streamlit changed its internals: check deep links again (test_e2e)
    assert hasattr(PagesManager, "uses_pages_directory")


def test_a_page_in_pages_mode_turns_it_off_and_reruns_once():
    at = run_page(legacy=True)
    assert at.text[0].value == "runs 2, pages mode False"
    assert PagesManager.uses_pages_directory is False


def test_a_page_inside_the_frame_runs_once():
    at = run_page(legacy=False)
    assert at.text[0].value == "runs 1, pages mode False"
