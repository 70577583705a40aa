"""``ssan forget``: remove tracks (or images) from an index for good, with an audit line."""

from __future__ import annotations

import argparse

HELP = "erase from an index: a camera's tracks, everything seen before a time, one track or one image"
AUDIT_FILE = "audit.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index", "--store", required=True, help="index folder (`ssan index`, `ssan watch`) or a postgresql:// URL"
    )
    parser.add_argument("--camera", metavar="NAME", help="every track of this camera (with --before: its older ones)")
    parser.add_argument("--before", metavar="TIME", help="every track that ended before TIME (ISO 8601 with zone)")
    parser.add_argument("--track", type=int, metavar="ID", help="one track, by the image_id of its search result")
    parser.add_argument("--image", type=int, metavar="ID", help="one image of an image index, by its image_id")
    parser.add_argument(
        "--audit-log", help=f"the audit log the erasure is recorded in (default: INDEX/{AUDIT_FILE}, as ssan serve)"
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssan._time import parse_time
    from ssan.errors import SsanError
    from ssan.search.audit import AuditLog
    from ssan.search.forget import Selection
    from ssan.search.store import is_url, open_store

    single = [name for name in ("track", "image") if getattr(args, name) is not None]
    if len(single) + bool(args.camera or args.before) != 1 or len(single) > 1:
        raise SsanError("say what to forget: --camera NAME and/or --before TIME, or one --track ID, or one --image ID")
    before = parse_time(args.before, "--before") if args.before else None
    selection = Selection(camera=args.camera, before=before, track=args.track, image=args.image)
    store = open_store(args.index)  # a server store also records the erasure in its own audit table
    default = None if is_url(args.index) else Path(args.index) / AUDIT_FILE
    audit = AuditLog(Path(args.audit_log)) if args.audit_log else AuditLog(default) if default else None
    try:
        report = store.forget(selection, audit=audit)
    finally:
        if audit is not None:
            audit.close()
    print(f"forgot {report['items']} item(s) and {report['crops']} crop file(s); {report['left']} left in {args.index}")
    return 0
