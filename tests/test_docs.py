"""README.md and docs/: the README's size, links and anchors, `tiled-unet` commands and the scripts named.

Fast and offline: external links are only checked for form, commands are parsed by the real
argument parser (`tiled_unet.cli.main.build_parser`) and never run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import unicodedata
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tiled_unet.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_LIMIT = 15_000

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCRIPT = re.compile(r"(?<![\w/.-])((?:scripts|benchmarks|examples|tests|\.ci)/[\w./-]*\w)")
BENCH_NAME = re.compile(r"(?<![\w/.-])(bench_\w+\.py)\b")


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _split(page: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str, str]]]:
    """(prose lines, code lines) of a page: (line number, text) and (line number, language, text)."""
    prose, code = [], []
    fence, language = None, ""
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(1), line.strip()[3:].strip().lower()
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is not None:
            code.append((number, language, line))
        else:
            prose.append((number, line))
    assert fence is None, f"{_rel(page)}: a code block is not closed"
    return prose, code


def _strip_inline_code(text: str) -> str:
    return INLINE_CODE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|_)(\S.*?\S|\S)\1", r"\2", text)     # emphasis markers
    text = text.strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    prose, _ = _split(page)
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(result)


def _links(page: Path) -> list[tuple[int, str]]:
    prose, _ = _split(page)
    found = []
    for number, line in prose:
        text = _strip_inline_code(line)
        found += [(number, m.group(1)) for m in LINK.finditer(text)]
        found += [(number, m.group(1)) for m in AUTOLINK.finditer(text)]
    return found


def test_readme_is_short():
    size = README.stat().st_size
    assert size < README_LIMIT, f"README.md is {size:,} bytes; keep it under {README_LIMIT:,} (move detail to docs/)"


def test_slugs_follow_github():
    assert github_slug("Blockwise labelling of volumes larger than memory") == \
        "blockwise-labelling-of-volumes-larger-than-memory"
    assert github_slug("predict: class probabilities") == "predict-class-probabilities"
    assert github_slug("Instances: one ID per cell") == "instances-one-id-per-cell"
    assert github_slug("`tiled-unet` and *the* U-Net (2015)") == "tiled-unet-and-the-u-net-2015"


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the links of a page: relative links to missing files or headings, links
    outside the repository, external links that are not well-formed http(s) URLs (not fetched)."""
    problems = []
    for number, target in _links(page):
        where = f"{page.relative_to(root)}:{number}: {target}"
        parts = urlsplit(target)
        if parts.scheme:
            if parts.scheme not in ("http", "https", "mailto"):
                problems.append(f"{where}: unexpected scheme")
            elif parts.scheme != "mailto" and ("." not in parts.netloc or " " in target):
                problems.append(f"{where}: not a well-formed URL")
            continue
        path_part, _, fragment = target.partition("#")
        linked = page if not path_part else (page.parent / path_part).resolve()
        if not linked.is_relative_to(root):
            problems.append(f"{where}: points outside the repository")
        elif not linked.exists():
            problems.append(f"{where}: no such file ({linked.relative_to(root)})")
        elif fragment and linked.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif fragment and fragment not in anchors(linked):
            problems.append(f"{where}: no heading with the anchor #{fragment} in {linked.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_links_resolve(page: Path):
    problems = link_problems(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_link_check_catches_broken_links(tmp_path: Path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](other.md#a-section) [ok](#title) [ok](https://example.org/x)\n"
                    "[bad](missing.md) [bad](other.md#no-such-heading) [bad](#nope) [bad](https://nodot/x)\n"
                    "`[not a link](missing-in-code.md)`\n\n```\n[not a link](in-a-block.md)\n```\n",
                    encoding="utf-8")
    problems = link_problems(page, root=tmp_path)
    assert len(problems) == 4, problems
    assert [p.split(": ")[1] for p in problems] == ["missing.md", "other.md#no-such-heading", "#nope",
                                                   "https://nodot/x"]


# --- tiled-unet commands -------------------------------------------------------------------------

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}


def _logical_lines(code: list[tuple[int, str, str]]) -> list[tuple[int, str]]:
    """Shell lines of the code blocks with backslash continuations joined, and synopsis continuation lines
    (indented lines that start with '[') joined to the line they continue."""
    lines: list[tuple[int, str]] = []
    pending = None
    for number, language, text in code:
        if language not in SHELL_LANGUAGES:
            continue
        if pending is not None:
            start, head = pending
            text, number = head + " " + text.strip(), start
            pending = None
        elif lines and text[:1].isspace() and text.strip().startswith("[") and "tiled-unet" in lines[-1][1]:
            start, head = lines.pop()
            text, number = head + " " + text.strip(), start
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        lines.append((number, text))
    return lines


def _without_comment(line: str) -> str:
    """The line up to a shell comment ('#' at the start of a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _commands(line: str) -> list[str]:
    """The `tiled-unet ...` commands of one shell line (after `&&`, `;` or a leading `$ `)."""
    line = _without_comment(line).strip()
    line = line[2:] if line.startswith("$ ") else line
    found = []
    for part in re.split(r"\s(?:&&|\|\||;)\s", line):
        part = part.strip().rstrip("&").strip()
        first = part.split(maxsplit=1)[0] if part else ""
        if first.rsplit("/", 1)[-1] == "tiled-unet":
            found.append(part)
    return found


def _is_synopsis(command: str) -> bool:
    """A usage synopsis: `[optional]` parts, `A|B` choices or `N...` repetition outside quotes."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", command)
    return bool(re.search(r"[\[\]|]|\w\.\.\.", unquoted))


