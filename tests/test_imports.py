"""Every module of dimalign imports on its own, in an interpreter that has imported no other
dimalign module, so an import circle cannot hide behind the order the suite happens to import
modules in.

One parent process (not this one: conftest has imported dimalign here) imports the heavy
third-party libraries once, then forks a child per module; each child imports its one module
and exits 0, or prints the traceback and exits 1. Libraries dimalign imports only inside
functions (scikit-learn, umap, torchvision) are left out of the parent: they cost seconds and
no module needs them at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dimalign"
PRELOAD = ("torch", "numpy", "pandas", "plotly.graph_objects", "streamlit")

PARENT = r'''
import importlib, os, sys, traceback
for name in sys.argv[2:]:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.split(".")[0] == "dimalign"], "parent imported dimalign"
modules, failed, running = sys.argv[1].split(","), [], {}

def reap():
    pid, status = os.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        failed.append(running[pid])
    del running[pid]

for module in modules:
    if len(running) >= max(2, os.cpu_count() or 1):
        reap()
    pid = os.fork()
    if pid == 0:  # the child: a fresh interpreter as far as dimalign is concerned
        code = 0
        try:
            importlib.import_module(module)
        except BaseException:
            sys.stderr.write(f"--- import {module} failed:\n{traceback.format_exc()}")
            code = 1
        sys.stderr.flush()
        os._exit(code)
    running[pid] = module
while running:
    reap()
print(",".join(failed))
'''


def package_modules() -> list[str]:
    """Every module under dimalign/, found by walking the folder (sub-packages included)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_walk_finds_the_package_its_subpackages_and_the_ui():
    names = package_modules()
    assert {"dimalign", "dimalign.config", "dimalign.errors", "dimalign.methods",
            "dimalign.methods.base", "dimalign.ui", "dimalign.__main__"} <= set(names)
    assert len(names) == len(set(names)) == len(list(PACKAGE.rglob("*.py")))


def test_every_module_imports_alone():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PARENT, ",".join(package_modules()), *PRELOAD],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    failed = proc.stdout.strip()
    assert not failed, f"these modules fail to import alone: {failed}\n{proc.stderr}"
    print(f"{len(package_modules())} modules imported alone in {seconds:.1f} s")
