"""The ``ssan`` command line: a thin dispatcher over :mod:`ssan.commands`.

Each sub-command lives in ``ssan/commands/<name>.py`` and exposes ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Errors derived from
:class:`ssan.errors.SsanError` become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

from ssan._version import __version__
from ssan.errors import SsanError

COMMANDS = (
    "demo",
    "synth",
    "synth-video",
    "prepare",
    "train",
    "test",
    "index",
    "search",
    "serve",
    "export",
    "import-clip",
    "audit",
    "forget",
    "watch",
)

log = logging.getLogger("ssan")


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: unknown options are named (with the closest known one) before any
    "required argument" message, and leftovers are reported with this command's own usage."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        for word in args[: args.index("--") if "--" in args else len(args)]:
            if _unknown_option(self, word):
                self.error(f"unrecognized arguments: {word}{_closest(word.split('=')[0], self._option_string_actions)}")
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _unknown_option(parser: argparse.ArgumentParser, word: str) -> bool:
    found = parser._parse_optional(word)  # argparse's own reading: None for a value or a positional
    if isinstance(found, list):  # Python 3.12.7+: a list of candidate readings
        found = found[0] if len(found) == 1 else None
    return found is not None and found[0] is None


def _closest(word: str, names) -> str:
    match = difflib.get_close_matches(word, list(names), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def build_parser(commands: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The ``ssan`` parser; ``commands`` limits which sub-commands get their options (all by default).

    Every sub-command is listed either way: ``main`` adds the options of the one it runs only, so
    ``ssan --help`` does not import what the other commands' options need (torch, torchvision).
    """
    parser = argparse.ArgumentParser(prog="ssan", description="Text-to-image person re-identification (SSAN).")
    parser.add_argument("--version", action="version", version=f"ssan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    for name in COMMANDS:
        module = importlib.import_module(f"ssan.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if commands is None or name in commands:
            module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _command_word(argv: Sequence[str]) -> Optional[str]:
    """The sub-command named on the command line (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (robust to redirection)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler assigns it; the property always reads sys.stderr
        pass


def _configure_logging(verbose: bool) -> None:
    root = logging.getLogger("ssan")
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _end_progress_line() -> None:
    """Close the progress bars an interruption left open, ending their line on stderr."""
    std = sys.modules.get("tqdm.std")
    bars = [bar for bar in getattr(std.tqdm, "_instances", ()) if not bar.disable] if std else []
    for bar in bars:
        bar.disable = True  # closing must not clear or redraw the line: it shows how far the job got
    if bars:
        sys.stderr.write("\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    word = _command_word(argv)
    parser = build_parser([word] if word in COMMANDS else [])
    if word is not None and word not in COMMANDS:
        parser.error(f"unknown command {word!r}{_closest(word, COMMANDS)}; commands: {', '.join(COMMANDS)}")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    _configure_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except SsanError as exc:
        print(f"ssan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_line()
        print(f"ssan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
