"""dimalign dashboard: the frame only (page config, shared sidebar, navigation over pages/)."""

import streamlit as st

st.set_page_config(page_title="dimalign", page_icon=":material/blur_on:", layout="wide")

pages = [st.Page("pages/experiment.py", title="Experiment", icon=":material/science:",
                 default=True)]
st.navigation(pages).run()
