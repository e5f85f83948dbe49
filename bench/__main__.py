"""`python -m bench NAME [args...]` runs one benchmark; `python -m bench` lists them, one line
each (its docstring's first line); `python -m bench NAME --help` gives its options."""

from __future__ import annotations

import ast
import importlib
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"__init__", "__main__", "common", "wire"}  # wire: a part of workshop


def benchmarks() -> dict[str, str]:
    """Name → the first line of its docstring, read without importing (no torch for a list)."""
    out = {}
    for path in sorted(HERE.glob("*.py")):
        if path.stem not in NOT_BENCHMARKS:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def listing() -> str:
    names = benchmarks()
    width = max(map(len, names))
    return "\n".join([
        "usage: python -m bench NAME [args...]    (python -m bench NAME --help: its options;",
        "       make bench NAME=... ARGS=\"...\")", "", "benchmarks:",
        *(f"  {name:<{width}}  {line}" for name, line in names.items())])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(listing())
        return 0
    name = argv[0].replace("-", "_")
    if name not in benchmarks():
        print(f"no benchmark {argv[0]!r}\n\n{listing()}", file=sys.stderr)
        return 2
    from bench import common

    common.COMMAND = shlex.join(["python", "-m", "bench", *argv])
    return importlib.import_module(f"bench.{name}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
