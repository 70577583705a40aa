"""The ``ssan`` command line: a thin dispatcher over :mod:`ssan.commands`.

Each sub-command lives in ``ssan/commands/<name>.py`` and exposes ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Errors derived from
:class:`ssan.errors.SsanError` become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Optional, Sequence

from ssan._version import __version__
from ssan.errors import SsanError

COMMANDS = ("demo", "synth", "synth-video", "prepare", "train", "test", "index", "search", "serve", "export")
COMMANDS += ("audit", "forget", "watch")  # deployments: the audit chain, erasure, live cameras

log = logging.getLogger("ssan")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssan", description="Text-to-image person re-identification (SSAN).")
    parser.add_argument("--version", action="version", version=f"ssan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"ssan.commands.{name.replace('-', '_')}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
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
        print(f"ssan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
