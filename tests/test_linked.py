"""The linked views' data (dimalign/linked_data.py) and the component's folder
(dimalign/ui/linked.py); the browser side is tested in tests/test_e2e.py."""

from __future__ import annotations

import json
import math
import os
import random
import threading

import torch

from dimalign.linked_data import (
    film_payload,
    for_browser,
    manifold_payload,
    sample_models,
    sample_track,
)
from dimalign.plots import PHASE_SHADES, track_figure


def fake_arrays(frames: int = 30, sizes=(300, 300, 150), seed: int = 0) -> dict:
    """A film in `dimalign.film.arrays`' format: forget samples fall onto the retain plane
    (residual 0.8 -> ~0.1) over the frames, retain and test samples stay near it."""
    rng = random.Random(seed)
    splits = [s for s, n in zip(("forget", "retain", "test"), sizes, strict=True)
              for _ in range(n)]
    n, steps = len(splits), [round(i * 120 / (frames - 1)) for i in range(frames)]
    start = [(rng.gauss(0, 1), rng.gauss(0, 1)) for _ in range(n)]

    def residual(t: int, i: int) -> float:
        base = 0.8 * (1 - t / max(1, frames - 1)) + 0.1 if splits[i] == "forget" else 0.15
        return round(base + 0.05 * math.sin(i + t), 4)

    ghost = {"x": [round(x, 4) for x, _ in start], "y": [round(y, 4) for _, y in start]}
    return {
        "projection": "linear (fake)", "k": 5, "steps": steps,
        "phases": ["start"] + ["forget" if s < 80 else "recover" for s in steps[1:]],
        "ids": list(range(n)), "rows": [7 * i for i in range(n)], "splits": splits,
        "labels": [i % 10 for i in range(n)],
        "x": [[round(x + 0.02 * t, 4) for x, _ in start] for t in range(frames)],
        "y": [[round(y - 0.01 * t, 4) for _, y in start] for t in range(frames)],
        "residual": [[residual(t, i) for i in range(n)] for t in range(frames)],
        "confidence": [[round(0.9 - 0.8 * t / frames * (s == "forget"), 4) for s in splits]
                       for t in range(frames)],
        "ghosts": {"original": {**ghost, "residual": [0.8 if s == "forget" else 0.15
                                                      for s in splits],
                                "confidence": [0.95] * n},
                   "retrained": {**ghost, "residual": [0.1] * n,
                                 "confidence": [0.05 if s == "forget" else 0.9
                                                for s in splits]}},
        "total": 120, "complete": True,
    }


CURVES = {"da": [(0, 0.2), (40, 0.5), (120, 0.9)], "acc_forget": [(0, 1.0), (120, float("nan"))],
          "loss_da": [(40, 1.0)], "phase_start": [(0, 1.0)], "phase_forget": [(40, 1.0), (80, 1.0)],
          "phase_recover": [(120, 1.0)]}


def test_film_payload_adds_the_strip_aligned_on_steps_without_nan_and_the_phase_spans():
    arrays = fake_arrays()
    payload = film_payload(arrays, CURVES, frame=99)
    assert {k: payload[k] for k in arrays} == arrays  # the film itself, untouched
    assert payload["curves"] == {"step": [0, 40, 120], "da": [0.2, 0.5, 0.9],
                                 "acc_forget": [1.0, None, None]}  # NaN: None (JSON has none)
    assert payload["spans"] == [["forget", 0, 80, PHASE_SHADES["forget"]],
                                ["recover", 80, 120, PHASE_SHADES["recover"]]]
    assert payload["frame"] == len(arrays["steps"]) - 1  # clamped to the film
    json.loads(json.dumps(payload, allow_nan=False))  # what the browser parses


def test_the_browser_gets_the_film_without_what_only_the_page_reads_and_a_seek_once():
    payload = film_payload(fake_arrays(), CURVES, seek={"step": 40.0, "nonce": 3})
    sent = for_browser(payload)
    assert "confidence" not in sent and "predicted" not in sent
    assert all("confidence" not in g and "x" in g for g in sent["ghosts"].values())
    assert {k: v for k, v in payload.items() if k not in ("confidence", "predicted", "ghosts")} \
        == {k: v for k, v in sent.items() if k != "ghosts"}
    assert sent["seek"] == {"step": 40, "nonce": 3}  # a step clicked on the page's curves
    assert payload["confidence"] and payload["ghosts"]["original"]["confidence"]  # kept here
    assert len(json.dumps(sent)) < 0.85 * len(json.dumps(payload))


