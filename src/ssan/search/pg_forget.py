"""Erasure in the PostgreSQL store: delete the selected rows, renumber the rest, mark their sources."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Optional

from ssan._time import iso
from ssan.errors import SsanError
from ssan.search.forget import Selection


def _single(conn, selection: Selection, content: Optional[str]) -> Optional[tuple]:
    """The WHERE clause of a --track or --image selection (checked against the store), or None."""
    tracks = content == "tracks"
    for name, wanted in (("track", True), ("image", False)):
        row = getattr(selection, name)
        if row is None:
            continue
        if tracks != wanted:
            raise SsanError(f"--{name} {row}: this index holds {'tracks' if tracks else 'images'}")
        count = conn.execute("SELECT count(*) FROM ssan_items").fetchone()[0]
        if not 0 <= row < count:
            raise SsanError(f"--{name} {row}: no such id (the index holds {count})")
        return "pos = %s", [row]
    return None


def _where(conn, selection: Selection, content: Optional[str]) -> tuple:
    single = _single(conn, selection, content)
    if single is not None:
        return single
    parts, params = ["TRUE"], []
    if selection.camera is not None:
        parts.append("camera = %s")
        params.append(selection.camera)
    if selection.before is not None:
        parts.append("utc_end < %s")  # NULL (no wall-clock time) is never before
        params.append(selection.before)
    return " AND ".join(parts), params


def forget_rows(conn, selection: Selection, content: Optional[str]) -> list:
    """Delete what ``selection`` picks (inside the caller's transaction); returns the removed entries."""
    where, params = _where(conn, selection, content)
    gone = [r[0] for r in conn.execute(f"DELETE FROM ssan_items WHERE {where} RETURNING entry", params)]
    if not gone:
        return gone
    conn.execute("SET CONSTRAINTS ssan_items_pos DEFERRED")
    conn.execute(
        "UPDATE ssan_items SET pos = r.n FROM (SELECT id, row_number() OVER (ORDER BY pos) - 1 AS n "
        "FROM ssan_items) r WHERE ssan_items.id = r.id AND ssan_items.pos <> r.n"
    )
    counts: dict = {}
    for entry in gone:
        counts[entry.get("video")] = counts.get(entry.get("video"), 0) + 1
    when = iso(datetime.now().astimezone())
    for path, count in counts.items():
        conn.execute(
            "UPDATE ssan_sources SET record = jsonb_set(record, '{forgotten}', jsonb_build_object('time', %s::text, "
            "'tracks', COALESCE((record->'forgotten'->>'tracks')::bigint, 0) + %s)) WHERE path = %s",
            (when, count, path),
        )
    conn.execute(
        "INSERT INTO ssan_forgotten (selection, items, sources) VALUES (%s, %s, %s)",
        (json.dumps(selection.describe()), len(gone), json.dumps(counts)),
    )
    conn.execute("UPDATE ssan_meta SET generation = generation + 1")
    return gone
