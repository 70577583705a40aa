"""The PostgreSQL store's schema, as numbered migrations applied once each, in order.

``ssan_schema`` records the versions applied. :func:`migrate` takes a transaction-level
advisory lock, so several services starting at once on one database apply each migration
exactly once; a database migrated by a newer ssan (a version this one does not know) is
refused by name rather than written to.

Tables (prefix ``ssan_``): ``meta`` (one row: the index metadata of
:mod:`ssan.search.index` without its entries and sources), ``sources`` (one record per
video or folder read, by path), ``items`` (one row per track or image: its dense position
``pos``, the service's id, camera, UTC start and end, the entry as JSON (boxes, frames,
crop location) and its embedding in pgvector), ``audit`` (the store's audit records) and
``forgotten`` (what each erasure removed: the selection and the counts, never the data).
"""

from __future__ import annotations

from typing import Optional

MIGRATIONS = (
    (
        1,
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE ssan_meta (one int PRIMARY KEY DEFAULT 1 CHECK (one = 1), meta jsonb NOT NULL,
                                generation bigint NOT NULL DEFAULT 0);
        CREATE TABLE ssan_sources (path text PRIMARY KEY, record jsonb NOT NULL);
        CREATE TABLE ssan_items (
            id bigserial PRIMARY KEY,
            pos bigint NOT NULL CONSTRAINT ssan_items_pos UNIQUE DEFERRABLE,
            camera text,
            utc_start timestamptz,
            utc_end timestamptz,
            entry jsonb NOT NULL,
            embedding vector NOT NULL
        );
        CREATE INDEX ssan_items_camera_time ON ssan_items (camera, utc_end);
        CREATE TABLE ssan_audit (id bigserial PRIMARY KEY, time timestamptz NOT NULL DEFAULT now(),
                                 record jsonb NOT NULL);
        CREATE TABLE ssan_forgotten (id bigserial PRIMARY KEY, time timestamptz NOT NULL DEFAULT now(),
                                     selection jsonb NOT NULL, items bigint NOT NULL, sources jsonb NOT NULL);
        """,
    ),
)
LATEST = MIGRATIONS[-1][0]
_LOCK_KEY = 0x55A4  # pg_advisory_xact_lock key of the migrations


def migrate(conn) -> int:
    """Apply the migrations ``conn``'s database lacks (one transaction); returns the version it is at."""
    from ssan.search.errors import GalleryIndexError

    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS ssan_schema (version int PRIMARY KEY, applied timestamptz)")
        done = {row[0] for row in conn.execute("SELECT version FROM ssan_schema")}
        unknown = sorted(done - {v for v, _ in MIGRATIONS})
        if unknown:
            raise GalleryIndexError(
                f"the database is at schema version {max(unknown)}; this ssan knows up to {LATEST}: upgrade ssan"
            )
        for version, sql in MIGRATIONS:
            if version not in done:
                conn.execute(sql)
                conn.execute("INSERT INTO ssan_schema VALUES (%s, now())", (version,))
    return LATEST


def set_dimension(conn, dim: int) -> None:
    """Fix the embedding width (known at the first write)."""
    conn.execute(f"ALTER TABLE ssan_items ALTER COLUMN embedding TYPE vector({int(dim)})")


def build_hnsw(conn, dim: int, hnsw: Optional[dict]) -> None:
    """Build the HNSW index when it applies (after the first write's rows: a bulk build beats inserts).

    pgvector's HNSW takes vectors of at most 2,000 dimensions: wider ones are searched exactly.
    """
    if hnsw is not None and dim <= 2000:
        conn.execute("SET LOCAL maintenance_work_mem = '512MB'")  # the graph in memory while it is built
        conn.execute(
            "CREATE INDEX IF NOT EXISTS ssan_items_hnsw ON ssan_items USING hnsw (embedding vector_ip_ops) "
            f"WITH (m = {int(hnsw['m'])}, ef_construction = {int(hnsw['ef_construction'])})"
        )
