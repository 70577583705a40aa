"""README.md and docs/*.md stay true: every ``ssan ...`` command line parses, every relative link resolves.

Command lines come from fenced shell blocks (backslash continuations joined, comments dropped, ``&&``/``;``
chains split) and from inline code. Each is checked with the real parser, ``ssan.cli.build_parser()``, without
running anything: the sub-command must exist and every flag must be one of its options. Fenced commands written
as runnable lines are also parsed whole (required arguments relaxed, since docs elide them), so a value outside a
flag's choices or a flag missing its value fails too. Usage synopses (``[--split test|val]``), inline mentions
(``ssan index --video``) and placeholder values (``CKPT``, ``...``) are checked for their flags only.
HTML comments are skipped: they hold notes for the people editing the page, not commands for readers.

A command added to ``ssan.cli.COMMANDS`` is known here at once; nothing in this file lists the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$",
    re.M | re.S,
)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
SEPARATORS = {"&&", "||", ";", "|", "&"}
SYNOPSIS_MARKS = re.compile(r"[\[\](){}]|\\\|")
PLACEHOLDER = re.compile(r"^(\.\.\.|<[^>]*>|[A-Z][A-Z0-9_]*(?:[./:-][A-Z0-9_.]*)*|.*\|.*)$")
NEGATIVE_NUMBER = re.compile(r"^-\d+(\.\d*)?$")


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    args: tuple  # the words after ``ssan``
    runnable: bool  # a fenced line written to be run as is (parsed whole), not a synopsis or an inline mention

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: ssan {' '.join(self.args)}"


# ---------------------------------------------------------------- finding the commands


def _mask(text: str, spans) -> str:
    """Blank out ``spans`` (keeping newlines) so that line numbers stay right for what remains."""
    chars = list(text)
    for start, end in spans:
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _join_continuations(body: str, first_line: int) -> Iterator[tuple]:
    """Yield (line number, logical line) with backslash-newline continuations joined."""
    pending, start = "", first_line
    for number, line in enumerate(body.split("\n"), first_line):
        if not pending:
            start = number
        if line.rstrip().endswith("\\") and not line.rstrip().endswith("\\\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def _shell_words(line: str) -> Optional[List[str]]:
    """Shell words of one logical line, comments dropped and ``&&``/``;``/``|`` as words of their own."""
    line = re.sub(r"^\s*\$\s+", "", line)  # a console prompt
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: prose or output, not a command
        return None


def _ssan_invocations(words: List[str]) -> Iterator[List[str]]:
    """The argument lists of every ``ssan ...``, ``python -m ssan ...`` or ``torchrun ... -m ssan ...``."""
    segment: List[str] = []
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            segment.append(word)
            continue
        while segment and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", segment[0]):  # VAR=value ssan ...
            segment.pop(0)
        if segment[:1] == ["ssan"]:
            yield segment[1:]
        else:
            for i in range(len(segment) - 1):
                if segment[i] == "-m" and segment[i + 1] == "ssan":
                    yield segment[i + 2 :]
                    break
        segment = []


def find_commands(text: str, page: str) -> List[Command]:
    """Every ssan command line in one Markdown page."""
    text = _mask(text, [m.span() for m in HTML_COMMENT.finditer(text)])
    commands: List[Command] = []
    fenced = list(FENCE.finditer(text))
    for block in fenced:
        if block.group("lang").lower() not in SHELL_LANGUAGES:
            continue
        for number, line in _join_continuations(block.group("body"), _line_of(text, block.start("body"))):
            synopsis = bool(SYNOPSIS_MARKS.search(_strip_quoted(line)))
            words = line.split() if synopsis else _shell_words(line)
            for args in _ssan_invocations(words or []):
                commands.append(Command(page, number, tuple(args), runnable=not synopsis))
    prose = _mask(text, [m.span() for m in fenced])
    for span in INLINE.finditer(prose):
        code = span.group(2).replace("\n", " ").strip()
        for args in _ssan_invocations(code.split()):
            commands.append(Command(page, _line_of(prose, span.start()), tuple(args), runnable=False))
    return commands


def _strip_quoted(line: str) -> str:
    """The line without its quoted strings (a query may hold brackets)."""
    return re.sub(r"'[^']*'|\"[^\"]*\"", "''", line)


# ---------------------------------------------------------------- checking them with the real parser


class DocCommandError(Exception):
    pass


def _raise(message: str):
    raise DocCommandError(message)


def _subparsers(parser: argparse.ArgumentParser) -> Optional[argparse._SubParsersAction]:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _relax(parser: argparse.ArgumentParser) -> None:
    """Docs elide required arguments: make every one optional and make errors raise instead of exiting."""
    parser.error = _raise
    parser.exit_on_error = False
    for group in parser._mutually_exclusive_groups:
        group.required = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _relax(child)
            continue
        action.required = False
        if not action.option_strings and action.nargs in (None, "+"):
            action.nargs = "?" if action.nargs is None else "*"


@functools.cache
def cli_parser() -> argparse.ArgumentParser:
    from ssan.cli import build_parser

    parser = build_parser()
    _relax(parser)
    return parser


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def check_flags(parser: argparse.ArgumentParser, args: tuple) -> None:
    """The sub-command exists and every flag is one of its options (synopsis syntax and placeholders allowed)."""
    words = [w for raw in args for w in re.split(r"\\?\|", raw.strip("[](){}"))]
    words = [w for w in words if w]
    current, path, skip = parser, ["ssan"], False
    for word in words:
        if skip and not word.startswith("-"):
            skip = False
            continue
        skip = False
        if word.startswith("-") and len(word) > 1 and not NEGATIVE_NUMBER.match(word):
            flag = word.split("=", 1)[0]
            action = current._option_string_actions.get(flag)
            if action is None:
                known = sorted(s for s in current._option_string_actions if s.startswith("--"))
                raise DocCommandError(f"{' '.join(path)} has no option {flag} (it has: {', '.join(known)})")
            skip = "=" not in word and _takes_value(action)
            continue
        sub = _subparsers(current)
        if sub is not None:  # the (next level of) sub-command; a leaf's positionals are not checked here
            if word not in sub.choices:
                if PLACEHOLDER.match(word):
                    return  # ``ssan COMMAND --help``: nothing to check
                raise DocCommandError(f"{' '.join(path)} has no sub-command {word!r} (known: {', '.join(sub.choices)})")
            current, path = sub.choices[word], [*path, word]


def check_parses(parser: argparse.ArgumentParser, args: tuple) -> None:
    """The whole line parses: no unknown word, every value accepted (placeholders aside)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _, unknown = parser.parse_known_args(list(args))
    except SystemExit as exc:  # --help or --version: printed and exited cleanly
        if exc.code not in (0, None):
            raise DocCommandError(f"the parser exited with status {exc.code}") from None
        return
    except (DocCommandError, argparse.ArgumentError) as exc:
        value = re.search(r"(?:invalid .*?value|invalid choice): '([^']*)'", str(exc))
        if value and PLACEHOLDER.match(value.group(1)):
            return  # a placeholder where a value goes; the flags were checked
        raise DocCommandError(str(exc)) from None
    if unknown:
        raise DocCommandError(f"not understood by the parser: {' '.join(unknown)}")


