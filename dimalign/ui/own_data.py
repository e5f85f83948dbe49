"""A person's own data on the Experiment page: an image folder, a model and a checkpoint, typed
as paths under the server's data roots (`paths.web_path`) or uploaded (`uploads`). The web is a
trust boundary: a typed path is checked before anything reads it, every time; an upload is
kept in its owner's area, and the page then uses the path the server made, never typed text."""

from __future__ import annotations

import streamlit as st

from dimalign.checked import DiskFull
from dimalign.config import DEFAULT_PRESET, build_config
from dimalign.errors import ConfigError
from dimalign.paths import PathError, web_path
from dimalign.store import StoreError
from dimalign.ui.state import sticky


def uploaded_paths(owner: str) -> set[str]:
    """The paths this session's uploads made for `owner`: the only paths outside the data roots
    a page may name, and never shown in its text boxes (they would show the server's home)."""
    return st.session_state.setdefault("_uploaded", {}).setdefault(owner, set())


def use_own_data(root: str, size: int, model: str, checkpoint: str, *, owner: str = "",
                 upload_zip=None, upload_checkpoint=None) -> None:
    """Button callback: switch this session's experiment to an image folder / model /
    checkpoint (all empty: back to the preset's data). Checked first: bad input leaves an
    error for the page to show and changes nothing. `upload_zip`, `upload_checkpoint`:
    Streamlit's UploadedFile, kept in `owner`'s area and used from there."""
    from dimalign.uploads import hide_server_paths, save_checkpoint, unpack_imagefolder

    made = uploaded_paths(owner)

    def checked(text: str, what: str) -> str:
        text = text.strip()
        return text if not text or text in made else web_path(text, what)

    try:
        root, checkpoint = checked(root, "The image folder"), checked(checkpoint, "The checkpoint")
        if upload_zip is not None and root and root not in made:
            raise PathError("give the image folder as a path or as a zip, not both")
        if upload_checkpoint is not None and checkpoint and checkpoint not in made:
            raise PathError("give the checkpoint as a path or as a file, not both")
        if upload_zip is not None:
            root = str(unpack_imagefolder(upload_zip.getvalue(), owner))
        if upload_checkpoint is not None:
            checkpoint = str(save_checkpoint(upload_checkpoint.getvalue(), owner))
    except (PathError, StoreError) as err:
        st.session_state["own_error"] = f"Not used: {hide_server_paths(str(err))}."
        return
    except (OSError, DiskFull) as err:  # a full disk while unpacking: nothing is kept
        why = "the disk is full" if isinstance(err, DiskFull) else err.strerror
        st.session_state["own_error"] = f"Not used: the upload could not be stored ({why})."
        return
    made.update(p for p, sent in ((root, upload_zip), (checkpoint, upload_checkpoint)) if sent)
    own = []
    if root:
        own += ["dataset=imagefolder", f"dataset_root={root}", f"image_size={size}",
                "scenario.kind=class", "scenario.classes=0"]
    if model.strip() and model.strip() != "auto":
        own.append(f"model={model.strip()}")
    if checkpoint:
        own.append(f"original_checkpoint={checkpoint}")
    try:
        build_config(sticky("preset") or DEFAULT_PRESET, own)
    except ConfigError as err:
        st.session_state["own_error"] = f"Not used: {hide_server_paths(str(err))}"
        return
    st.session_state["own_error"] = None
    st.session_state["own_data"], st.session_state["overrides"] = own, list(own)
