"""Tracks in PostgreSQL with pgvector: one store that many services (on many machines) share.

:class:`PostgresStore` is the :class:`ssan.search.store.TrackStore` of a ``postgresql://`` URL.
Entries keep a dense position ``pos`` (0..N-1, in the order they were added), the id the
service and ``ssan forget --track`` use, exactly as the row numbers of an index folder: an
erasure renumbers the rest. Embeddings are pgvector ``vector``s compared by inner product
(``<#>``, the SSAN similarity of flattened features); an index of kind ``flat`` is scanned
exactly, the other kinds get an HNSW index (``m``, ``ef_construction`` and ``ef_search`` from
the index spec). Camera and time filters are SQL conditions; the HNSW scan is iterative
(``hnsw.iterative_scan = relaxed_order``) and, when it still returns fewer than k, the query
is repeated as an exact scan, so k results come back whenever k tracks match. A filter that
keeps at most ``EXACT_BELOW`` rows is searched exactly at once (the camera/time index finds
them; scoring them all beats walking a graph for the few that match).

Connections come from a pool (:mod:`ssan.search.pg_pool`): a database that went away raises
:class:`ssan.search.errors.StoreUnavailable` (one line; the service answers 503) and the next request after it is
back gets a fresh connection. Writes take a transaction-level advisory lock.
"""

from __future__ import annotations

import getpass
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ssan._time import iso
from ssan.errors import SsanError
from ssan.search import pg_schema
from ssan.search.errors import GalleryIndexError
from ssan.search.filters import TrackFilter
from ssan.search.forget import Selection
from ssan.search.pg_pool import guarded

log = logging.getLogger(__name__)

_WRITE_LOCK = 0x55A5  # pg_advisory_xact_lock key of every write
EXACT_BELOW = 20000  # a filter keeping at most this many rows is searched exactly (cheaper, and exact)


def _vector(values) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def _where(filters: Optional[TrackFilter]) -> tuple:
    """SQL conditions and their parameters for ``filters`` (unknown times never match a window)."""
    parts, params = ["TRUE"], []
    if filters and filters.cameras:
        parts.append("camera = ANY(%s)")
        params.append(list(filters.cameras))
    if filters and filters.after is not None:
        parts.append("utc_end >= %s")
        params.append(filters.after)
    if filters and filters.before is not None:
        parts.append("utc_start <= %s")
        params.append(filters.before)
    return " AND ".join(parts), params


