"""requirements.lock against pyproject.toml: the lock `make app` and `make test` install from
names every dependency pyproject asks for, at a version its range allows, with hashes; and the
suite runs on exactly those versions."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def asked() -> dict[str, Requirement]:
    """pyproject's direct dependencies: the core ones and the extras `make` installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["dev"],
             *project["optional-dependencies"]["ray"]]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def locked(text: str | None = None) -> dict[str, dict]:
    """Each pin of the lock: its version, its hashes, and whether pyproject asks for it
    directly (pip-compile's `# via dimalign (pyproject.toml)`)."""
    text = (ROOT / "requirements.lock").read_text() if text is None else text
    pins, current = {}, None
    for line in text.splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = canonicalize_name(m.group(1))
            pins[current] = {"version": m.group(2), "hashes": [], "direct": False}
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current]["hashes"].append(h.group(1))
        elif current and "dimalign (pyproject.toml)" in line:
            pins[current]["direct"] = True
    return pins


def disagreements(requirements: dict[str, Requirement], pins: dict[str, dict]) -> list[str]:
    """What makes the lock not pyproject's: a dependency missing or outside its range, a pin
    without hashes, a direct pin pyproject no longer asks for."""
    out = []
    for name, req in requirements.items():
        pin = pins.get(name)
        if pin is None:
            out.append(f"{name} is not in the lock")
        elif not req.specifier.contains(Version(pin["version"]), prereleases=True):
            out.append(f"{name}=={pin['version']} is outside pyproject's {req.specifier}")
    out += [f"{name} has no hash" for name, pin in pins.items() if not pin["hashes"]]
    out += [f"{name} is locked as a direct dependency pyproject does not name"
            for name, pin in pins.items() if pin["direct"] and name not in requirements]
    return out


def test_the_lock_agrees_with_pyproject():
    assert disagreements(asked(), locked()) == [], "run `make lock`"


def test_a_lock_that_disagrees_is_caught():
    """The check itself: a pin outside its range, a missing one, one without hashes, a
    leftover direct one."""
    requirements = asked()
    pins = locked()
    stale = dict(pins)
    stale["streamlit"] = {**pins["streamlit"], "version": "99.0.0"}  # past the upper bound
    del stale["plotly"]
    stale["numpy"] = {**pins["numpy"], "hashes": []}
    stale["left-over"] = {"version": "1.0", "hashes": ["0" * 64], "direct": True}
    found = disagreements(requirements, stale)
    assert any(f.startswith("streamlit==99.0.0 is outside") for f in found), found
    assert "plotly is not in the lock" in found
    assert "numpy has no hash" in found
    assert any(f.startswith("left-over is locked as a direct") for f in found), found


def test_pyproject_bounds_the_ui_stack_at_its_tested_minor_versions():
    """streamlit, plotly and ray move under the UI: each has an upper bound, and the lock's
    version is in its last allowed minor release (the one tested)."""
    pins = locked()
    for name in ("streamlit", "plotly", "ray"):
        spec = asked()[name].specifier
        upper = [s for s in spec if s.operator == "<"]
        assert upper, f"{name} has no upper bound: {spec}"
        pinned, bound = Version(pins[name]["version"]), Version(upper[0].version)
        assert (pinned.major, pinned.minor + 1) == (bound.major, bound.minor), (name, spec)


def test_the_suite_runs_on_the_locked_versions():
    """What this interpreter has installed is what the lock pins (a venv that drifted from
    the lock would pass here on versions a fresh machine does not get)."""
    drift = []
    for name, pin in locked().items():
        try:
            have = version(name)
        except PackageNotFoundError:
            drift.append(f"{name} is not installed")
            continue
        if Version(have) != Version(pin["version"]):
            drift.append(f"{name} {have}, locked {pin['version']}")
    assert drift == [], "reinstall from the lock (rm .venv/.installed; make test)"
