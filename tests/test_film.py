"""The feature-space film (dimalign/methods/film.py, dimalign/film.py): an unlearning run
records its forget, retain and test sample at steps spread over the run, and the linear view
shows forgetting as the forget points falling onto the retain plane."""

import io
import json
import re
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from dimalign.config import build_config
from dimalign.film import linear_view, mean_residual
from dimalign.methods import REGISTRY
from dimalign.methods.film import schedule
from dimalign.methods.loop import unlearn


def test_a_run_records_at_least_the_frames_asked_or_every_step():
    assert schedule(10, 30) == list(range(11))  # fewer steps than frames: every step
    steps = schedule(1000, 30)
    assert len(steps) == 30 and steps[0] == 0 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    on_curves = schedule(1000, 30, every=20)  # telemetry every 20 steps: frames on its points
    assert len(on_curves) == 30 and all(s % 20 == 0 for s in on_curves) and on_curves[-1] == 1000
    assert schedule(1000, 30, every=400) == steps  # too few points for 30 frames: spread


FILM_RUN = ["train.epochs=2", "muda.epochs=4", "eval.film_forget=120", "eval.film_retain=120",
            "eval.film_test=60", "eval.film_frames=30"]


@pytest.fixture(scope="module")
def films(tiny_baselines):
    """A default MUDA run's film, and one with the DA loss off (λ_DA = 0)."""
    b = tiny_baselines
    out = {}
    for name, extra in (("default", []), ("no_da", ["muda.lambda_da=0"])):
        cfg = build_config("digits-class", [*FILM_RUN, *extra])
        result = unlearn(cfg, REGISTRY["muda"], b.experiment, b.original, b.device,
                         retrained=b.retrained)
        out[name] = (result, linear_view(result.film))
    return out


def test_muda_moves_the_forget_points_onto_the_retain_plane(films):
    result, view = films["default"]
    assert len(view["frames"]) >= min(30, result.steps + 1)
    assert [f["step"] for f in view["frames"]][0] == 0 and view["frames"][-1]["step"] == \
        result.steps
    forget, retain = mean_residual(view, "forget"), mean_residual(view, "retain")
    assert forget[-1] < forget[0], forget  # the forget features left their own directions
    assert abs(retain[-1] - retain[0]) <= 0.1 * retain[0], retain  # the retain ones stayed
    _, quiet = films["no_da"]
    moved = forget[0] - forget[-1]
    quiet_forget = mean_residual(quiet, "forget")
    assert quiet_forget[0] - quiet_forget[-1] < moved  # without DA, the forget points move less
    point = view["frames"][-1]["points"][0]
    assert set(point) == {"id", "row", "split", "label", "x", "y", "z", "residual",
                          "confidence"}
    assert {p["split"] for p in view["frames"][0]["points"]} == {"forget", "retain", "test"}