def check_command(command: Command) -> None:
    if not command.args or command.args[0] == "...":
        return
    parser = cli_parser()
    check_flags(parser, command.args)
    if command.runnable:
        check_parses(parser, command.args)


def relative_links(text: str) -> List[tuple]:
    """(line, target) of every link that is not a URL, an e-mail address or an anchor on the same page."""
    text = _mask(text, [m.span() for m in HTML_COMMENT.finditer(text)])
    text = _mask(text, [m.span() for m in FENCE.finditer(text)])
    text = _mask(text, [m.span() for m in INLINE.finditer(text)])
    links = [(m.start(), m.group(1)) for m in LINK.finditer(text)]
    links += [(m.start(), m.group(1)) for m in REFERENCE_LINK.finditer(text)]
    found = []
    for offset, target in links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        found.append((_line_of(text, offset), target))
    return found


# ---------------------------------------------------------------- the pages


def _all_commands() -> List[Command]:
    found = [c for page in PAGES for c in find_commands(page.read_text(encoding="utf-8"), page.name)]
    return [c for c in found if c.args]  # a bare `ssan` names the package


COMMANDS = _all_commands()


def test_the_pages_hold_commands_to_check():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 5
    assert len([c for c in COMMANDS if c.runnable]) > 30
    assert {c.args[0] for c in COMMANDS if c.args} >= {"demo", "index", "search", "serve", "train", "test"}


