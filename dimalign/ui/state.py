"""What a browser session remembers: values kept in the URL's query parameters and in the
session (preset, run, owner and its key), who the session is, and the experiment settings
this session chose."""

from __future__ import annotations

import hmac
import os
import secrets
from typing import NamedTuple

import streamlit as st

from dimalign.checked import DiskFull
from dimalign.store import (
    ADMIN_OWNER,
    Store,
    StoreError,
    check_owner,
    is_owner_key,
    is_reserved_owner,
    new_owner_key,
)


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


def follow(run_id: str) -> None:
    """The person's newest action (Run, Run on change, Fork, Resume, a click on a Tune point)
    made or restarted `run_id`: every run picker shows it from the next draw on, over an
    earlier pick (`widgets.pick_run`)."""
    remember("run", run_id)


class Identity(NamedTuple):
    """Who this browser session is. A participant: a display name (the owner of the runs the
    session starts) and that owner's key, both in the address. The instructor's view
    (`?admin=<DIMALIGN_ADMIN_KEY>`): every owner's runs, read-only; its key is "", which no
    owner has, so the engine refuses it every change too."""

    name: str
    key: str
    admin: bool = False

    @property
    def runs_of(self) -> str | None:
        """The owner whose runs this session lists; None: every owner's (the instructor)."""
        return None if self.admin else self.name


ADMIN_KEY_ENV = "DIMALIGN_ADMIN_KEY"


def owner() -> Identity:
    """This session's identity, from the address: `owner` (a display name) and `key` (its
    owner key), or `admin` (the instructor key). The first use of a name claims it with the
    address's key (a new one if the address has none); a name claimed with another key, a
    reserved or malformed name, or a wrong instructor key gets this session a fresh guest
    identity instead, and a notice (`owner_notice`) says why. Resolved once per session and
    again whenever the address changes them."""
    asked = (sticky("owner"), sticky("key"), sticky("admin"))
    known = st.session_state.get("_identity")
    if known is None or st.session_state.get("_identity_asked") != asked:
        known = _resolve(*asked)
        st.session_state["_identity"] = known
    if not known.admin:
        remember("owner", known.name)
        remember("key", known.key)
    st.session_state["_identity_asked"] = (sticky("owner"), sticky("key"), sticky("admin"))
    return known


def owner_notice() -> str | None:
    """Why this session's identity is not the one its address asked for, if it is not."""
    return st.session_state.get("_owner_notice")


def dismiss_owner_notice() -> None:
    st.session_state.pop("_owner_notice", None)


def _resolve(name: str | None, key: str | None, admin: str | None) -> Identity:
    if admin:
        expected = os.environ.get(ADMIN_KEY_ENV, "")
        if expected and hmac.compare_digest(admin.encode(), expected.encode()):
            return Identity(ADMIN_OWNER, "", admin=True)
        _forget("admin")
        _notice("The instructor key in this address " + (
            "is not this server's." if expected else
            f"does nothing here: this server has no {ADMIN_KEY_ENV}."))
    if not name:
        return _guest(store())
    chosen = key if is_owner_key(key) else new_owner_key()  # a new name's key, if it is new
    try:
        check_owner(name)
    except StoreError:  # not echoed: the address is anyone's text
        why = ("the name in this address is not allowed (1-64 letters, digits, '_', '.', '@' "
               "or '-', starting with a letter or digit)")
    else:
        if is_reserved_owner(name):
            why = f"`{name}` is a reserved name"
        elif store().claim_owner(name, chosen):
            return Identity(name, chosen)
        else:
            why = (f"the name `{name}` is taken, and this address does not carry its key (the "
                   "address where it was first used does)")
    guest = _guest(store())
    _notice(f"You are `{guest.name}` here: {why}.")
    return guest


def _guest(store: Store) -> Identity:
    """A fresh guest name (display only: 32 random bits) with a fresh key (128 bits)."""
    while True:
        name, key = f"guest-{secrets.token_hex(4)}", new_owner_key()
        if store.claim_owner(name, key):
            return Identity(name, key)


def _notice(text: str) -> None:
    previous = st.session_state.get("_owner_notice")
    st.session_state["_owner_notice"] = f"{previous} {text}" if previous else text


def forget(name: str) -> None:
    """Drop a value `sticky` keeps, from the URL and the session."""
    _forget(name)


def _forget(name: str) -> None:
    st.session_state.pop(f"_sticky_{name}", None)
    if name in st.query_params:
        del st.query_params[name]


def keep(key: str) -> None:
    """Widget callback: copy its value where a page switch does not clear it (widgets belong
    to a page; `_key` outlives them)."""
    st.session_state[f"_{key}"] = st.session_state[key]
