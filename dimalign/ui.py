"""The only engine module that imports streamlit: the shared sidebar and error display."""

from __future__ import annotations

import streamlit as st

from dimalign.config import DEFAULT_PRESET, Config, ConfigError, build_config, load_preset
from dimalign.config import preset_names as _preset_names


@st.cache_data(show_spinner=False)
def preset_names() -> list[str]:
    return _preset_names()


def sidebar_config() -> Config | None:
    """Preset picker in the sidebar (kept in the URL); returns the validated config or None."""
    names = preset_names()
    wanted = st.query_params.get("preset", DEFAULT_PRESET)
    index = names.index(wanted) if wanted in names else names.index(DEFAULT_PRESET)
    with st.sidebar:
        st.markdown("### dimalign")
        st.caption("Machine unlearning, seen in feature space.")
        preset = st.selectbox("Preset", names, index=index, key="preset")
        description, _ = load_preset(preset)
        st.caption(description)
    st.query_params["preset"] = preset
    try:
        return build_config(preset)
    except ConfigError as err:
        st.error(f"This preset is invalid: {err}. Pick another preset or fix its settings file.")
        return None
