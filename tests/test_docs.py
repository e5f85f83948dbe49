"""The documents hold what they say: every `dimalign` command in a fenced bash block of README.md,
docs/*.md and bench/README.md parses with the real command line's parser (and its `--set`,
`--grid` and `--method` values are settings and methods that exist), every relative link points
to a file that exists (and its anchor to a heading there), every `make` target named in code
exists in the Makefile, and the README stays a front door of at most 200 lines.

Nothing here runs a command: it only parses it, so the whole file takes about as long as
importing dimalign's CLI.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from dimalign.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
README_MAX_LINES = 200
SHELLS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
# where a placeholder in a document is not a value argparse takes as it is
PLACEHOLDERS = {"N": "3", "M": "5", "S": "50"}
SHELL_STOPS = {">", ">>", "<", "|", "||", "&&", ";", "&", "2>", "2>&1"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced code block."""
    blocks, current = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if current is None and match:
            current = (match.group(3).lower(), number + 1, [], match.group(2))
        elif current is not None and line.strip().startswith(current[3][:3]) and \
                line.strip().strip(current[3][0]) == "":
            blocks.append(current[:3])
            current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code spans (which may span lines)."""
    lines, inside = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if inside is None and match:
            inside = match.group(2)
            lines.append("")
        elif inside is not None:
            if line.strip().startswith(inside[:3]) and line.strip().strip(inside[0]) == "":
                inside = None
            lines.append("")
        else:
            lines.append(line)
    return re.sub(r"(`+)(.+?)\1", "", "\n".join(lines), flags=re.DOTALL)


def outside_fences(text: str) -> list[str]:
    """The lines of `text` outside its fenced code blocks."""
    kept, inside = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if inside is None and match:
            inside = match.group(2)
        elif inside is not None:
            if line.strip().startswith(inside[:3]) and line.strip().strip(inside[0]) == "":
                inside = None
        else:
            kept.append(line)
    return kept


def code_spans(text: str) -> list[str]:
    """Every inline code span outside fenced blocks."""
    out = []
    for match in re.finditer(r"(`+)(.+?)\1", "\n".join(outside_fences(text)), flags=re.DOTALL):
        out.append(" ".join(match.group(2).split()))
    return out


def logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(index of its first line, the line) with `\\` continuations joined."""
    out, pending, start = [], "", None
    for index, line in enumerate(lines):
        start = index if start is None else start
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending, start = "", None
    if pending:
        out.append((start, pending))
    return out


def split_command(line: str) -> list[str] | None:
    """The arguments a line passes to `dimalign`, or None when it does not run dimalign:
    `dimalign ...`, `.venv/bin/dimalign ...`, `python -m dimalign ...`, after any VAR=value;
    a trailing comment and anything from a redirect or pipe on are left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    while tokens and re.fullmatch(r"[A-Za-z_]\w*=\S*", tokens[0]):
        tokens.pop(0)
    if not tokens:
        return None
    if tokens[0] == "dimalign" or tokens[0].endswith("/dimalign"):
        args = tokens[1:]
    elif re.fullmatch(r"(\S*/)?python3?", tokens[0]) and tokens[1:3] == ["-m", "dimalign"]:
        args = tokens[3:]
    else:
        return None
    for i, token in enumerate(args):
        if token in SHELL_STOPS:
            args = args[:i]
            break
    return [PLACEHOLDERS.get(a, a) for a in args]


def doc_commands() -> list[tuple[str, str, list[str]]]:
    """(where, the command as written, its arguments) for every dimalign command in a doc."""
    found = []
    for doc in DOCS:
        for language, first, lines in fenced_blocks(doc.read_text(encoding="utf-8")):
            if language not in SHELLS:
                continue
            for offset, line in logical_lines(lines):
                args = split_command(line)
                if args is not None:
                    found.append((f"{rel(doc)}:{first + offset}", " ".join(line.split()), args))
    return found


COMMANDS = doc_commands()


def strict_parser():
    """The command line's parser, taking options only spelled in full: argparse would take
    `--replicate` for `--replicates`, and a document should not teach the abbreviation."""
    parser = build_parser()
    for action in parser._actions:
        for sub in (getattr(action, "choices", None) or {}).values():
            if hasattr(sub, "allow_abbrev"):
                sub.allow_abbrev = False
    parser.allow_abbrev = False
    return parser


def parse(args: list[str]):
    """argparse's namespace for args, or pytest.fail with what argparse said."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return strict_parser().parse_args(args)
    except SystemExit as stop:
        if stop.code == 0 and ("--help" in args or "-h" in args):
            return None
        pytest.fail(f"does not parse: dimalign {shlex.join(args)}\n{err.getvalue()}")


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 40, [c[1] for c in COMMANDS]
    assert {args[0] for _, _, args in COMMANDS} >= {
        "presets", "run", "warm", "methods", "compare", "audit", "sweep", "submit", "runs",
        "watch", "cancel", "resume", "export", "scheduler"}


