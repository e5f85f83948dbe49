"""The Chromium the end-to-end tests drive: found, or installed when missing.

Why: tests/test_e2e.py needs a real browser, and a bare machine has none. `make test` runs this
file first; the test calls find() itself, so both agree on which browser it is. Order: one
already on PATH; else Debian's package (as root, where apt-get exists); else Playwright's own
build (`python -m playwright install chromium`); else one message naming the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MISSING = ("no Chromium for the browser tests: install one with `apt-get install -y chromium` "
           "(as root) or `.venv/bin/python -m playwright install chromium`")


def playwright_chromium() -> str | None:
    """The browser `playwright install chromium` downloaded, if it did."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p:
        path = p.chromium.executable_path
    return path if os.path.exists(path) else None


def find() -> str | None:
    for name in CANDIDATES:
        if path := shutil.which(name):
            return path
    return playwright_chromium()


def main() -> int:
    if not find() and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
                       env=env)
    if not find():
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"])
    if path := find():
        print(f"browser tests: {path}")
        return 0
    print(MISSING, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
