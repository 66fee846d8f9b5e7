"""The docs stay true: every command they show parses with the real CLI, every link and path resolves.

README.md and docs/*.md are read as a newcomer would copy from them: each `orbitmesh ...` line in a
fenced shell block must parse with ``orbitmesh.cli.build_parser()`` (placeholders such as IMAGE or
PATH are fine as long as they parse), each ``python SCRIPT.py --flag`` must name a script that
exists and flags it accepts, and each relative link must point at a file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from orbitmesh.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]  # the repository (module level: the docs parametrize tests)
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
README_MAX_LINES = 250
# Shell operators that separate commands on one line (punctuation tokens of shlex).
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class ShellLine:
    """One logical command line of a fenced shell block (continuations joined)."""

    path: Path
    lineno: int  # 1-based line in the file where the command starts
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.lineno}: {self.text.strip()}"


def fenced_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """(language, line number of the first body line, body lines) of every ``` block in ``path``."""
    blocks, lang, start, body = [], None, 0, []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), n + 1, []
        elif fence:
            blocks.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{path.name}: unclosed code fence opened before line {start}"
    return blocks


def shell_lines(path: Path) -> list[ShellLine]:
    out = []
    for lang, start, body in fenced_blocks(path):
        if lang not in SHELL_LANGUAGES:
            continue
        pending, first = "", 0
        for i, line in enumerate(body):
            if not pending:
                first = start + i
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if text and not text.startswith("#"):
                out.append(ShellLine(path, first, text.removeprefix("$ ")))
    return out


def split_commands(text: str) -> list[list[str]]:
    """Shell-split ``text`` (quotes, comments) into the argv of each command joined by && ; | etc."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


def orbitmesh_argvs(line: ShellLine) -> list[list[str]]:
    """The arguments after `orbitmesh` (or `python -m orbitmesh`) of each command on the line."""
    found = []
    for argv in split_commands(line.text):
        if "orbitmesh" in argv:
            found.append(argv[argv.index("orbitmesh") + 1:])
    return found


ALL_LINES = [line for path in DOC_FILES for line in shell_lines(path)]
CLI_LINES = [line for line in ALL_LINES if orbitmesh_argvs(line)]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_helpers_split_real_shell_lines():
    """The extraction itself: quotes, comments, && chains, nice/python -m prefixes, continuations."""
    line = ShellLine(README, 1, 'pip install -e ".[test]" && orbitmesh generate a.png -o "my file.glb"  # note')
    assert orbitmesh_argvs(line) == [["generate", "a.png", "-o", "my file.glb"]]
    quoted = ShellLine(README, 1, """orbitmesh serve --token "$(python -c 'import s; print(1)')" --quiet""")
    assert orbitmesh_argvs(quoted) == [["serve", "--token", "$(python -c 'import s; print(1)')", "--quiet"]]
    assert orbitmesh_argvs(ShellLine(README, 1, "nice -n 5 python -m orbitmesh train c.toml")) == [["train", "c.toml"]]
    assert orbitmesh_argvs(ShellLine(README, 1, "hf download x --local-dir orbitmesh-models")) == []


def test_docs_show_commands():
    """Every doc page the README links to has real commands, so the parse test below has teeth."""
    assert len(DOC_FILES) >= 7, [p.name for p in DOC_FILES]
    assert len(CLI_LINES) >= 40, len(CLI_LINES)
    shown = {argv[0] for line in CLI_LINES for argv in orbitmesh_argvs(line) if argv}
    # Every registered command appears in at least one shell block of the docs.
    assert set(_subcommands(build_parser())) <= shown, set(_subcommands(build_parser())) - shown


@pytest.mark.parametrize("line", CLI_LINES, ids=lambda line: f"{line.path.name}:{line.lineno}")
def test_every_documented_orbitmesh_command_parses(line: ShellLine):
    parser = build_parser()
    commands = _subcommands(parser)
    for argv in orbitmesh_argvs(line):
        assert argv, f"bare `orbitmesh` with no command: {line.where()}"
        if not argv[0].startswith("-"):
            assert argv[0] in set(commands), f"unknown command {argv[0]!r} (known: {sorted(commands)}): {line.where()}"
        if argv[0] == "bench" and len(argv) > 1:
            benches = _subcommands(commands["bench"])
            assert argv[1] in set(benches), f"unknown bench {argv[1]!r} (known: {sorted(benches)}): {line.where()}"
        stderr, code = io.StringIO(), None
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(argv)
        except SystemExit as exc:
            code = exc.code
        if code is None:
            assert getattr(args, "func", None) is not None, f"parses but runs nothing: {line.where()}"
        else:
            # --version / --help print and exit 0; anything else is argparse refusing the line.
            assert code == 0 and {"--version", "--help", "-h"} & set(argv), \
                f"does not parse ({stderr.getvalue().strip()}): {line.where()}"


def test_parse_check_catches_a_wrong_flag():
    """The check above fails on a stale flag or command (it would not pass every line blindly)."""
    parser = build_parser()
    for argv in (["generate", "a.png", "--no-such-flag"], ["bench", "nope"], ["generate", "--mode", "slow"]):
        with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(argv)
        assert exc.value.code == 2


def _python_scripts() -> dict[str, list[tuple[ShellLine, list[str]]]]:
    """``python path/to/script.py ARGS`` commands in the docs, by script path."""
    scripts: dict[str, list[tuple[ShellLine, list[str]]]] = {}
    for line in ALL_LINES:
        for argv in split_commands(line.text):
            if len(argv) >= 2 and argv[0] in ("python", "python3") and argv[1].endswith(".py"):
                scripts.setdefault(argv[1], []).append((line, argv[2:]))
            if argv[0] == "blender" and "-P" in argv:
                scripts.setdefault(argv[argv.index("-P") + 1], [])
    return scripts


def test_documented_scripts_exist():
    scripts = _python_scripts()
    assert {"build.py", "benchmarks/sv3d_unet.py", "scripts/render_orbitmesh_views.py"} <= set(scripts)
    missing = [name for name in scripts if not (ROOT / name).is_file()]
    assert not missing, f"docs run scripts that do not exist: {missing}"


def test_documented_script_flags_exist():
    """Every --flag shown for `python SCRIPT.py` is one its --help lists (build.py, benchmarks/*.py)."""
    problems = []
    for name, uses in _python_scripts().items():
        flags = {a.split("=")[0] for _, argv in uses for a in argv if a.startswith("--")}
        if not flags:
            continue
        done = subprocess.run([sys.executable, str(ROOT / name), "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{name} --help failed: {done.stderr[-1500:]}"
        known = set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))
        problems += [f"{name} {flag}: " + next(line.where() for line, argv in uses if flag in argv)
                     for flag in sorted(flags - known)]
    assert not problems, "flags the scripts do not accept:\n" + "\n".join(problems)


def test_readme_lists_every_generate_setting():
    from orbitmesh.pipeline.request import cli_flag, settings_spec

    text = README.read_text(encoding="utf-8")
    missing = [cli_flag(name) for name in settings_spec() if f"`{cli_flag(name)}" not in text]
    assert not missing, f"README's generate flags miss {missing}"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/"


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the headings of ``path``."""
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path):
    """Links to other files (and #anchors in them) point at something that exists."""
    bad = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not bad, f"{path.relative_to(ROOT)}: broken links: {bad}"


def test_readme_links_every_doc_page():
    text = README.read_text(encoding="utf-8")
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(text) if t.startswith("docs/")}
    pages = {p.name for p in DOC_FILES if p != README}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