@pytest.mark.parametrize("where,line,args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_documented_command_parses(where, line, args):
    parse(args)


def overrides(ns) -> list[list[str]]:
    """The override lists a parsed command would build configs from: its --set values, and once
    per value of each --grid key."""
    sets = list(getattr(ns, "set", []) or [])
    grids = [g.split("=", 1) for g in getattr(ns, "grid", []) or []]
    if not grids:
        return [sets]
    return [sets + [f"{key}={value}"] for key, values in grids for value in values.split(",")]


@pytest.mark.parametrize("where,line,args", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_documented_setting_and_method_exists(where, line, args):
    """`--set`, `--grid`, `--preset`, `--method(s)` name real settings, presets and methods.
    Own data (a folder on someone's disk) and plugin methods (installed by the doc's reader) are
    checked by parsing alone."""
    from dimalign.config import build_config
    from dimalign.errors import ConfigError
    from dimalign.methods import get_method

    ns = parse(args)
    if ns is None or not hasattr(ns, "set") or getattr(ns, "fork", None):
        return
    methods = [getattr(ns, "method", None)] + (
        [] if getattr(ns, "methods", "all") == "all" else ns.methods.split(","))
    if any(m == "mymethod" for m in methods) or any("imagefolder" in s for s in ns.set):
        return
    for name in filter(None, methods):
        get_method(name)
    for values in overrides(ns):
        try:
            build_config(ns.preset, values)
        except ConfigError as error:
            pytest.fail(f"{where}: {line}\n{error}")


def test_the_check_catches_a_misspelled_option_and_reads_shell_lines():
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse(split_command(".venv/bin/dimalign run --preset digits-class --jsn"))
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        parse(split_command("dimalign compare --replicate 3"))  # abbreviated
    assert split_command("DIMALIGN_X=1 .venv/bin/dimalign runs | head -1  # quietly") == ["runs"]
    assert split_command("python -m dimalign run --help") == ["run", "--help"]
    assert split_command("ray start --head") is None
    assert logical_lines(["a \\", "  b", "c"]) == [(0, "a    b"), (2, "c")]
    assert make_targets_named('X=1 make bench NAME=m ARGS="--runs 3"  # one') == ["bench"]
    assert make_targets_named("make app PORT=8502; make test") == ["app", "test"]


def test_inline_commands_name_real_commands():
    """`dimalign X ...` in prose names a command that exists (the options there may be a
    usage summary, so only the command is checked)."""
    choices = next(a for a in build_parser()._actions if a.dest == "command").choices
    bad = []
    for doc in DOCS:
        for span in code_spans(doc.read_text(encoding="utf-8")):
            for match in re.finditer(r"(?:^|[\s(])dimalign\s+([a-z][\w-]*)", span):
                if match.group(1) not in choices:
                    bad.append(f"{rel(doc)}: `{span}`")
    assert not bad, "\n".join(bad)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose_with_headings(path.read_text(encoding="utf-8")):
        base = slug(line)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def prose_with_headings(text: str) -> list[str]:
    """The ATX headings outside fenced blocks, without their #s."""
    return [line.lstrip("#").strip() for line in outside_fences(text)
            if re.match(r"#{1,6}\s", line)]


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def test_every_relative_link_points_to_a_file_and_heading_that_exist():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][\w+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{rel(doc)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{rel(doc)}: {target} (no heading #{anchor} in {rel(path)})")
    assert not broken, "\n".join(broken)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for match in re.finditer(r"^([A-Za-z0-9_.$()/-][^:=#\n]*?)\s*:(?!=)", text, re.MULTILINE):
        targets |= {t for t in match.group(1).split() if not t.startswith(".")}
    return targets


def make_targets_named(snippet: str) -> list[str]:
    """The targets of each `make ...` in a line of shell (VAR=value arguments left out)."""
    lexer = shlex.shlex(snippet, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = snippet.split("#", 1)[0].split()
    out = []
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else None
        if token != "make" or not (before is None or before in SHELL_STOPS or
                                   re.fullmatch(r"[A-Za-z_]\w*=\S*", before)):
            continue
        for word in tokens[i + 1:]:
            if re.fullmatch(r"[A-Za-z_]\w*=.*", word, re.DOTALL):
                continue
            if not re.fullmatch(r"[\w][\w.-]*", word):
                break
            out.append(word)
    return out


def test_every_make_target_in_the_docs_exists():
    targets = makefile_targets()
    assert {"app", "test", "lock"} <= targets
    named, missing = set(), []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        code = code_spans(text) + [line for language, _, lines in fenced_blocks(text)
                                   if language in SHELLS for _, line in logical_lines(lines)]
        for snippet in code:
            for word in make_targets_named(snippet):
                named.add(word)
                if word not in targets:
                    missing.append(f"{rel(doc)}: make {word}")
    assert {"app", "test", "dev", "lock", "test-latest"} <= named
    assert not missing, "\n".join(missing)


def test_every_benchmark_the_docs_run_exists():
    """`python -m bench NAME` and `bench/FILE` name a benchmark that is there."""
    named, missing = set(), []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for name in re.findall(r"-m bench ([a-z]\w*)", text):
            named.add(name)
            if not (ROOT / "bench" / f"{name}.py").exists():
                missing.append(f"{rel(doc)}: python -m bench {name}")
        missing += [f"{rel(doc)}: {path}" for path in re.findall(r"\bbench/[\w/]+\.(?:py|sh)\b",
                                                                   text)
                    if not (ROOT / path).exists()]
    assert len(named) >= 10
    assert not missing, "\n".join(missing)


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into "
        "docs/")