@lru_cache(maxsize=None)
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("tiled_unet.cli.main.build_parser has no sub-commands")


def _check_options(command: str, where: str) -> list[str]:
    """For synopses and fragments: the sub-command exists and every --option in the text is one of its."""
    words = command.split()
    if len(words) < 2 or words[1].startswith("-"):
        return [] if len(words) < 2 else _unknown_options(command, _parser(), where)
    sub = _subparsers().get(words[1])
    if sub is None:
        if words[1].isupper():          # a placeholder for the sub-command, e.g. `tiled-unet COMMAND --help`
            return []
        return [f"{where}: `{command}`: no sub-command {words[1]!r} (have {sorted(_subparsers())})"]
    return _unknown_options(command, sub, where)


def _unknown_options(command: str, parser: argparse.ArgumentParser, where: str) -> list[str]:
    known = {s for action in parser._actions for s in action.option_strings}
    return [f"{where}: `{command}`: {option} is not an option of `{parser.prog}`"
            for option in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", command) if option not in known]


def _parse(command: str, where: str) -> list[str]:
    """Parse a complete command with the real parser (nothing runs); a SystemExit is a failure."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        return [f"{where}: `{command}`: {err}"]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv[1:])
    except SystemExit as exit_:
        message = stderr.getvalue().strip().splitlines()[-1:] or [f"exit {exit_.code}"]
        return [f"{where}: `{command}`: {message[0]}"]
    return []


def _page_commands(page: Path) -> list[tuple[str, str]]:
    """(where, command) of every `tiled-unet` command in the page's code blocks."""
    _, code = _split(page)
    return [(f"{_rel(page)}:{number}", command)
            for number, line in _logical_lines(code) for command in _commands(line)]


def test_commands_are_found():
    """The extraction sees the README's set-up command and the docs' multi-line synopses."""
    readme = [command for _, command in _page_commands(README)]
    assert any(c.endswith("segment --sample nuclei-2d -o nuclei-2d-labels.tif --overwrite") for c in readme)
    synopses = [c for _, c in _page_commands(ROOT / "docs" / "cli.md") if _is_synopsis(c)]
    assert any("--drop-unseeded" in c and c.startswith("tiled-unet segment INPUT...") for c in synopses)


def test_checks_catch_wrong_commands():
    assert _parse("tiled-unet segment a.tif -o b.tif --no-such-option", "x")
    assert _parse("tiled-unet predict a.tif", "x")                        # -o is required
    assert _check_options("tiled-unet segment INPUT... [--no-such-option N]", "x")
    assert _check_options("tiled-unet segmnt INPUT", "x")
    assert not _parse("tiled-unet segment a.tif -o b.tif --seed-threshold 0.7", "x")
    assert not _check_options("tiled-unet train --images A... [--keep best|last]", "x")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_commands_parse(page: Path):
    """Every `tiled-unet` command in a code block parses with the real CLI parser. A usage synopsis
    (with `[...]`, `A|B` or `N...`, which no parser accepts as written) is checked instead for its
    sub-command and that every --option in it exists."""
    problems = []
    for where, command in _page_commands(page):
        problems += _check_options(command, where) if _is_synopsis(command) else _parse(command, where)
    assert not problems, "commands that do not parse:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_inline_commands_use_real_options(page: Path):
    """`tiled-unet ...` in inline code of the prose (often a fragment ending in `...`): its sub-command
    exists and every --option in it is one of that sub-command's."""
    prose, _ = _split(page)
    problems = []
    for number, line in prose:
        for match in INLINE_CODE.finditer(line):
            text = match.group(2).strip()
            if text.startswith("tiled-unet "):
                problems += _check_options(text, f"{_rel(page)}:{number}")
    assert not problems, "inline commands with unknown options:\n" + "\n".join(problems)


# --- scripts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_named_scripts_exist(page: Path):
    """Every `python scripts/X.py` / `python benchmarks/X.py` (and any scripts/, benchmarks/, examples/,
    tests/ or .ci/ path, or a bare bench_*.py name) the page mentions exists."""
    text = page.read_text(encoding="utf-8")
    missing = set()
    for path in SCRIPT.findall(text):
        path = path.rstrip(".")
        if not (ROOT / path).exists():
            missing.add(path)
    for name in BENCH_NAME.findall(text):
        if not (ROOT / "benchmarks" / name).exists():
            missing.add(f"benchmarks/{name}")
    for command in re.findall(r"\bpython3?\s+(\S+\.py)\b", text):
        if not (ROOT / command).exists():
            missing.add(command)
    assert not missing, f"{_rel(page)} names files that do not exist: {sorted(missing)}"