# `path/like/this.py` in backticks: a repository file, or a package file under backend/.
REPO_PATH = re.compile(r"`((?:backend|blender_addon|tests|benchmarks|scripts|configs|docs|orbitmesh)/[\w./-]*\w)`")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_mentioned_repository_paths_exist(path: Path):
    missing = []
    for name in REPO_PATH.findall(path.read_text(encoding="utf-8")):
        candidates = [ROOT / name, ROOT / "backend" / name]
        if not any(c.exists() for c in candidates):
            missing.append(name)
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    """True if ``dotted`` (orbitmesh.a.b.name) is an importable module or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _operator_ids() -> set[str]:
    """The add-on's Blender operator ids (``orbitmesh.generate`` ...), read from its source."""
    ids = set()
    for source in (ROOT / "blender_addon").rglob("*.py"):
        ids |= set(re.findall(r'bl_idname\s*=\s*"(orbitmesh\.\w+)"', source.read_text(encoding="utf-8")))
    return ids


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_named_python_objects_exist(path: Path):
    """`orbitmesh.x.y` in the text is a module or object of the package, or one of the add-on's operators;
    ``from orbitmesh... import a, b`` in Python blocks imports."""
    text = path.read_text(encoding="utf-8")
    operators = _operator_ids()
    assert "orbitmesh.generate" in operators
    missing = [name for name in sorted(set(re.findall(r"`(orbitmesh(?:\.[A-Za-z_]\w*)+)", text)))
               if name not in operators and not _resolves(name)]
    for lang, _, body in fenced_blocks(path):
        if lang != "python":
            continue
        for line in body:
            found = re.match(r"\s*from (orbitmesh[\w.]*) import ([\w, ]+)", line)
            if found:
                missing += [f"{found.group(1)}.{n.strip()}" for n in found.group(2).split(",")
                            if not _resolves(f"{found.group(1)}.{n.strip()}")]
    assert not missing, f"{path.relative_to(ROOT)} names what the package does not have: {missing}"