class PostgresStore:
    """The tracks (or images) of one PostgreSQL database; see the module docstring.

    Args:
        url: a libpq URL (``postgresql://user@host:5432/db``).
        exact: scan every vector even where an HNSW index exists (the exact search option).
    """

    def __init__(self, url: str, exact: bool = False):
        self.url, self.exact = url, exact
        self._migrated = False

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """A store from a URL whose ``ssan_search=exact`` query parameter (ours, not libpq's) asks for exact scans."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = dict(q for q in query if q[0] == "ssan_search")
        if ours.get("ssan_search", "hnsw") not in ("hnsw", "exact"):
            raise SsanError(f"ssan_search={ours['ssan_search']!r} in the store URL: use hnsw or exact")
        rest = urlencode([q for q in query if q[0] != "ssan_search"], safe="/")
        return cls(urlunsplit(parts._replace(query=rest)), exact=ours.get("ssan_search") == "exact")

    def __repr__(self) -> str:
        return f"PostgresStore({self.url.split('@')[-1]!r})"

    def connection(self):
        """A pooled connection (a context manager); StoreUnavailable when the database cannot be reached."""
        return guarded(self, migrate=not self._migrated)

    def exists(self) -> bool:
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM ssan_meta").fetchone()[0] == 1

    def meta(self) -> dict:
        """The index metadata (as in ``meta.json``) with its sources, without the entries."""
        with self.connection() as conn:
            row = conn.execute("SELECT meta FROM ssan_meta").fetchone()
            if row is None:
                raise GalleryIndexError(f"{self!r} holds no index yet; build one with `ssan index --store URL`")
            sources = [r[0] for r in conn.execute("SELECT record FROM ssan_sources ORDER BY path")]
        return {**row[0], "sources": sources}

    def stamp(self) -> tuple:
        """What changes when entries are added or forgotten: (generation, count)."""
        with self.connection() as conn:
            return tuple(conn.execute("SELECT generation, (SELECT count(*) FROM ssan_items) FROM ssan_meta").fetchone())

    def count(self) -> int:
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM ssan_items").fetchone()[0]

    def add(self, entries: list, vectors: np.ndarray, sources: list, new_meta: dict) -> int:
        """Append ``entries`` with their N x F ``vectors`` and update ``sources`` by path; returns the new count."""
        vectors = np.asarray(vectors, dtype=np.float32)
        with self.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            dim, hnsw = self._ensure_meta(conn, new_meta, vectors.shape[1])
            if vectors.shape[1] != dim:
                raise GalleryIndexError(f"{self!r} holds {dim}-wide vectors, got {vectors.shape[1]}-wide ones")
            start = conn.execute("SELECT count(*) FROM ssan_items").fetchone()[0]
            with conn.cursor().copy(
                "COPY ssan_items (pos, camera, utc_start, utc_end, entry, embedding) FROM STDIN"
            ) as copy:
                for offset, (entry, vector) in enumerate(zip(entries, vectors)):
                    times = (entry.get("utc_start"), entry.get("utc_end"))
                    row = (start + offset, entry.get("camera"), *times, json.dumps(entry), _vector(vector))
                    copy.write_row(row)
            if start == 0:
                pg_schema.build_hnsw(conn, dim, hnsw)
            for source in sources:
                conn.execute(
                    "INSERT INTO ssan_sources VALUES (%s, %s) "
                    "ON CONFLICT (path) DO UPDATE SET record = EXCLUDED.record",
                    (source["path"], json.dumps(source)),
                )
            conn.execute("UPDATE ssan_meta SET generation = generation + 1")
            return start + len(entries)

    def _ensure_meta(self, conn, new_meta: dict, dim: int) -> tuple:
        """The store's vector width and its HNSW parameters (None: exact scans only)."""
        row = conn.execute("SELECT meta FROM ssan_meta").fetchone()
        if row is not None:
            return self._hnsw(row[0])
        meta = {k: v for k, v in new_meta.items() if k not in ("entries", "sources", "files")}
        conn.execute("INSERT INTO ssan_meta (meta) VALUES (%s)", (json.dumps(meta),))
        pg_schema.set_dimension(conn, dim)
        return dim, self._hnsw(meta)[1]

    @staticmethod
    def _hnsw(meta: dict) -> tuple:
        params = meta["index"]["params"]
        hnsw = {"m": params.get("hnsw_m", 16), "ef_construction": params.get("ef_construction", 64)}
        return int(meta["layout"]["dim"]), None if meta["index"]["kind"] == "flat" else hnsw

    def search(self, queries: np.ndarray, k: int, filters: Optional[TrackFilter] = None):
        """Top-k ``(scores, rows)`` (Q x k', padded with -inf / -1) among the tracks ``filters`` keeps."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self.connection() as conn:
            found = [self._nearest(conn, q, int(k), filters) for q in queries]
        width = max((len(f) for f in found), default=0)
        scores = np.full((len(found), width), -np.inf, dtype=np.float32)
        rows = np.full((len(found), width), -1, dtype=np.int64)
        for i, hits in enumerate(found):
            rows[i, : len(hits)] = [h[0] for h in hits]
            scores[i, : len(hits)] = [h[1] for h in hits]
        return scores, rows

    def _nearest(self, conn, query: np.ndarray, k: int, filters: Optional[TrackFilter]) -> list:
        where, params = _where(filters)
        exact = self.exact or (filters and self._matching(conn, where, params) <= EXACT_BELOW)
        sql = (
            f"WITH hits AS MATERIALIZED (SELECT pos, embedding <#> %s AS d FROM ssan_items WHERE {where} "
            "ORDER BY embedding <#> %s LIMIT %s) SELECT pos, -d FROM hits ORDER BY d, pos"
        )
        args = (_vector(query), *params, _vector(query), k)
        ef_search = int(self._params(conn).get("ef_search", 40))
        hits = self._run(conn, sql, args, exact=exact, ef_search=max(ef_search, k))
        if len(hits) < k and not exact:  # the graph scan gave up early: fewer than k, or fewer match
            hits = self._run(conn, sql, args, exact=True, ef_search=ef_search)
        return hits

    @staticmethod
    def _matching(conn, where: str, params: list) -> int:
        """How many rows a filter keeps, counted up to EXACT_BELOW + 1 (the camera/time index answers it)."""
        sql = f"SELECT count(*) FROM (SELECT 1 FROM ssan_items WHERE {where} LIMIT %s) kept"
        return conn.execute(sql, (*params, EXACT_BELOW + 1)).fetchone()[0]

    def _params(self, conn) -> dict:
        if not hasattr(self, "_index_params"):
            row = conn.execute("SELECT meta->'index'->'params' FROM ssan_meta").fetchone()
            self._index_params = (row[0] if row else None) or {}
        return self._index_params

    @staticmethod
    def _run(conn, sql: str, args: tuple, exact: bool, ef_search: int) -> list:
        with conn.transaction():
            if exact:
                conn.execute("SET LOCAL enable_indexscan = off")
            else:
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                conn.execute(f"SET LOCAL hnsw.ef_search = {int(min(ef_search, 1000))}")
            return conn.execute(sql, args).fetchall()

    def entry(self, pos: int) -> Optional[dict]:
        with self.connection() as conn:
            row = conn.execute("SELECT entry FROM ssan_items WHERE pos = %s", (int(pos),)).fetchone()
        return row[0] if row else None

    def entries_at(self, positions) -> dict:
        """``{pos: entry}`` of the given positions, in one query (those no longer held are absent)."""
        with self.connection() as conn:
            rows = conn.execute("SELECT pos, entry FROM ssan_items WHERE pos = ANY(%s)", ([int(p) for p in positions],))
            return dict(rows.fetchall())

    def entries(self) -> Iterator[dict]:
        with self.connection() as conn, conn.transaction(), conn.cursor(name="ssan_entries") as cursor:
            cursor.execute("SELECT entry FROM ssan_items ORDER BY pos")
            for (entry,) in cursor:
                yield entry

    def has_identities(self) -> bool:
        """Whether any entry carries a person identity (an image index made from a labelled dataset)."""
        with self.connection() as conn:
            sql = "SELECT EXISTS (SELECT 1 FROM ssan_items WHERE entry->>'id' IS NOT NULL)"
            return conn.execute(sql).fetchone()[0]

    def cameras(self) -> list:
        with self.connection() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT camera FROM ssan_items WHERE camera IS NOT NULL")]

    def forget(self, selection: Selection, who: str = "ssan forget", audit=None, quiet_if_none: bool = False) -> dict:
        """Remove the entries ``selection`` picks, renumber the rest, record it; see :func:`ssan.search.forget`."""
        from ssan.search.pg_forget import forget_rows

        with self.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            gone = forget_rows(conn, selection, self._content(conn))
            report = {"items": len(gone), "crops": _remove_crops(gone)}
            report["left"] = conn.execute("SELECT count(*) FROM ssan_items").fetchone()[0]
            record = {"time": iso(datetime.now().astimezone()), "user": getpass.getuser(), "command": who}
            record |= {"index": repr(self), "forgotten": selection.describe(), **report}
            if gone or not quiet_if_none:
                conn.execute("INSERT INTO ssan_audit (record) VALUES (%s)", (json.dumps(record),))
        if audit is not None and (gone or not quiet_if_none):
            audit.write(record)
        return report

    @staticmethod
    def _content(conn) -> Optional[str]:
        row = conn.execute("SELECT meta->>'content' FROM ssan_meta").fetchone()
        return row[0] if row else None

    def audit_records(self) -> list:
        with self.connection() as conn:
            return [r[0] for r in conn.execute("SELECT record FROM ssan_audit ORDER BY id")]


def _remove_crops(gone: list) -> int:
    """Delete the crop files (``.../crops/NAME``) of forgotten tracks that this machine holds."""
    removed = 0
    for entry in gone:
        path = Path(entry["path"])
        if entry.get("kind") == "track" and path.parent.name == "crops" and path.is_file():
            path.unlink()
            removed += 1
    return removed
