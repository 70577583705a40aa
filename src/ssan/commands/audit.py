"""``ssan audit verify LOG``: check the hash chain of an audit log and its rotated files."""

from __future__ import annotations

import argparse

HELP = "check an audit log: `ssan audit verify LOG` exits 0 on an intact chain, 1 naming the first broken line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="verify the chain of LOG, LOG.1 ... (oldest first)")
    verify.add_argument("log", metavar="LOG", help="the audit log (e.g. INDEX/audit.jsonl)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssan.errors import SsanError
    from ssan.search.audit_chain import verify

    if not Path(args.log).is_file():
        raise SsanError(f"no audit log at {args.log}")
    verdict = verify(args.log)
    files = ", ".join(verdict.files)
    if not verdict.ok:
        print(f"broken chain: {verdict.problem}")
        return 1
    print(f"intact: {verdict.lines} lines in {files}; last hash {verdict.last_hash}")
    return 0