def test_the_film_command_writes_json_and_a_playable_html_animation(tmp_path, cli,
                                                                  tiny_baselines):
    ran = cli("run", "--method", "muda", "--set", "train.epochs=2", "--set", "muda.epochs=1",
              "--set", "eval.film_frames=30", "--json", "--fresh")
    assert ran.returncode == 0, ran.stderr
    folder = json.loads(ran.stdout)["artifacts"]
    shown = cli("film", folder, "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["projection"].startswith("linear") and view["frames"]
    page = tmp_path / "film.html"
    drawn = cli("film", folder, "--out", str(page))
    assert drawn.returncode == 0 and "mean residual outside the retain eigenspace" in drawn.stdout
    text = page.read_text()
    assert "addFrames" in text and "animate" in text and "scatter3d" in text
    gif = tmp_path / "film.gif"
    drawn = cli("film", folder, "--out", str(gif))
    assert drawn.returncode == 0, drawn.stderr
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == len(view["frames"])
    mp4 = tmp_path / "film.mp4"
    drawn = cli("film", folder, "--out", str(mp4))
    assert drawn.returncode == 0, drawn.stderr
    assert len(_decoded(mp4.read_bytes(), (640, 480))) == len(view["frames"])
    umap = cli("film", folder, "--umap", "--out", str(mp4))  # refused before any UMAP is made
    assert umap.returncode == 2 and "write the UMAP view as .html or .json" in umap.stderr
    bad = cli("film", folder, "--out", str(tmp_path / "film.png"))
    assert bad.returncode == 2 and "writes .html, .json, .gif or .mp4" in bad.stderr
    none = cli("film", str(tmp_path))
    assert none.returncode == 2 and "not a run" in none.stderr


def _synthetic_view(frames: int, ghosts: bool) -> dict:
    """Forget points sliding right and down onto the retain plane; one retain and one test."""
    def points(t: int) -> list[dict]:
        return [{"id": i, "row": i, "split": split, "label": i, "x": x + t, "y": 0.0,
                 "z": r, "residual": r, "confidence": 0.5}
                for i, (split, x, r) in enumerate((("forget", 0.0, 0.9 - 0.2 * t),
                                                   ("forget", 1.0, None),  # undefined: skipped
                                                   ("retain", -1.0, 0.1), ("test", 2.0, 0.2)))]

    view = {"projection": "linear", "k": 2,
            "frames": [{"step": 5 * t, "phase": "forget", "points": points(t)}
                       for t in range(frames)]}
    if ghosts:
        view["ghosts"] = {"original": points(0), "retrained": points(frames - 1)}
    return view


def test_the_film_gif_has_a_frame_per_step_fixed_axes_and_the_same_bytes_each_time(tmp_path):
    from dimalign.plots import film_gif, film_gif_bytes

    view = _synthetic_view(4, ghosts=True)
    data = film_gif_bytes(view)
    assert data == film_gif_bytes(view)  # deterministic
    path = film_gif(view, tmp_path / "film.gif", size=(320, 240))
    with Image.open(path) as im:
        assert im.size == (320, 240) and im.n_frames == 4
    old = _synthetic_view(4, ghosts=False)  # a film from before ghosts were recorded
    with Image.open(io.BytesIO(film_gif_bytes(old))) as im:
        assert im.n_frames == 4
        # fixed ranges: the axes (tick labels, frame box, legend) are the same pixels in every
        # frame; only the plot's contents and the caption change
        im.seek(0)
        first = im.convert("RGB")
        im.seek(3)
        last = im.convert("RGB")
    axes_strip = (0, 440, 640, 480)  # x tick labels and axis title below the plot
    assert first.crop(axes_strip).tobytes() == last.crop(axes_strip).tobytes()
    assert first.tobytes() != last.tobytes()
    with pytest.raises(ValueError, match="no frames"):
        film_gif_bytes({"projection": "linear", "frames": []})


def _decoded(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """An MP4 decoded back to RGB frames (F, H, W, 3) by the ffmpeg that encoded it."""
    from imageio_ffmpeg import get_ffmpeg_exe

    assert data[4:8] == b"ftyp"  # an ISO base media file: its first box is the file type
    done = subprocess.run([get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", "-",
                           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], input=data,
                          capture_output=True, check=True)
    w, h = size
    assert len(done.stdout) % (w * h * 3) == 0, "frames of another size"
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, h, w, 3)


def test_the_film_mp4_has_a_video_frame_per_film_frame_drawn_as_the_gif(tmp_path):
    from imageio_ffmpeg import get_ffmpeg_exe

    from dimalign.plots import _film_frames, film_mp4, film_mp4_bytes

    view = _synthetic_view(5, ghosts=True)
    path = film_mp4(view, tmp_path / "film.mp4", size=(321, 241), ms_per_frame=200)
    video = _decoded(path.read_bytes(), (320, 240))  # rounded down to even for yuv420p
    assert len(video) == 5
    drawn = np.stack([np.asarray(im.convert("RGB"), dtype=float)
                      for im in _film_frames(view, (320, 240))])
    # each video frame is its own film frame, barely changed by H.264 (the frames differ
    # from one another by more than the encoding does)
    error = np.abs(video[:, None] - drawn[None]).mean(axis=(2, 3, 4))  # (video, drawn)
    assert error[0, 0] < 1.0, error
    assert (error.argmin(axis=1) == np.arange(5)).all(), error
    probe = subprocess.run([get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           capture_output=True, text=True)
    assert re.search(r"h264 .*yuv420p.*, 5 fps", probe.stderr), probe.stderr
    assert _decoded(film_mp4_bytes(view), (640, 480)).shape == (5, 480, 640, 3)


def test_a_failing_video_encoder_says_so_in_one_line(tmp_path, monkeypatch):
    from dimalign.plots import film_mp4_bytes

    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho \"Unknown encoder 'libx264'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))  # imageio-ffmpeg's own override
    with pytest.raises(RuntimeError) as failed:
        film_mp4_bytes(_synthetic_view(3, ghosts=False))
    assert str(failed.value) == ("cannot write MP4: ffmpeg exited with status 1: Unknown "
                                 "encoder 'libx264'")
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="ffmpeg did not start") as failed:
        film_mp4_bytes(_synthetic_view(3, ghosts=False))
    assert "\n" not in str(failed.value)
    with pytest.raises(ValueError, match="no frames"):
        film_mp4_bytes({"projection": "linear", "frames": []})


def test_film_settings_are_checked_in_one_line():
    from dimalign.errors import ConfigError

    for setting, words in (("eval.film_frames=1", "0 (no film) or lie in 2..1000"),
                           ("eval.film_forget=0", "must lie in 1..5000")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            build_config("digits-class", [setting])
    assert build_config("digits-class", []).eval.film_frames == 30


def test_a_run_with_a_film_trains_bit_for_bit_as_one_without(tiny_baselines):
    b = tiny_baselines
    runs = [unlearn(build_config("digits-class", ["train.epochs=2", "muda.epochs=2",
                                                  f"eval.film_frames={frames}"]),
                    REGISTRY["muda"], b.experiment, b.original, b.device, retrained=b.retrained)
            for frames in (0, 30)]
    without, with_film = (r.model.state_dict() for r in runs)
    assert runs[0].film is None and runs[1].film is not None
    assert all(torch.equal(without[k], with_film[k]) for k in without)
    film = runs[1].film
    # the original ghost is the starting model: it sits on frame 0; the retrained one does not
    assert torch.allclose(film["ghost_view"]["original"]["x"], film["view"]["x"][0], atol=1e-4)
    assert not torch.equal(film["ghost_view"]["retrained"]["x"], film["view"]["x"][0])
    assert film["complete"] and film["total"] == runs[1].steps and film["k"] >= 1


def test_a_live_run_writes_its_film_at_once_then_at_most_once_a_second(tmp_path):
    from dimalign import checked
    from dimalign.kinds.base import Hooks, Job
    from dimalign.kinds.unlearn import LiveFilm

    handed = []
    hooks = Hooks(device=print, progress=print, say=print, telemetry=print,
                  artifact=lambda run, name, path: handed.append((run, name, path)),
                  cancelled=lambda: False)
    live = LiveFilm(Job("r1", "unlearn", "muda", "", {}, tmp_path), hooks)
    made = []

    def film(n):
        def bundle():
            made.append(n)
            return {"steps": list(range(n)), "complete": False}
        return bundle

    for n in (1, 2, 3):  # three frames within a second: the first is written, the rest wait
        live(film(n))
    assert made == [1] and handed == [("r1", "film", tmp_path / "film.pt")]
    assert checked.load_torch(tmp_path / "film.pt") == {"steps": [0], "complete": False}
    live.last -= LiveFilm.EVERY
    live(film(4))
    assert made == [1, 4] and len(checked.load_torch(tmp_path / "film.pt")["steps"]) == 4
