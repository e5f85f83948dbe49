"""What a browser session remembers: values kept in the URL's query parameters and in the
session (preset, run, owner), and the experiment settings this session chose."""

from __future__ import annotations

import secrets

import streamlit as st

from dimalign.config import DEFAULT_PRESET, build_config
from dimalign.errors import ConfigError
from dimalign.store import StoreError, check_owner


def sticky(name: str) -> str | None:
    """A value kept in the URL and in the session: page switches clear the URL's query
    parameters, a reload clears the session; together they survive both."""
    value = st.query_params.get(name) or st.session_state.get(f"_sticky_{name}")
    if value:
        remember(name, value)
    return value


def remember(name: str, value: str) -> None:
    st.session_state[f"_sticky_{name}"] = value
    if st.query_params.get(name) != value:
        st.query_params[name] = value


def owner() -> str:
    """The workshop participant's id, kept in the URL so a reload keeps their runs."""
    try:
        current = sticky("owner")
        return check_owner(current) if current else _new_owner()
    except StoreError:
        return _new_owner()


def _new_owner() -> str:
    name = f"guest-{secrets.token_hex(3)}"
    remember("owner", name)
    return name


def keep(key: str) -> None:
    """Widget callback: copy its value where a page switch does not clear it (widgets belong
    to a page; `_key` outlives them)."""
    st.session_state[f"_{key}"] = st.session_state[key]


def use_own_data(root: str, size: int, model: str, checkpoint: str) -> None:
    """Button callback: switch this session's experiment to an image folder / model /
    checkpoint (all empty: back to the preset's data). Checked first: bad input leaves an
    error for the page to show and changes nothing."""
    own = []
    if root.strip():
        own += ["dataset=imagefolder", f"dataset_root={root.strip()}", f"image_size={size}",
                "scenario.kind=class", "scenario.classes=0"]
    if model.strip() and model.strip() != "auto":
        own.append(f"model={model.strip()}")
    if checkpoint.strip():
        own.append(f"original_checkpoint={checkpoint.strip()}")
    try:
        build_config(sticky("preset") or DEFAULT_PRESET, own)
    except ConfigError as err:
        st.session_state["own_error"] = f"Not used: {err}"
        return
    st.session_state["own_error"] = None
    st.session_state["own_data"], st.session_state["overrides"] = own, list(own)
