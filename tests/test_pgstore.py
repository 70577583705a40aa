"""The PostgreSQL + pgvector store on a real server: FAISS equality, HNSW recall, filters, migrations, outages."""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pytest

from ssan.search import ann
from ssan.search.builder import index_meta
from ssan.search.errors import StoreUnavailable
from ssan.search.filters import TrackFilter
from ssan.search.pgstore import PostgresStore
from ssan.search.store import open_store


class _Info:
    checkpoint, fingerprint, backend, height, width, max_length = "ckpt", "f" * 16, "torch", 32, 16, 20
    arch: dict = {}


def _meta(dim: int, kind: str) -> dict:
    layout = {"terms": ["global"], "widths": [dim], "dim": dim}
    return {
        **index_meta(_Info, layout, ann.IndexSpec(kind=kind, ef_search=16, hnsw_m=8), [], [], []),
        "content": "tracks",
    }


def _gallery(count: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = [
        {"path": f"/x/{i}.jpg", "kind": "track", "track": i, "camera": f"cam{i % 50}", "video": f"cam{i % 50}.mp4",
         "utc_start": f"2026-12-01T08:{i % 60:02d}:00Z", "utc_end": f"2026-12-01T08:{i % 60:02d}:30Z"}
        for i in range(count)
    ]  # fmt: skip
    return entries, vectors, rng.standard_normal((8, dim)).astype(np.float32)


def test_exact_search_equals_faiss_exact_and_hnsw_recall_is_reported(postgres_url, capsys):
    entries, vectors, queries = _gallery(600, 16)
    exact = open_store(postgres_url + "&ssan_search=exact")  # the URL asks for exact scans
    assert exact.exact and exact.url == postgres_url
    exact.add(entries, vectors, [], _meta(16, "hnsw"))
    flat, _ = ann.build(vectors, ann.IndexSpec(kind="flat"))
    want_scores, want_rows = ann.search(flat, ann.IndexSpec(kind="flat"), queries, 10, features=vectors)
    scores, rows = exact.search(queries, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    _, graph_rows = PostgresStore(postgres_url).search(queries, 10)
    recall = ann.recall_at_k(want_rows, graph_rows)
    with capsys.disabled():
        print(f"\npgvector HNSW (m=8, ef_search=16) recall@10 against exact on 600 x 16: {recall:.3f}")
    assert recall >= 0.8


def test_a_rare_camera_still_gives_k_results_through_the_graph(postgres_url, monkeypatch):
    from ssan.search import pgstore

    monkeypatch.setattr(pgstore, "EXACT_BELOW", 0)  # the graph path even for 12 matching rows
    entries, vectors, queries = _gallery(600, 16)
    store = PostgresStore(postgres_url)  # HNSW, ef_search 16: a plain graph scan sees 16 candidates, ~2 % match
    store.add(entries, vectors, [], _meta(16, "hnsw"))
    rare = TrackFilter(("cam7",))  # 12 of 600 (2 %)
    scores, rows = store.search(queries, 10, rare)
    assert rows.shape == (8, 10) and all(entries[r]["camera"] == "cam7" for r in rows.ravel())
    _, exact_rows = PostgresStore(postgres_url, exact=True).search(queries, 10, rare)
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(exact_rows, axis=1))
    assert store.search(queries[:1], 20, rare)[1].shape == (1, 12)  # all that match, no more


def test_migrations_apply_once_and_a_newer_schema_is_refused(postgres_url):
    import psycopg

    from ssan.search import pg_schema
    from ssan.search.errors import GalleryIndexError

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert pg_schema.migrate(conn) == pg_schema.migrate(conn) == pg_schema.LATEST
        assert conn.execute("SELECT count(*) FROM ssan_schema").fetchone()[0] == len(pg_schema.MIGRATIONS)
        conn.execute("INSERT INTO ssan_schema VALUES (999, now())")
        with pytest.raises(GalleryIndexError, match="schema version 999"):
            pg_schema.migrate(conn)


@pytest.mark.slow  # waits out the pool's 5 s connection timeout
def test_a_database_gone_gives_one_line_and_the_store_recovers(postgres_url, postgres_server):
    import psycopg

    entries, vectors, queries = _gallery(20, 8)
    store = PostgresStore(postgres_url, exact=True)
    store.add(entries, vectors, [], _meta(8, "flat"))
    name = urlsplit(postgres_url).path.lstrip("/")
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        with pytest.raises(StoreUnavailable, match="unavailable") as caught:
            store.search(queries, 3)
        assert "\n" not in str(caught.value)
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    assert store.search(queries, 3)[1].shape == (8, 3)  # the same object, no restart
