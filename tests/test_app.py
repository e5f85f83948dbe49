"""AppTest: the dashboard frame and its pages render without exceptions."""

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_experiment_page_shows_the_default_preset_and_its_splits(default_baselines):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="preset").value == "digits-class"
    assert at.title[0].value == "Experiment"
    assert len(at.get("image")) == 2  # forget and retain grids
    (chart,) = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["data"][0]["x"] == ["retain", "forget", "test"]
    table = at.dataframe[0].value
    assert list(table["status"]) == ["cached", "cached"]  # the session's trained default
    assert not at.info  # so no hint to train them


def test_switching_preset_updates_the_page_and_the_url():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="preset").set_value("digits-backdoor").run()
    assert not at.exception
    assert at.query_params["preset"] in ("digits-backdoor", ["digits-backdoor"])
    assert any("trigger" in m.value for m in at.markdown)


def test_missing_dataset_is_an_error_message_not_a_crash(monkeypatch, tmp_path):
    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    monkeypatch.setenv("DIMALIGN_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["preset"] = "cifar10-class"
    at.run()
    assert not at.exception
    assert any("Dataset 'cifar10'" in e.value for e in at.error)
