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


# The layers, bottom first, as docs/architecture.md lists them (its one ```layers block: a
# label, a colon, the layer's modules): a module imports only from its own layer or below
# (imports inside functions included), so the engine never reaches up into the app.
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def read_layers(path: Path = ARCHITECTURE) -> list[tuple[str, ...]]:
    """The module names of each layer, bottom first, from the document's ```layers block."""
    import re

    block = re.search(r"^```layers[ \t]*\n(.*?)^```[ \t]*$", path.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)
    assert block, f"{path.name} has no ```layers block: the layer list lives there"
    layers = [tuple(line.partition(":")[2].split()) for line in block.group(1).splitlines()
              if line.strip()]
    assert layers and all(layers), f"{path.name}: a line of the layers block names no module"
    return layers


LAYERS = read_layers()
FOLDERS = ("kinds", "ui", "pages")  # a layer's name for every module in that folder


def layer_of(module: str) -> int:
    """The layer of a module ("methods.loop", "ui.widgets", "pages.compare", ...)."""
    for depth, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name in FOLDERS and module.startswith(name + ".")):
                return depth
    raise AssertionError(f"{module} is in no layer: add it to the layers block of "
                         "docs/architecture.md")


def imported_modules(path: Path) -> set[str]:
    """The dimalign modules a file imports, anywhere in it, as names relative to dimalign."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] == "dimalign":
            base = node.module.removeprefix("dimalign").lstrip(".")
            for alias in node.names:  # `from dimalign import paths` imports a module
                child = f"{base}.{alias.name}".lstrip(".")
                found.add(child if (PACKAGE / (child.replace(".", "/") + ".py")).exists()
                          or (PACKAGE / child.replace(".", "/")).is_dir() else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("dimalign.") for a in node.names
                      if a.name.startswith("dimalign.")}
    return {m for m in found if m}


def test_every_module_imports_only_from_its_layer_or_below():
    files = {m.removeprefix("dimalign."): PACKAGE / Path(*m.split(".")[1:]).with_suffix(".py")
             for m in package_modules() if m != "dimalign"}
    files = {name: (path if path.exists() else path.with_suffix("") / "__init__.py")
             for name, path in files.items()}
    files.update({f"pages.{p.stem}": p for p in (ROOT / "pages").glob("*.py")})
    files["app"] = ROOT / "app.py"
    upward = [f"{name} (layer {layer_of(name)}) imports {dep} (layer {layer_of(dep)})"
              for name, path in sorted(files.items())
              for dep in sorted(imported_modules(path)) if layer_of(dep) > layer_of(name)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_back_through_others():
    """No import cycle, imports inside functions included: within a layer, imports may go any
    way, so a circle (`a` imports `b`, which imports `a`) is looked for here."""
    files = {m.removeprefix("dimalign."): PACKAGE / Path(*m.split(".")[1:]).with_suffix(".py")
             for m in package_modules() if m != "dimalign"}
    files = {name: (path if path.exists() else path.with_suffix("") / "__init__.py")
             for name, path in files.items()}
    graph = {name: imported_modules(path) - {name} for name, path in files.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path that comes back to its start, if the graph has one."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for dep in sorted(graph.get(node, ())):
            if (cycle := visit(dep, [*path, node])) is not None:
                return cycle
        done.add(node)
        return None

    return next((c for n in sorted(graph) if (c := visit(n, [])) is not None), None)


def test_the_cycle_check_finds_a_circle():
    assert find_cycle({"jobs": {"worker"}, "worker": {"ray_backend"},
                       "ray_backend": {"jobs"}}) == ["jobs", "worker", "ray_backend", "jobs"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pages_reach_the_engine_only_through_the_ui_package():
    """One route from pages to the engine: every action a page takes goes through `ui` (its
    runs module), never `jobs`, the scheduler or a worker directly."""
    engine = {"jobs", "daemon", "scheduler", "worker", "job", "kinds", "ray_backend", "sweep"}
    for page in sorted((ROOT / "pages").glob("*.py")):
        reached = {m for m in imported_modules(page) if m.split(".")[0] in engine}
        assert not reached, f"{page.name} imports {sorted(reached)}: go through dimalign.ui"