def test_film_payload_takes_phases_from_the_frames_when_the_curves_have_none():
    arrays = fake_arrays(frames=5)  # steps 0, 30, 60, 90, 120: forget up to 60, then recover
    spans = film_payload(arrays, {"da": [(0, 0.1)]})["spans"]
    assert [s[:3] for s in spans] == [["forget", 0, 60], ["recover", 60, 120]]
    assert "frame" not in film_payload(arrays, {})
    every_step = {f"phase_{p}": [(s, 1.0) for s in range(i, 40, 2)]  # MUDA's epochs alternate
                  for i, p in enumerate(("forget", "recover"))}
    assert {s[0] for s in film_payload(arrays, every_step)["spans"]} == {""}  # shaded, unnamed
    every_step["phase_forget"] += [(s, 1.0) for s in range(40, 200, 2)]
    every_step["phase_recover"] += [(s, 1.0) for s in range(41, 200, 2)]
    assert film_payload(arrays, every_step)["spans"] == []  # too thin to shade


def test_a_sample_track_and_its_models_read_the_film():
    arrays = fake_arrays(frames=4)
    track = sample_track(arrays, 0)  # a forget sample: its residual falls
    assert [r["step"] for r in track] == arrays["steps"]
    assert track[0]["residual"] > track[-1]["residual"]
    assert [r["confidence"] for r in track] == [c[0] for c in arrays["confidence"]]
    models = sample_models(arrays, 0)
    assert [m["model"] for m in models] == ["original", "retrained", "unlearned (step 120)"]
    assert models[-1]["residual"] == arrays["residual"][-1][0]
    fig = track_figure(track)
    assert [t.name for t in fig.data] == ["residual", "confidence on its label"]


def test_manifold_payload_links_sample_i_across_the_three_panels():
    n = 6
    embedding = {
        "coords": {m: torch.arange(2 * n, dtype=torch.float32).reshape(n, 2) + k
                   for k, m in enumerate(("unlearned", "original", "retrained"))},
        "split": ["retain", "retain", "forget", "forget", "test", "test"],
        "rows": torch.tensor([5, 6, 7, 8, 1, 2]), "labels": torch.tensor([0, 1, 2, 2, 3, 4]),
        "predictions": {m: torch.tensor([0, 1, 9, 9, 3, 4])
                        for m in ("original", "retrained", "unlearned")},
        "reference": "retrained", "samples": n, "backend": "umap-learn"}
    embedding["coords"]["unlearned"][0, 0] = float("nan")
    payload = manifold_payload(embedding)
    assert payload["models"] == ["original", "retrained", "unlearned"]
    coords = payload["coords"]  # sample 2 in each panel: its own model's point
    assert coords["original"]["x"][2] == 5.0 and coords["retrained"]["y"][2] == 7.0
    assert payload["coords"]["unlearned"]["x"][0] is None
    assert payload["rows"] == [5, 6, 7, 8, 1, 2] and payload["splits"][2] == "forget"
    assert not payload["webgl"]
    json.loads(json.dumps(payload, allow_nan=False))


def test_the_component_folder_is_built_once_whole_even_by_racing_builders(tmp_path,
                                                                          monkeypatch):
    from dimalign.ui import linked

    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path))
    folders, errors = [], []

    def build():
        try:
            folders.append(linked.component_folder())
        except Exception as err:  # noqa: BLE001 - the assertion below names it
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(folders)) == 1, errors
    (folder,) = set(folders)
    assert folder.parent == tmp_path / "components" and folder.name.startswith("linked-")
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "linked.js",
                                                        "playground.js", "plotly.min.js"]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no half-built left
    js = folder / "plotly.min.js"
    assert js.stat().st_size == linked.plotly_js().stat().st_size
    assert (folder / "linked.js").read_bytes() == (linked.SOURCE / "linked.js").read_bytes()
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    assert linked.component_folder() == folder  # built: used as it is
    assert os.access(folder / "index.html", os.R_OK)


def test_a_changed_source_file_builds_a_new_folder(tmp_path, monkeypatch):
    from dimalign.ui import linked

    monkeypatch.setenv("DIMALIGN_HOME", str(tmp_path / "home"))
    first = linked.component_folder()
    source = tmp_path / "source"
    source.mkdir()
    for name in linked.OURS:
        (source / name).write_bytes((linked.SOURCE / name).read_bytes() + b"\n// changed\n")
    monkeypatch.setattr(linked, "SOURCE", source)
    second = linked.component_folder()
    assert second != first
    assert (second / "linked.js").read_bytes().endswith(b"// changed\n")
