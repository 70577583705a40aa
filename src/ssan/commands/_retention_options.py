"""Retention options shared by ``ssan serve`` and ``ssan watch``: --retain, --cameras, --retain-every."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssan.errors import SsanError

AUDIT_FILE = "audit.jsonl"


def add_retention_arguments(group) -> None:
    """--retain, --cameras, --retain-every (ssan serve and ssan watch)."""
    group.add_argument("--retain", metavar="DURATION", help="forget tracks older than this (30d, 12h; every camera)")
    group.add_argument("--cameras", metavar="YAML", help="cameras file: its `retain:` per camera overrides --retain")
    group.add_argument(
        "--retain-every", type=float, default=600.0, metavar="SECONDS", help="apply retention this often (default 600)"
    )


def retention_plan(args: argparse.Namespace) -> dict:
    """``{camera or None: timedelta}`` from --retain and --cameras (checked; empty: no retention)."""
    from ssan.search.retention import parse_duration
    from ssan.video.cameras import read_cameras, retention_of

    default = parse_duration(args.retain, "--retain") if args.retain else None
    retain = retention_of(read_cameras(args.cameras) if args.cameras else [], default)
    if retain and args.retain_every <= 0:
        raise SsanError(f"--retain-every must be positive, got {args.retain_every}")
    return retain


def start_retention(plan: dict, args: argparse.Namespace, index: str, audit, after=None):
    """A started :class:`ssan.search.retention.RetentionSchedule` (None without a plan); erasures always audited."""
    from ssan.search.audit import AuditLog
    from ssan.search.retention import RetentionSchedule

    if not plan:
        return None
    if audit is None and "://" not in str(index):  # a server store keeps its own audit table
        audit = AuditLog(Path(index) / AUDIT_FILE)
    return RetentionSchedule(index, plan, args.retain_every, audit=audit, after=after).start()
