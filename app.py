"""dimalign dashboard: the frame only (page config, shared sidebar, navigation over pages/)."""

import streamlit as st

st.set_page_config(page_title="dimalign", page_icon=":material/blur_on:", layout="wide")

pages = [
    st.Page("pages/experiment.py", title="Experiment", icon=":material/science:", default=True),
    st.Page("pages/unlearn.py", title="Unlearn (live)", icon=":material/play_circle:"),
    st.Page("pages/tune.py", title="Tune", icon=":material/tune:"),
    st.Page("pages/spectra.py", title="Eigenspectra", icon=":material/stacked_line_chart:"),
    st.Page("pages/angles.py", title="Principal angles", icon=":material/architecture:"),
    st.Page("pages/manifolds.py", title="Manifolds", icon=":material/scatter_plot:"),
    st.Page("pages/audit.py", title="Audit", icon=":material/fact_check:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
    st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
    st.Page("pages/room.py", title="Room", icon=":material/groups:"),
]
st.navigation(pages).run()
