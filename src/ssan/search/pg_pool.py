"""Pooled connections to the PostgreSQL store, with connection failures turned into one clear line.

One pool (psycopg_pool) per URL per process, its connections in autocommit mode (each
``conn.transaction()`` is a real transaction, so ``SET LOCAL`` ends with it) and checked on
checkout, so a database that restarted costs no request more than the one that found it gone.
A connection that cannot be had raises :class:`ssan.search.errors.StoreUnavailable` naming the
server's own reason (the service answers 503); the schema is migrated on the first connection.
"""

from __future__ import annotations

import logging

from ssan._extras import require
from ssan.search import pg_schema
from ssan.search.errors import StoreUnavailable

_POOLS: dict = {}  # one pool per URL per process


def _pool(url: str):
    if url not in _POOLS:
        require("psycopg", "a postgresql:// store needs psycopg", "postgres")
        pool_module = require("psycopg_pool", "a postgresql:// store needs psycopg_pool", "postgres")
        pool = pool_module.ConnectionPool(
            url,
            min_size=1,
            max_size=8,
            open=False,
            kwargs={"autocommit": True},  # each transaction() is a real transaction: SET LOCAL ends with it
            check=pool_module.ConnectionPool.check_connection,
        )
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # each failed try: StoreUnavailable says it once
        pool.open(wait=False)
        _POOLS[url] = pool
    return _POOLS[url]


def guarded(store, migrate: bool) -> _Guarded:
    """A context manager giving a pooled connection of ``store`` (migrating the schema first if asked)."""
    psycopg = require("psycopg", "a postgresql:// store needs psycopg", "postgres")
    return _Guarded(_pool(store.url), psycopg, store, migrate)


class _Guarded:
    """A pooled connection whose connection errors become :class:`StoreUnavailable` (one line)."""

    def __init__(self, pool, psycopg, store, migrate: bool):
        self.pool, self.psycopg, self.store, self.migrate = pool, psycopg, store, migrate
        self._context = None

    def __enter__(self):
        try:
            self._context = self.pool.connection(timeout=5.0)
            conn = self._context.__enter__()
            if self.migrate:
                pg_schema.migrate(conn)
                self.store._migrated = True
            return conn
        except _pool_timeout():  # an OperationalError too: caught first, for the server's own reason
            self._context = None
            raise StoreUnavailable(_unavailable(self.store, _why(self.psycopg, self.store.url))) from None
        except self.psycopg.OperationalError as exc:
            self._context = None
            raise StoreUnavailable(_unavailable(self.store, exc)) from None

    def __exit__(self, kind, value, traceback):
        if self._context is None:
            return False
        try:
            self._context.__exit__(kind, value, traceback)
        except self.psycopg.OperationalError as exc:
            raise StoreUnavailable(_unavailable(self.store, exc)) from None
        if kind is not None and issubclass(kind, self.psycopg.OperationalError):
            raise StoreUnavailable(_unavailable(self.store, value)) from None
        return False


def _pool_timeout():
    return require("psycopg_pool", "a postgresql:// store needs psycopg_pool", "postgres").PoolTimeout


def _why(psycopg, url: str) -> BaseException:
    """Why the pool got no connection: one direct try gives the server's own reason."""
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        return exc
    return TimeoutError("every pooled connection is busy")


def _unavailable(store, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or ["no answer"])[0]
    return f"the track database {store!r} is unavailable ({first}); try again shortly"
