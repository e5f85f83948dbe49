"""A private Streamlit patch: a deep link on a fresh server opens inside app.py's frame.

Why it exists. app.py declares the pages with `st.navigation`, but they live in `pages/`, the
folder Streamlit's first multipage mode ("MPA v1") reads by itself. The first session of a
server sets the private class attribute `PagesManager.uses_pages_directory` to whether the
main script's folder has a `pages/` folder (True here), and while it is True every script run
goes through `script_runner._mpa_v1`: it lists `pages/*.py` itself and runs the page the URL
names, and app.py does not run. Only `st.navigation` (in app.py) sets it back to False.

What breaks without it. When a server's first visitor opens a deep link (a bookmarked workshop
address such as /unlearn?owner=...), that page runs without app.py's frame: page links named
after the files ("angles", not "Principal angles"), no wide layout, no icons. Since app.py
never runs, the mode then sticks for every session until someone opens the main page.
tests/test_e2e.py opens such a link on a fresh server.

The patch. A page that finds the flag set turns it off and reruns; the rerun goes through
app.py's `st.navigation` to the same page. Streamlit versions: the attribute came with
`st.navigation` (1.36); written for and checked on 1.67.0. A Streamlit without it leaves
`in_frame` a no-op, and tests/test_deeplink.py fails, telling whoever upgrades to check deep
links again.
"""

from __future__ import annotations

import streamlit as st


def _pages_manager():
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit that moved it: nothing to patch
        return None
    return PagesManager


def in_legacy_pages_mode() -> bool:
    """Whether Streamlit runs pages/ by itself (MPA v1), bypassing app.py."""
    manager = _pages_manager()
    return bool(getattr(manager, "uses_pages_directory", False))


def in_frame() -> None:
    """Leave Streamlit's pages/ mode and rerun through app.py (see the module docstring);
    nothing when the page already runs inside app.py's st.navigation."""
    if in_legacy_pages_mode():
        _pages_manager().uses_pages_directory = False
        st.rerun()