def test_the_readme_stays_short_and_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README.md is a two-minute read: move details to docs/"
    first_block = FENCE.search(text).group("body").split("\n")
    assert first_block[:2] == ['pip install -e ".[dev]" && ssan demo', "python -m pytest"]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command_line_parses(command):
    try:
        check_command(command)
    except DocCommandError as exc:
        pytest.fail(f"{command}\n  {exc}", pytrace=False)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_to_files(page):
    broken = []
    for line, target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(f"{page.name}:{line}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


# ---------------------------------------------------------------- the checker itself can fail


SAMPLE = """# A page

```bash
ssan index --checkpoint CKPT --images photos \\
    --out my-index   # one index
pip install -e . && ssan search --index my-index "a man (tall) [sic]" -k 5
torchrun --standalone --nproc_per_node 2 -m ssan train --config synth --data ... --output runs/x
```

Inline: `ssan prepare --dataset`, `ssan test --checkpoint CKPT [--split test\\|val]`, not `ssan.cli`.

<!-- later: `ssan no-such-command --here` -->
"""


def test_commands_are_found_in_blocks_chains_modules_and_inline_code():
    found = [(c.line, c.args, c.runnable) for c in find_commands(SAMPLE, "sample.md")]
    assert found == [
        (4, ("index", "--checkpoint", "CKPT", "--images", "photos", "--out", "my-index"), True),
        (6, ("search", "--index", "my-index", "a man (tall) [sic]", "-k", "5"), True),
        (7, ("train", "--config", "synth", "--data", "...", "--output", "runs/x"), True),
        (10, ("prepare", "--dataset"), False),
        (10, ("test", "--checkpoint", "CKPT", "[--split", "test\\|val]"), False),
    ]
    for command in find_commands(SAMPLE, "sample.md"):
        check_command(command)


@pytest.mark.parametrize(
    "line, complaint",
    [
        ("ssan serach --index x q", "no sub-command 'serach'"),
        ("ssan index --checkpoint c --indx x --out o", "no option --indx"),
        ("ssan search --index x q --topk 3", "no option --topk"),
        ("ssan index --checkpoint c --images i --out o --kind exact", "invalid choice"),
        ("ssan search --index x q -k", "expected one argument"),
        ("ssan index --images a --data b --out o", "not allowed with"),
        ("ssan search --index x one two", "unrecognized arguments: two"),
    ],
)
def test_a_wrong_command_line_fails(line, complaint):
    (command,) = find_commands(f"```bash\n{line}\n```\n", "bad.md")
    with pytest.raises(DocCommandError, match=re.escape(complaint)):
        check_command(command)


def test_a_wrong_flag_in_inline_code_or_a_synopsis_fails():
    for text in ("`ssan index --indx`", "```\nssan test --checkpoint CKPT [--splt test|val]\n```\n"):
        (command,) = find_commands(text, "bad.md")
        with pytest.raises(DocCommandError, match="has no option"):
            check_command(command)


def test_broken_relative_links_are_found():
    text = "[a](docs/a.md#x) [b](https://x.org/y) [c](#here) ![d](img/d.png)\n`[e](no.md)`\n[f]: ../f.md\n"
    assert [t for _, t in relative_links(text)] == ["docs/a.md#x", "img/d.png", "../f.md"]
